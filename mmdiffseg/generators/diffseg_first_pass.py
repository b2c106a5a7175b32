"""DiffSeg steps 1-2 for a group of images: the aggregation of the self-attention maps and the
first merging pass from the anchor grid (see :mod:`.diffseg`), run eagerly or replayed from a CUDA
graph (``DiffSeg(postprocess_backend)``).

For one image, or a few, these steps are ~60 launches (the aggregation of 4 resolutions, the
float16 KL of 256 anchors against 4096 pixels, the matched means) whose host cost outlasts the
GPU's work; they are also where almost all of DiffSeg's memory traffic is. Their shapes depend on
the batch only, so they are recorded once per batch layout into a CUDA graph
(:class:`mmdiffseg.cuda_graphs.GraphCache`) and replayed: a group pays a copy of each resolution's
maps into the graph's buffers, one replay and a copy of the proposals out. The later merging
passes depend on the data (how many proposals survive) and run eagerly. The graph keeps a copy of
the group's maps and the peak of the steps' intermediates (the aggregated maps, their float16 and
float32 sides and logs): about 370 MiB an image (the eager steps' peak, 302 MiB, measured on the
CPU); ``'auto'`` records it for batches up to :data:`~mmdiffseg.cuda_graphs.AUTO_MAX_BYTES` of
64x64 maps (4 images).
"""
from __future__ import annotations

import math
from typing import List, Sequence

import torch
import torch.nn.functional as F

from ..cuda_graphs import GraphedSteps
from ..transfer import host_to_device
from .functional import released_kl_near, symmetric_kl

__all__ = ['FirstPass', 'FIRST_PASS_IMAGES', 'aggregate_self_attention', 'anchor_grid',
           'anchor_proposals', 'grid_side', 'images_of']

#: images aggregated and compared with their anchors at once (each holds ~0.3 GiB of float32 and
#: float16 4096x4096 maps meanwhile): a few kernels for the group instead of ~60 an image
FIRST_PASS_IMAGES = 8


def grid_side(n_tokens: int, what: str) -> int:
    """The side of a square token grid (a clear error if ``n_tokens`` is not a square)."""
    side = math.isqrt(n_tokens)
    if side * side != n_tokens:
        raise ValueError(f'DiffSeg: {what} has {n_tokens} tokens, not a square grid')
    return side


def aggregate_self_attention(attentions: Sequence[torch.Tensor], weights: Sequence[float],
                             size: int) -> torch.Tensor:
    """Released ``aggregate_weights``, for one image or a batch (any leading dims, each image's
    values the same bits as alone).

    Args:
        attentions: per resolution ``r``, ``(..., r*r, r*r)`` self-attention (rows = queries).
        weights: one weight per resolution.
        size: side of the output grid (64 for SD at 512); every ``r`` must divide it.

    Returns:
        ``(..., size*size, size*size)`` float32: row ``q`` is a distribution over the key grid.
    """
    n = size * size
    out = None
    for attn, weight in zip(attentions, weights):
        r = grid_side(attn.shape[-1], f'self-attention {tuple(attn.shape)}')
        lead, rep = attn.shape[:-2], size // r
        keys = attn.float().reshape(-1, 1, r, r)
        if r != size:
            keys = F.interpolate(keys, size=(size, size), mode='bilinear', align_corners=False)
        keys = keys.reshape(*lead, r * r, n)
        keys = keys * (weight / keys.sum(-1, keepdim=True).clamp_min(torch.finfo(keys.dtype).tiny))
        if out is None and r == size:  # 0 + x is x: no zero fill and add
            out = keys
            continue
        if out is None:
            out = keys.new_zeros(*lead, n, n)
        # query (y, x) of the fine grid reads coarse query (y // rep, x // rep): nearest repeat
        out.view(*lead, r, rep, r, rep, n).add_(keys.view(*lead, r, 1, r, 1, n))
    return out


def images_of(maps: torch.Tensor, samples: List[int]) -> torch.Tensor:
    """The rows ``samples`` of a batched map: a view if they are consecutive, else a gather
    whose index is copied without a host sync."""
    if samples == list(range(samples[0], samples[0] + len(samples))):
        return maps[samples[0]:samples[0] + len(samples)]
    return maps.index_select(0, host_to_device(samples, maps.device))


def anchor_grid(num_points: int, size: int = 64, device=None) -> torch.Tensor:
    """Flat indices of the released ``generate_sampling_grid``: ``num_points`` per side, step
    ``(size-1) // (num_points-1)``, centred (``{1, 5, ..., 61}`` for 16 points on 64), row-major."""
    step = (size - 1) // (num_points - 1)
    start = (size - 1 - step * (num_points - 1)) // 2
    coords = torch.arange(start, start + step * num_points, step, device=device)
    return (coords[:, None] * size + coords[None, :]).flatten()


def anchor_proposals(attn: torch.Tensor, anchors: torch.Tensor, threshold: float,
                     precision: str = 'float32') -> torch.Tensor:
    """Merging iteration 0: each anchor's proposal is the mean of the pixel maps within
    symmetric KL ``threshold`` of the anchor's map. ``attn``: ``(..., N, D)`` (one image or a
    batch); returns ``(..., A, D)``.

    ``precision='float16'`` (released): distances of :func:`released_kl_near` (the release's
    float16 arithmetic near the threshold), NaN for an anchor or pixel whose map has a float16
    zero, so such an anchor matches nothing (its proposal is all zeros, the release's ``0 / 0``)
    and such a pixel joins no proposal. ``'float32'``: guarded logs, and every anchor matches
    itself.
    """
    picked = attn.index_select(-2, anchors)
    if precision == 'float16':
        # NaN < threshold is false; the threshold is compared in float16, as released
        return _mean_of_matched(released_kl_near(picked, attn, threshold) < threshold, attn)
    matched = (symmetric_kl(picked, attn) < threshold).float()
    # an anchor always matches itself (whatever the rounding); a scatter of a number, not an
    # indexed assignment, whose value is a CPU tensor copied to the GPU: a sync a CUDA graph
    # refuses
    own = anchors.view(-1, 1).expand(*matched.shape[:-1], 1)
    matched.scatter_(-1, own, 1.0)
    return _mean_of_matched(matched, attn)


def _mean_of_matched(matched: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Mean of the rows of ``attn`` each row of ``matched`` ``(..., A, N)`` selects (zeros if
    none)."""
    matched = matched.float()
    return (matched @ attn) / matched.sum(-1, keepdim=True).clamp_min(1)


class FirstPass(GraphedSteps):
    """Steps 1-2 on ``backend`` ``'torch'`` (eager), ``'graph'`` (CUDA graphs, replayed) or
    ``'auto'`` (graphs on CUDA for small batches: :func:`~mmdiffseg.cuda_graphs.use_graphs`)."""

    def __init__(self, backend: str = 'auto'):
        super().__init__(backend, 'DiffSeg')

    def __call__(self, attentions: Sequence[torch.Tensor], weights: Sequence[float], size: int,
                 anchors: torch.Tensor, threshold: float, precision: str,
                 graphed: bool) -> torch.Tensor:
        """:func:`anchor_proposals` of the :func:`aggregate_self_attention` of ``attentions``:
        ``(B, A, size*size)``."""
        weights = tuple(weights)

        def steps(anchor_pixels, *maps):
            return anchor_proposals(aggregate_self_attention(maps, weights, size), anchor_pixels,
                                    threshold, precision)
        return self.run(('first_pass', weights, size, threshold, precision), steps, graphed,
                        anchors, *attentions)
