"""iSeg's Ent-Self refinement, run eagerly or replayed from CUDA graphs (``ent_self_backend``).

For one image, or a few, Ent-Self is a string of short kernels: column maxima, the entropy step
over a 4096x4096 matrix, then 10 times a matrix product over a few class rows and a row minimum
and sum (:mod:`.iseg_steps`), about 60 launches a batch. On a GPU their host cost outlasts the
work: iSeg without clustering ran at 0.70x the released code at batch 1 on an H200. Here the steps
after the column maxima are recorded once per input layout into a CUDA graph
(:mod:`mmdiffseg.cuda_graphs`) and replayed; a batch then costs 4 launches (the column maxima,
their guard, the division into the graph's input buffer, the class maps' copy), one replay and one
copy out. The replay runs the eager kernels on the same buffers' layouts, so its numbers are the
eager ones.

A graph keeps its input buffer, the batch's ``(B, N, N)`` float32 attention (64 MiB an image at
64x64), and the entropy step's scratch of the same size. ``'auto'`` therefore records graphs only
up to :data:`GRAPH_MAX_BYTES` of attention (4 images at 64x64, 512 MiB kept), where launches
dominate; a larger batch's kernels outlast their launches and run eagerly. The threshold is a
reasoned one, not yet measured: ``benchmarks/bench_iseg.py --device cuda`` times both backends.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from ..cuda_graphs import record_graph
from ..triton_support import on_device_of
from .iseg_steps import column_max_normalize, reduce_entropy_, refine_with_self_attention

__all__ = ['EntSelf', 'BACKENDS', 'GRAPH_MAX_BYTES']

BACKENDS = ('auto', 'torch', 'graph')
#: largest ``(B, N, N)`` float32 attention ``'auto'`` records into a CUDA graph (the buffer the
#: graph keeps)
GRAPH_MAX_BYTES = 256 * 2 ** 20


class EntSelf:
    """Ent-Self steps 3-6 (``iSeg.get_att_map``): ``backend`` ``'torch'`` (eager), ``'graph'``
    (CUDA graphs, replayed) or ``'auto'`` (graphs on CUDA up to :data:`GRAPH_MAX_BYTES`).

    The graphs of the latest attention shape are kept, one per class-map layout; a new shape
    or device drops them. Copies and pickles of this object carry no graphs."""

    def __init__(self, backend: str = 'auto'):
        if backend not in BACKENDS:
            raise ValueError(f'ISeg: ent_self_backend must be one of {BACKENDS}, got {backend!r}')
        self.backend = backend
        self._graphs: Optional[_RecordedSteps] = None

    def backend_for(self, self_attn: torch.Tensor) -> str:
        """The backend that runs on ``self_attn`` (a clear error for ``'graph'`` off CUDA)."""
        cuda = self_attn.device.type == 'cuda'
        if self.backend == 'auto':
            small = self_attn.numel() * 4 <= GRAPH_MAX_BYTES
            return 'graph' if cuda and small else 'torch'
        if self.backend == 'graph' and not cuda:
            raise ValueError(f"ISeg(ent_self_backend='graph') needs CUDA tensors, got "
                             f"{self_attn.device}; use ent_self_backend='auto' or 'torch'")
        return self.backend

    def __call__(self, self_attn: torch.Tensor, class_maps: torch.Tensor, ent: float,
                 iters: int) -> torch.Tensor:
        """``(B, C, N)`` refined class maps from the ``(B, N, N)`` float32 self-attention and the
        ``(B, C, N)`` float32 class maps (see :func:`~.iseg_steps.refine_with_self_attention`)."""
        if self.backend_for(self_attn) == 'torch':
            transition = reduce_entropy_(column_max_normalize(self_attn), ent)
            return refine_with_self_attention(class_maps, transition, iters)
        graphs = self._graphs
        if graphs is None or not graphs.fits(self_attn, ent, iters):
            self._graphs = graphs = _RecordedSteps(self_attn, ent, iters)
        with on_device_of(self_attn):
            return graphs(self_attn, class_maps)

    def __getstate__(self):
        return {'backend': self.backend, '_graphs': None}

    def __repr__(self) -> str:
        return f'EntSelf(backend={self.backend!r})'


class _RecordedSteps:
    """Steps 4-6 on one attention shape, a CUDA graph per class-map layout over a shared input
    buffer (step 3 writes into it eagerly)."""

    def __init__(self, self_attn: torch.Tensor, ent: float, iters: int):
        self.ent, self.iters = ent, iters
        with torch.inference_mode(False):  # written again in or out of inference mode
            self.transition = torch.empty(self_attn.shape, dtype=torch.float32,
                                          device=self_attn.device)
        #: class maps' (shape, strides) -> (graph, its class-map buffer, its output)
        self.graphs: Dict[Tuple, Tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}

    def fits(self, self_attn: torch.Tensor, ent: float, iters: int) -> bool:
        return (self_attn.shape == self.transition.shape and (ent, iters) == (self.ent, self.iters)
                and self_attn.device == self.transition.device)

    def _steps(self, class_maps: torch.Tensor) -> torch.Tensor:
        return refine_with_self_attention(class_maps, reduce_entropy_(self.transition, self.ent),
                                          self.iters)

    def __call__(self, self_attn: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        column_max_normalize(self_attn, out=self.transition)
        key = (tuple(class_maps.shape), class_maps.stride())
        if key not in self.graphs:
            return self._record(key, class_maps)
        graph, classes, out = self.graphs[key]
        classes.copy_(class_maps)
        graph.replay()
        return out.clone()

    def _record(self, key, class_maps: torch.Tensor) -> torch.Tensor:
        """This batch's result, from the warm-up run of the steps the graph then records."""
        with torch.inference_mode(False):
            classes = torch.empty_strided(class_maps.shape, class_maps.stride(),
                                          dtype=torch.float32, device=class_maps.device)
        classes.copy_(class_maps)
        graph, result, out = record_graph(lambda: self._steps(classes),
                                          lambda: self._steps(classes))
        self.graphs[key] = graph, classes, out
        return result
