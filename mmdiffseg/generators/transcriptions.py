"""Direct transcriptions of the released post-processing, for tests and benchmarks only.

They keep the released operations and data layouts (elementwise KL tensors, Python merge loops,
per-cluster means), so they are slow; mmdiffseg's generators are checked against them and timed
next to them. ``kl_dtype`` selects the precision of the distance that each release evaluates in
float16 (the released setting) or float32 (the numerically clean variant).

* DiffSeg (google/diffseg ``diffseg/segmentor.py``): ``aggregate_weights`` (float64 aggregate,
  queries repeated), ``mask_merge`` (iteration 0 in chunks of anchors, the KL cast to ``kl_dtype``
  without epsilon; later iterations greedy in float64), ``generate_masks`` (bilinear, argmax).
  Generalised from the released 64x64 grid to ``size`` so tests can run it on small grids.
* iSeg (linsun449/iseg.code ``wsss/featurecluster.py:DFC_KL`` with ``util/attn.py:kl_dis``,
  ``wsss/iSeg.py:process_cross_att`` / ``get_att_map``, ``util/cam.py:cam_to_label``).
* SeeDiff (``seediff_app.py:save_cross_attention``, ALGORITHMS.md 2.3) for one class of one
  image: per-layer normalisation in a loop, Otsu by ``cv2.threshold`` on ``uint16(x * 255)``, the
  similarity sums as Python loops over seeds (one cosine row each, copied to the CPU),
  ``cv2.resize(INTER_CUBIC)``, and PAMR as the released module computes it (:class:`ConvPAMR`).
"""
from __future__ import annotations

from typing import Sequence, Tuple

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .functional import elementwise_symmetric_kl
from .seediff import CROSS_NAME

__all__ = ['matched_agreement', 'diffseg_aggregate', 'diffseg_masks', 'iseg_clusters',
           'iseg_postprocess', 'ConvPAMR', 'seediff_mask']


def matched_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of pixels on which two segmentations agree once their segments are matched one to
    one (Hungarian matching on the overlap counts): 1.0 iff they are the same partition."""
    a_ids = torch.unique(a.flatten(), return_inverse=True)[1].cpu().numpy()
    b_ids = torch.unique(b.flatten(), return_inverse=True)[1].cpu().numpy()
    overlap = np.zeros((a_ids.max() + 1, b_ids.max() + 1), dtype=np.int64)
    np.add.at(overlap, (a_ids, b_ids), 1)
    rows, cols = linear_sum_assignment(overlap, maximize=True)
    return float(overlap[rows, cols].sum() / a_ids.size)


# -- DiffSeg -------------------------------------------------------------------------------------
def diffseg_aggregate(weights: Sequence[torch.Tensor], size: int = 64) -> torch.Tensor:
    """``aggregate_weights``: per resolution ``r`` (maps ``(r*r, r*r)``), key axes bilinear to
    ``size``, renormalised, queries repeated, accumulated in float64 with ratio ``r / sum(r)``.
    Returns ``(size, size, size, size)`` (query y, x, key y, x)."""
    sides = [int(w.shape[-1] ** 0.5) for w in weights]
    out = torch.zeros(size, size, size, size, dtype=torch.float64, device=weights[0].device)
    for w, side in zip(weights, sides):
        ratio = size // side
        keys = F.interpolate(w.reshape(-1, 1, side, side).float(), scale_factor=ratio,
                             mode='bilinear', align_corners=False).reshape(side, side, size, size)
        keys = keys / keys.sum((2, 3), keepdim=True)
        keys = keys.repeat_interleave(ratio, 0).repeat_interleave(ratio, 1)
        out += keys * (side / sum(sides))
    return out


def _diffseg_grid(num_points: int, size: int) -> torch.Tensor:
    """``generate_sampling_grid``: ``num_points`` coordinates per side, step ``(size-1)//(n-1)``."""
    step = (size - 1) // (num_points - 1)
    start = (size - 1 - step * (num_points - 1)) // 2
    return start + step * torch.arange(num_points)


def diffseg_masks(attns: torch.Tensor, thresholds: Sequence[float], kl_dtype: torch.dtype,
                  num_points: int = 16, chunk: int = 16,
                  out_size: Tuple[int, int] = (512, 512)) -> torch.Tensor:
    """``generate_masks`` with refinement off: merging iteration 0 over chunks of ``chunk``
    anchors (the distance in ``kl_dtype``, compared with the threshold in that dtype), the greedy
    float64 iterations, bilinear upsampling to ``out_size``, argmax. ``attns`` from
    :func:`diffseg_aggregate`. Returns ``(H, W)`` proposal indices."""
    size = attns.shape[0]
    coords = _diffseg_grid(num_points, size).to(attns.device)
    flat = attns.reshape(size * size, size * size)
    anchors = attns[coords[:, None], coords[None, :]].reshape(-1, size * size)
    threshold = torch.tensor(thresholds[0], dtype=kl_dtype)
    kl_bin = torch.cat([elementwise_symmetric_kl(anchors[i:i + chunk], flat, dtype=kl_dtype)
                        < threshold for i in range(0, len(anchors), chunk)]).double()
    merged = (kl_bin @ flat) / kl_bin.sum(1, keepdim=True)  # 0 / 0 = NaN for an empty row
    for threshold in thresholds[1:]:
        matched, new = set(), []
        for i in range(len(merged)):
            if i in matched:
                continue
            matched.add(i)
            close = elementwise_symmetric_kl(merged[i:i + 1], merged, dtype=torch.float64)[0] \
                < threshold
            if close.sum() > 0:
                matched.update(close.nonzero().flatten().tolist())
                new.append(merged[close].mean(0))
        merged = torch.stack(new)
    up = F.interpolate(merged.reshape(1, -1, size, size).float(), size=out_size,
                       mode='bilinear', align_corners=False)
    return up[0].argmax(0)


# -- iSeg ----------------------------------------------------------------------------------------
def iseg_clusters(cross: torch.Tensor, kl_dtype: torch.dtype = torch.float16,
                  number_cluster: int = 32, stage_num: int = 20) -> Tuple[torch.Tensor, int]:
    """``DFC_KL(32, 20, 64)`` on ``cross`` ``(tokens, size, size)``: grid seeds, ``stage_num``
    assignment steps with ``kl_dis`` (``+1e-5``, in ``kl_dtype``), per-cluster means of the
    surviving clusters. Returns the cluster of each pixel (``0..n-1``) and ``n``."""
    size = cross.shape[-1]
    grid = torch.arange(0, size, size // number_cluster ** 0.5, device=cross.device)[None].long()
    grid = grid.T * size + grid
    x = cross.flatten(-2, -1).T
    x = torch.where(x == 0, 1e-6, x)
    prototype, cluster = x[grid.flatten()], None
    for _ in range(stage_num):
        dis = elementwise_symmetric_kl(prototype, x, eps=1e-5, dtype=kl_dtype)
        cluster = torch.min(dis, dim=0)[1]
        idx = cluster.unique()
        prototype = torch.stack([x[cluster == c].mean(0) for c in idx], dim=0)
    idx = cluster.unique()
    for i in idx:
        cluster[cluster == i] = torch.nonzero(idx == i).squeeze()
    return cluster, len(idx)


def iseg_postprocess(cross16: torch.Tensor, cross32: torch.Tensor, self64: torch.Tensor,
                     token_sel: Sequence[Sequence[int]], ent: float, iters: int,
                     use_cluster: bool = True, kl_dtype: torch.dtype = torch.float16,
                     out_size: int = 512) -> torch.Tensor:
    """``process_cross_att`` + ``get_att_map`` + ``cam_to_label`` (``bkg_thre`` 0) for one
    image. ``cross{r}``: ``(1, 77, r, r)``; ``self64``: ``(1, 4096 queries, 4096 keys)``;
    ``token_sel``: per class, its token indices. Returns ``(out, out)`` indices into
    ``[background, class_1, ...]``."""
    parts = []
    for weight, values in ((0.7, cross16), (0.3, cross32)):
        normed = values / values.sum(dim=(-2, -1), keepdim=True)
        normed = F.interpolate(normed, size=(64, 64), mode='bilinear', align_corners=False)
        parts.append(weight * normed)
    cross = torch.stack(parts, dim=0).sum(0)[0]
    if use_cluster:
        clusters, n = iseg_clusters(cross, kl_dtype)
        one_hot = F.one_hot(clusters, n)
        co_member = one_hot[:, clusters]
        cross = torch.matmul(co_member.type(cross.dtype), cross.flatten(-2, -1).permute(1, 0))
        cross /= co_member.sum(-1, keepdim=True)
    else:
        cross = cross.flatten(-2, -1).permute(1, 0)
    cross = torch.stack([cross[:, sel].mean(1) for sel in token_sel], dim=1)[None].float()

    cross_attn = cross - cross.amin(dim=-2, keepdim=True)
    cross_attn = cross_attn / cross_attn.sum(dim=-2, keepdim=True)
    trans_mat = self64.to(torch.float32, copy=True)  # released: fp16 -> fp32 copy
    trans_mat /= torch.amax(trans_mat, dim=-2, keepdim=True)
    trans_mat += torch.where(trans_mat == 0, 0, ent * (torch.log10(torch.e * trans_mat)))
    trans_mat = torch.clamp(trans_mat, min=0)
    trans_mat_p = trans_mat.clone()
    trans_mat_p /= trans_mat_p.sum(dim=-1, keepdim=True)
    for _ in range(iters):
        cross_attn = torch.bmm(trans_mat_p, cross_attn)
        cross_attn -= cross_attn.amin(dim=-2, keepdim=True)
        cross_attn /= cross_attn.sum(dim=-2, keepdim=True)

    att_map = cross_attn.unflatten(dim=-2, sizes=(64, 64)).permute(0, 3, 1, 2)
    att_map = F.interpolate(att_map, size=512, mode='bilinear', align_corners=False)[0]
    att_map -= att_map.amin(dim=(-2, -1), keepdim=True)
    att_map /= att_map.amax(dim=(-2, -1), keepdim=True)
    cam = F.interpolate(att_map[None], size=out_size, mode='bilinear', align_corners=False)
    b, c, h, w = cam.shape
    flat = cam.reshape(b, c, -1)
    flat -= flat.amin(dim=-1, keepdim=True)
    flat /= flat.amax(dim=-1, keepdim=True) + 1e-6
    cam = flat.reshape(b, c, h, w)
    cam = torch.cat([torch.pow(1 - cam.amax(dim=1, keepdim=True), 2), cam], dim=1)
    return cam.argmax(dim=1)[0]


class ConvPAMR(torch.nn.Module):
    """PAMR as the released module runs it: every step convolves the mask with 8 one-hot shift
    kernels (replicate padding) into a (B, C, 8, H, W) tensor, multiplies by the affinity and
    sums over the neighbours."""

    def __init__(self, num_iter, sigma_factor=0.2):
        super().__init__()
        self.num_iter, self.sigma_factor = num_iter, sigma_factor
        shift = torch.eye(9).reshape(9, 1, 3, 3)  # one-hot 3x3 kernels, row by row
        self.register_buffer('window', shift)      # 9 taps incl. the centre
        self.register_buffer('neighbours', shift[[k for k in range(9) if k != 4]])

    def taps(self, x, kernel):
        b, k, h, w = x.shape
        out = F.conv2d(F.pad(x.reshape(b * k, 1, h, w), [1] * 4, mode='replicate'), kernel)
        return out.reshape(b, k, -1, h, w)

    def forward(self, image, mask):
        sigma = self.taps(image, self.window).std(2, keepdim=True)
        diff = (self.taps(image, self.neighbours) - image.unsqueeze(2)).abs()
        affinity = (-diff / (1e-8 + self.sigma_factor * sigma)).mean(1, keepdim=True).softmax(2)
        for _ in range(self.num_iter):
            mask = (self.taps(mask, self.neighbours) * affinity).sum(2)
        return mask


def _minmax(x):
    return (x - x.min()) / (x.max() - x.min())


def _otsu_mask(x):
    """cv2 Otsu on uint16(x * 255) as released; returns a flat bool numpy array."""
    levels = (x * 255).astype(np.uint16)
    _, binary = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return binary.reshape(-1) > 0


def _loop_similarity(rows, seed_idx):
    """sum over seeds of cos(rows, rows[s]), one seed at a time, accumulated on the CPU."""
    cos = torch.nn.CosineSimilarity(dim=1)
    total = torch.zeros(rows.shape[0])
    for s in seed_idx:
        total = total + cos(rows, rows[s].unsqueeze(0)).cpu()
    return total.numpy()


def seediff_mask(maps, token, image_hw3, pamr, num_heads=8, resolutions=(16, 32, 64)):
    """The released single-class post-processing of sample 0 (numpy / cv2, a torch PAMR):
    ``(H, W)`` bool. ``resolutions``: the seed grid and the two expansion grids (released: 16,
    32, 64; smaller ones keep tests fast, the released loops cost minutes at 64)."""
    seed, *grids = resolutions
    layers = []
    for layer in maps[CROSS_NAME][0]:
        m = layer[:, token] * num_heads  # released sums SD 1.4's 8 heads; ours are means
        layers.append(_minmax(m) * (0.01 if m.var() <= 1e-4 else 1))
    ca = _minmax(torch.stack(layers).sum(0)).cpu().numpy()
    seeds = np.nonzero(_otsu_mask((ca * ca).reshape(seed, seed)))[0]
    current = _minmax(_loop_similarity(maps[f'seediff_self{seed}'][0], seeds)).reshape(seed, seed)
    for r in grids:
        prior = cv2.resize(current, (r, r), interpolation=cv2.INTER_CUBIC)
        background = np.nonzero(~_otsu_mask(prior * prior))[0]
        sim = _loop_similarity(maps[f'seediff_self{r}'][0], background)
        current = _minmax(_minmax(1 - sim).reshape(r, r) * _minmax(prior))
    h, w = image_hw3.shape[:2]
    final = _minmax(cv2.resize(current, (w, h), interpolation=cv2.INTER_CUBIC))
    device = maps[CROSS_NAME].device
    mask = torch.from_numpy(final > 0.3).float()[None, None].to(device)
    image = torch.from_numpy(image_hw3).permute(2, 0, 1)[None].float().to(device)
    refined = pamr(image, mask)[0, 0]
    return (_minmax(refined) > 0.8).cpu()
