"""Lloyd's k-means from given initial centres, as sklearn's ``KMeans(init=centres, n_init=1)``.

DiffSeg's optional refinement (google/diffseg ``generate_masks``, ``refine=True``) clusters the 4096
pixel attention maps with sklearn's KMeans initialised with the merged proposals; sklearn is not a
dependency, so this is the same algorithm in torch (CPU or GPU, float32): Euclidean distances as one
matrix product per iteration, sklearn's relative tolerance and its relocation of empty clusters.
"""
from __future__ import annotations

from typing import Tuple

import torch

__all__ = ['kmeans']


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
