"""iSeg's cross-attention aggregation (ALGORITHMS.md 3.2, ``wsss/iSeg.py:process_cross_att``) in
the release's float16 or in float32.

The release runs the U-Net and this post-processing in float16: the head-mean maps, each token
map's spatial sum and normalisation, the bilinear resize, the weighted sum, the k-means centres
(``DFC_KL``'s per-cluster ``mean(0)``), the cluster means and the class columns' sub-token means
are float16 tensors, each computed with float32 accumulation and rounded once (what float16
kernels do on CUDA and on a CPU). ``map_precision='float16'`` (the default) runs the same steps in
float16 (the k-means sums as float32 matrix products rounded to float16: a float16 matrix product
may accumulate in float16 on a GPU); ``'float32'`` keeps every step in float32 (the labels then
differ from the release's operations run in float16 on the same maps on up to 0.2% of an image's
pixels of synthetic VOC maps at noise 0.3, 1.5% at 0.4, <= 0.01% at 0.15; with ``'float16'``, on
none but the guarded divisions of :mod:`.iseg`).
"""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F

from ..attention.maps import AttentionMaps

__all__ = ['MAP_PRECISIONS', 'aggregate_cross']

MAP_PRECISIONS = ('float16', 'float32')
#: a divisor floor that changes only zeros: the least positive value of each dtype
_LEAST = {torch.float16: 2.0 ** -24, torch.float32: torch.finfo(torch.float32).tiny}


def aggregate_cross(maps: AttentionMaps, res_weights: Mapping[int, float], b: int, side: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, side*side, T)`` in ``dtype``: per resolution, token maps normalised to sum 1 over
    space, bilinear to ``side``, weighted sum. A token whose map sums to 0 gives zeros (released:
    NaN)."""
    total = None
    for r, weight in sorted(res_weights.items()):
        if weight == 0:
            continue
        name = f'iseg_cross{r}'
        ca = maps[name].to(dtype)
        if ca.dim() != 3 or ca.shape[:2] != (b, r * r):
            raise ValueError(f'ISeg: AttentionMaps[{name!r}] must be ({b}, {r * r}, tokens), '
                             f'got {tuple(ca.shape)}')
        ca = ca / ca.sum(dim=1, keepdim=True).clamp_min(_LEAST[dtype])
        grid = ca.transpose(1, 2).reshape(b, -1, r, r)
        if r != side:
            grid = F.interpolate(grid, size=(side, side), mode='bilinear', align_corners=False)
        if dtype == torch.float16:  # released: each weighted part rounded, then their sum
            total = weight * grid if total is None else total.add_(weight * grid)
        else:
            total = weight * grid if total is None else total.add_(grid, alpha=weight)
    return total.flatten(2).transpose(1, 2)
