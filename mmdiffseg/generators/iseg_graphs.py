"""iSeg's fixed-shape steps, run eagerly or replayed from CUDA graphs (``postprocess_backend``).

For one image, or a few, iSeg's post-processing is a string of short kernels: the k-means
smoothing of the cross-attention (``DFC_KL``: 20 steps of ~40 launches over ``(B, 4096, 77)``
maps) and Ent-Self (column maxima, the entropy step over a 4096x4096 matrix, then 10 times a
matrix product over a few class rows and a row minimum and sum: ~60 launches; :mod:`.iseg_steps`).
On a GPU their host cost outlasts the work: without clustering, iSeg ran at 0.70x the released
code at batch 1 on an H200. Here both are recorded once per input layout into CUDA graphs
(:class:`mmdiffseg.cuda_graphs.GraphCache`) and replayed: a batch pays a few copies into the
graphs' buffers (Ent-Self's column maxima are divided straight into its buffer), two replays and
two copies out. The replays run the eager kernels on buffers of the same layouts, so the numbers
are the eager ones.

Ent-Self's graph keeps its input buffer, the batch's ``(B, N, N)`` float32 self-attention (64 MiB an
image at 64x64), and the entropy step's scratch of the same size (the k-means graph keeps tens of
MiB). ``'auto'`` therefore records graphs only for batches whose self-attention is at most
:data:`~mmdiffseg.cuda_graphs.AUTO_MAX_BYTES` (4 images at 64x64, 512 MiB kept), where launches
dominate; a larger batch's kernels outlast their launches and run eagerly. The threshold is
reasoned, not yet measured: ``benchmarks/bench_iseg.py --device cuda`` times both backends.
"""
from __future__ import annotations

import torch

from ..cuda_graphs import GraphedSteps
from .iseg_steps import column_max_normalize, reduce_entropy_, refine_with_self_attention
from .kmeans import cluster_mean, kl_kmeans

__all__ = ['ISegSteps']


class ISegSteps(GraphedSteps):
    """k-means smoothing and Ent-Self (``iSeg.get_att_map``) on ``backend`` ``'torch'`` (eager),
    ``'graph'`` (CUDA graphs, replayed) or ``'auto'`` (graphs on CUDA for small batches:
    :func:`~mmdiffseg.cuda_graphs.use_graphs`)."""

    def __init__(self, backend: str = 'auto'):
        super().__init__(backend, 'ISeg')

    def smooth(self, cross: torch.Tensor, seeds: torch.Tensor, iters: int, precision: str,
               graphed: bool, half: bool = False) -> torch.Tensor:
        """``DFC_KL``: each pixel's ``(B, N, T)`` cross-attention replaced by its k-means
        cluster's mean (:func:`~.kmeans.kl_kmeans` from the ``seeds`` pixels; ``half``: centres
        and means rounded to float16 as released)."""
        def steps(maps, seed_pixels):
            clusters = kl_kmeans(maps, seed_pixels, iters, precision=precision, half_centres=half)
            return cluster_mean(maps, clusters, seed_pixels.numel(), half)
        return self.run(('smooth', iters, precision, half), steps, graphed, cross, seeds)

    def ent_self(self, self_attn: torch.Tensor, class_maps: torch.Tensor, ent: float,
                 iters: int, graphed: bool) -> torch.Tensor:
        """Ent-Self steps 3-6: ``(B, C, N)`` refined class maps from the ``(B, N, N)`` float32
        self-attention and the ``(B, C, N)`` float32 class maps
        (:func:`~.iseg_steps.refine_with_self_attention`)."""
        def steps(transition, maps):
            return refine_with_self_attention(maps, reduce_entropy_(transition, ent), iters)
        return self.run(('ent_self', ent, iters), steps, graphed, self_attn, class_maps,
                        writers={0: column_max_normalize})
