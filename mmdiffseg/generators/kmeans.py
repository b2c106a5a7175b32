"""The two k-means of the generators.

* :func:`kmeans`: Lloyd's k-means from given initial centres, as sklearn's
  ``KMeans(init=centres, n_init=1)``. DiffSeg's optional refinement (google/diffseg
  ``generate_masks``, ``refine=True``) clusters the 4096 pixel attention maps with sklearn's KMeans
  initialised with the merged proposals; sklearn is not a dependency, so this is the same algorithm
  in torch (CPU or GPU, float32): Euclidean distances as one matrix product per iteration,
  sklearn's relative tolerance and its relocation of empty clusters.
* :func:`kl_kmeans`: iSeg's cluster smoothing (iseg.code ``wsss/featurecluster.py:DFC_KL``):
  symmetric-KL k-means from a grid of seed pixels, in the released float16 or in float32.
"""
from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn.functional as F

from .functional import elementwise_symmetric_kl, symmetric_kl

__all__ = ['kmeans', 'kl_kmeans', 'grid_seeds', 'cluster_mean', 'KMEANS_PRECISIONS']

KMEANS_PRECISIONS = ('float16', 'float32')


def _assign(x: torch.Tensor, sq_norm_x: torch.Tensor, centers: torch.Tensor
            ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Nearest centre of each row of ``x`` and the squared distance to it."""
    sq_dist = sq_norm_x[:, None] - 2 * x @ centers.T + (centers * centers).sum(1)[None]
    dist, labels = sq_dist.min(1)
    return labels, dist.clamp_min(0)


def _cluster_means(x: torch.Tensor, labels: torch.Tensor, dist: torch.Tensor, k: int
                   ) -> torch.Tensor:
    """Mean of each cluster; an empty cluster takes the point farthest from its own centre
    (sklearn's ``_relocate_empty_clusters``), so every centre stays a mean of data points."""
    counts = torch.bincount(labels, minlength=k)
    empty = (counts == 0).nonzero().flatten()
    if len(empty):
        labels = labels.clone()
        labels[dist.topk(len(empty)).indices] = empty
        counts = torch.bincount(labels, minlength=k)
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device).index_add_(0, labels, x)
    return sums / counts[:, None].clamp_min(1)


def kmeans(x: torch.Tensor, init: torch.Tensor, max_iter: int = 300, tol: float = 1e-4
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Lloyd iterations from ``init`` until the labels stop changing, the total squared centre
    shift is at most ``tol * mean feature variance`` (sklearn's rule) or ``max_iter`` is reached.

    Args:
        x: ``(N, D)`` points.
        init: ``(K, D)`` initial centres (``K <= N``).

    Returns:
        ``(centers (K, D), labels (N,))`` float32 / int64, labels consistent with the centres.
    """
    if init.shape[0] > x.shape[0]:
        raise ValueError(f'kmeans: {init.shape[0]} initial centres for only {x.shape[0]} points')
    x, centers = x.float(), init.float()
    k = centers.shape[0]
    sq_norm_x = (x * x).sum(1)
    abs_tol = tol * x.var(0, unbiased=False).mean()
    labels = None
    for _ in range(max_iter):
        new_labels, dist = _assign(x, sq_norm_x, centers)
        if labels is not None and torch.equal(new_labels, labels):
            return centers, labels
        labels = new_labels
        new_centers = _cluster_means(x, labels, dist, k)
        shift = ((new_centers - centers) ** 2).sum()
        centers = new_centers
        if shift <= abs_tol:
            break
    labels, _ = _assign(x, sq_norm_x, centers)
    return centers, labels


def grid_seeds(side: int, num_clusters: int) -> torch.Tensor:
    """Row-major indices of the released k-means seeds: a square grid of step
    ``side // sqrt(num_clusters)`` from 0 (36 seeds for 32 clusters at 64)."""
    step = int(side // math.sqrt(num_clusters))
    if step < 1:
        raise ValueError(f'ISeg: num_clusters={num_clusters} is more than a {side}x{side} grid holds')
    coords = torch.arange(0, side, step)
    return (coords[:, None] * side + coords[None, :]).flatten()


def cluster_mean(values: torch.Tensor, clusters: torch.Tensor, num: int) -> torch.Tensor:
    """Each row of ``values`` ``(B, N, D)`` replaced by the mean over its cluster
    (``clusters`` ``(B, N)`` in ``[0, num)``)."""
    onehot = F.one_hot(clusters, num).to(values.dtype)
    means = onehot.transpose(1, 2) @ values / onehot.sum(1).clamp_min(1)[..., None]
    return means.gather(1, clusters[..., None].expand(-1, -1, values.shape[-1]))


def kl_kmeans(features: torch.Tensor, seeds: torch.Tensor, iters: int, eps: float = 1e-5,
              precision: str = 'float16') -> torch.Tensor:
    """K-means with the symmetric KL distance of ``DFC_KL``: zeros set to 1e-6, ``eps`` added to
    both sides of each distance, ``iters`` assignment steps from the seed pixels' vectors; a
    cluster left empty is dropped for good.

    Args:
        features: ``(B, N, D)`` non-negative.
        seeds: ``(K,)`` pixel indices of the initial centres.
        precision: ``'float16'``: as released, the distance of ``util/attn.py:kl_dis`` (both
            sides cast to float16, ``eps`` added, evaluated term by term in float16:
            :func:`elementwise_symmetric_kl`) and the centres as the release computes them;
            ``'float32'``: matrix products with guarded logs, all images at once.

    Returns:
        ``(B, N)`` cluster ids in ``[0, K)``.
    """
    x = torch.where(features == 0, torch.full_like(features, 1e-6), features)
    k = seeds.numel()
    centres = x[:, seeds]
    alive = torch.ones(x.shape[0], k, 1, dtype=torch.bool, device=x.device)
    for step in range(iters):
        if precision == 'float16':
            clusters = torch.stack([_nearest_live_centre_float16(c, a[:, 0], f, eps)
                                    for c, a, f in zip(centres, alive, x)])
        else:
            dist = symmetric_kl(centres + eps, x + eps).masked_fill(~alive, float('inf'))
            clusters = dist.argmin(dim=1)
        if step + 1 < iters:
            centres, alive = _cluster_centres(x, clusters, k, precision)
    return clusters


def _nearest_live_centre_float16(centres: torch.Tensor, alive: torch.Tensor, x: torch.Tensor,
                                 eps: float) -> torch.Tensor:
    """Index of the nearest live centre of each row of ``x`` ``(N, D)`` under the released
    float16 distance, over the live centres only (in index order, as the release keeps them),
    ties to the first."""
    live = alive.nonzero().flatten()
    dist = elementwise_symmetric_kl(centres[live], x, eps=eps, dtype=torch.float16)
    return live[dist.argmin(dim=0)]


def _cluster_centres(x: torch.Tensor, clusters: torch.Tensor, k: int, precision: str):
    """Each cluster's mean ``(B, K, D)`` and which clusters have pixels ``(B, K, 1)``.

    ``'float16'``: each live cluster's ``mean(0)``, the release's summation: the float16 cast of
    the centres turns last-bit differences of another summation order (a matrix product) into
    different assignments (up to 134 of 4096 pixels on the VOC test fixtures)."""
    onehot = F.one_hot(clusters, k).to(x.dtype)
    counts = onehot.sum(1)[..., None]
    if precision != 'float16':
        return onehot.transpose(1, 2) @ x / counts.clamp_min(1), counts > 0
    centres = x.new_zeros(x.shape[0], k, x.shape[-1])
    for image, assigned, out in zip(x, clusters, centres):
        for c in assigned.unique():
            out[c] = image[assigned == c].mean(0)
    return centres, counts > 0
