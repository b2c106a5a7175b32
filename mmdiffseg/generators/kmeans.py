"""The two k-means of the generators, their iterations kept on the device.

* :func:`kmeans` / :func:`kmeans_batch`: Lloyd's k-means from given initial centres, as sklearn's
  ``KMeans(init=centres, n_init=1)``. DiffSeg's optional refinement (google/diffseg
  ``generate_masks``, ``refine=True``) clusters the 4096 pixel attention maps with sklearn's KMeans
  initialised with the merged proposals; sklearn is not a dependency, so this is the same algorithm
  in torch (CPU or GPU, float32): Euclidean distances as one matrix product per iteration,
  sklearn's relative tolerance and its relocation of empty clusters. The stopping tests stay on the
  device (a finished image keeps its centres); the host looks every ``check_every`` iterations.
* :func:`kl_kmeans`: iSeg's cluster smoothing (iseg.code ``wsss/featurecluster.py:DFC_KL``):
  symmetric-KL k-means from a grid of seed pixels, in the released float16 or in float32, every
  image and cluster at once.
"""
from __future__ import annotations

import math
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F

from .functional import elementwise_kl_terms, kl_side, symmetric_kl
from .ordered_sums import cpu_order_cluster_sums

__all__ = ['kmeans', 'kmeans_batch', 'kl_kmeans', 'grid_seeds', 'cluster_mean',
           'KMEANS_PRECISIONS']

KMEANS_PRECISIONS = ('float16', 'float32')
#: pixels per block of the float16 distance on a CPU: (centres, block, tokens) terms stay in cache
_CPU_PIXEL_BLOCK = 512


def _assign(x: torch.Tensor, sq_norm_x: torch.Tensor, centers: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of each row of ``x`` and the squared distance to it."""
    sq_dist = sq_norm_x[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None]
    dist, labels = sq_dist.min(1)
    return labels, dist.clamp_min(0)


def _cluster_means(x: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, k: int
                   ) -> torch.Tensor:
    """Mean of each cluster; an empty cluster takes the point farthest from its own centre
    (sklearn's ``_relocate_empty_clusters``: the i-th empty cluster the i-th farthest point), so
    every centre stays a mean of data points. Without a host sync: every cluster is given its
    candidate point, and only the empty ones write it."""
    ones = torch.ones_like(labels)
    empty = labels.new_zeros(k).scatter_add_(0, labels, ones) == 0
    farthest = dist.topk(k).indices
    rank = (empty.cumsum(0) - 1).clamp_min(0)
    target = torch.where(empty, farthest[rank], torch.full_like(rank, len(labels)))  # N: no-op
    clusters = torch.arange(k, device=labels.device)
    labels = torch.cat([labels, labels.new_zeros(1)]).scatter_(0, target, clusters)[:-1]
    counts = labels.new_zeros(k).scatter_add_(0, labels, ones)
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    return sums / counts[:, None].clamp_min(1)


def kmeans(x: torch.Tensor, init: torch.Tensor, max_iter: int = 300, tol: float = 1e-4
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`kmeans_batch` of one set of points."""
    (centers,), (labels,) = kmeans_batch([x], [init], max_iter, tol)
    return centers, labels


def kmeans_batch(points: Sequence[torch.Tensor], inits: Sequence[torch.Tensor],
                 max_iter: int = 300, tol: float = 1e-4, check_every: int = 8
                 ) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """Lloyd iterations from ``init`` until the labels stop changing, the total squared centre
    shift is at most ``tol * mean feature variance`` (sklearn's rule) or ``max_iter`` is reached,
    for several point sets at once.

    The tests are evaluated on the device: a set that meets one keeps its centres from then on,
    so running on until the host looks (every ``check_every`` iterations) changes nothing.

    Args:
        points: per set, ``(N, D)`` points.
        inits: per set, ``(K, D)`` initial centres (``K <= N``).

    Returns:
        Per set, ``centers (K, D)`` float32 and ``labels (N,)`` int64, consistent.
    """
    for x, init in zip(points, inits):
        if init.shape[0] > x.shape[0]:
            raise ValueError(f'kmeans: {init.shape[0]} initial centres for only {x.shape[0]} '
                             'points')
    xs = [x.float() for x in points]
    centers = [init.float() for init in inits]
    sq_norms = [(x * x).sum(1) for x in xs]
    abs_tols = [tol * x.var(0, unbiased=False).mean() for x in xs]
    done = [torch.zeros((), dtype=torch.bool, device=x.device) for x in xs]
    shifted_little = [d.clone() for d in done]
    previous = [None] * len(xs)
    for step in range(max_iter):
        for i, (x, sq, c) in enumerate(zip(xs, sq_norms, centers)):
            labels, dist = _assign(x, sq, c)
            stop = shifted_little[i] if previous[i] is None else \
                shifted_little[i] | (labels == previous[i]).all()
            done[i] = done[i] | stop
            new = _cluster_means(x, labels, dist, len(c))
            shifted_little[i] = ((new - c) ** 2).sum() <= abs_tols[i]
            centers[i] = torch.where(done[i], c, new)
            previous[i] = labels
        if (step + 1) % check_every == 0 and bool(torch.stack(done).all()):
            break
    labels = [_assign(x, sq, c)[0] for x, sq, c in zip(xs, sq_norms, centers)]
    return centers, labels


def grid_seeds(side: int, num_clusters: int, device=None) -> torch.Tensor:
    """Row-major indices of the released k-means seeds: a square grid of step
    ``side // sqrt(num_clusters)`` from 0 (36 seeds for 32 clusters at 64)."""
    step = int(side // math.sqrt(num_clusters))
    if step < 1:
        raise ValueError(f'ISeg: num_clusters={num_clusters} is more than the {side}x{side} '
                         f'self-attention grid of these images holds: set num_clusters to at most '
                         f'{side * side} (released: 32)')
    coords = torch.arange(0, side, step, device=device)
    return (coords[:, None] * side + coords[None, :]).flatten()


def cluster_mean(values: torch.Tensor, clusters: torch.Tensor, num: int,
                 half: bool = False) -> torch.Tensor:
    """Each row of ``values`` ``(B, N, D)`` replaced by the mean over its cluster
    (``clusters`` ``(B, N)`` in ``[0, num)``): the last step of iSeg's cluster smoothing, where
    ``DFC_KL`` gives each pixel's token vector its cluster's mean. ``half``: as the release's
    float16 tensors, the cluster's sum and then the mean each rounded to float16 (a float16
    result)."""
    onehot = F.one_hot(clusters, num)
    counts = onehot.sum(1).clamp_min(1)[..., None]
    if half:  # float32 sums rounded, divided by the integer counts in float16
        means = (onehot.transpose(1, 2).float() @ values.float()).to(torch.float16) / counts
    else:
        onehot = onehot.to(values.dtype)
        means = onehot.transpose(1, 2) @ values / counts
    return means.gather(1, clusters[..., None].expand(-1, -1, values.shape[-1]))


def kl_kmeans(features: torch.Tensor, seeds: torch.Tensor, iters: int, eps: float = 1e-5,
              precision: str = 'float16', half_centres: bool = False) -> torch.Tensor:
    """K-means with the symmetric KL distance of ``DFC_KL``: zeros set to 1e-6, ``eps`` added to
    both sides of each distance, ``iters`` assignment steps from the seed pixels' vectors; a
    cluster left empty is dropped for good (its distance is infinite from then on).

    Args:
        features: ``(B, N, D)`` non-negative.
        seeds: ``(K,)`` pixel indices of the initial centres.
        precision: ``'float16'``: as released, the distance of ``util/attn.py:kl_dis`` (both
            sides cast to float16, ``eps`` added, evaluated term by term in float16:
            :func:`~.functional.elementwise_kl_terms`) and the centres as the released
            per-cluster means sum float32 maps on a CPU (the clusters of
            :func:`~.transcriptions.iseg_clusters`, bit for bit; the release itself clusters
            float16 maps); ``'float32'``: matrix products with guarded logs.
        half_centres: the release's float16 run: each centre a mean taken in float32, rounded
            to float16 (with float16 ``features``, whose zeros become float16's 1e-6, the
            release's centres).

    Returns:
        ``(B, N)`` cluster ids in ``[0, K)``.
    """
    x = torch.where(features == 0, torch.full_like(features, 1e-6), features)
    k = seeds.numel()
    centres = x[:, seeds.to(x.device)]
    alive = torch.ones(x.shape[0], k, 1, dtype=torch.bool, device=x.device)
    if precision == 'float16':  # the pixels' side of every distance, cast once
        pixels = x.to(torch.float16) + eps
        pixels = (pixels, pixels.log())
        block = x.shape[1] if x.is_cuda else _CPU_PIXEL_BLOCK
    else:
        pixels = kl_side(x.float() + eps)
    for step in range(iters):
        if precision == 'float16':
            ours = centres.to(torch.float16) + eps
            dist = elementwise_kl_terms(ours, ours.log(), *pixels, rows=k, cols=block)
        else:
            dist = symmetric_kl(centres.float() + eps, pixels)
        # the release compares the live clusters only, in index order: ties go to the first
        clusters = dist.masked_fill(~alive, float('inf')).argmin(dim=1)
        if step + 1 < iters:
            centres, alive = _cluster_centres(x, clusters, k, precision, half_centres)
    return clusters


def _cluster_centres(x: torch.Tensor, clusters: torch.Tensor, k: int, precision: str,
                     half_centres: bool = False):
    """Each cluster's mean ``(B, K, D)`` (zeros for an empty one) and which clusters have pixels
    ``(B, K, 1)``. ``half_centres``: a matrix product's means rounded to float16 (the rounding
    hides the summation order but for means within a float32 ulp of a float16 rounding tie).

    ``'float16'``: each cluster's ``mean(0)`` summed as the release sums it on a CPU: the float16
    cast of the centres turns last-bit differences of another summation order (a matrix product)
    into different assignments (up to 134 of 4096 pixels on the VOC test fixtures). On a CPU the
    release's own per-cluster sums; on other devices :func:`~.ordered_sums.cpu_order_cluster_sums`
    (the same bits without a host sync per cluster; the release run on a GPU sums in CUDA's
    order, which differs between GPU models too). This matches the released formulation on our
    float32 maps; the release's own run takes float16 means of float16 maps, whose clusters
    differ from these on 4-6% of the pixels of synthetic VOC maps, the matrix-product order's
    about as much."""
    onehot = F.one_hot(clusters, k)
    if half_centres:
        counts = onehot.sum(1)[..., None]
        means = onehot.transpose(1, 2).float() @ x.float() / counts.clamp_min(1)
        return means.to(torch.float16).to(x.dtype), counts > 0
    onehot = onehot.to(x.dtype)
    counts = onehot.sum(1)[..., None]
    if precision != 'float16':
        sums = onehot.transpose(1, 2) @ x
    elif x.is_cuda:
        sums = cpu_order_cluster_sums(x, clusters, k)
    else:
        sums = x.new_zeros(x.shape[0], k, x.shape[-1])
        for image, assigned, out in zip(x, clusters, sums):
            for c in assigned.unique():
                out[c] = image[assigned == c].sum(0)
    return sums / counts.clamp_min(1), counts > 0
