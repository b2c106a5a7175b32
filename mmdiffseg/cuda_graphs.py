"""Recording a string of short kernels into a CUDA graph (``torch.cuda.graph``), the one recipe
behind the ``'graph'`` backends (PAMR's steps, iSeg's Ent-Self): where a step is many launches
over small tensors, the host's launch cost outlasts the GPU's work; a replay is one launch.
"""
from __future__ import annotations

from typing import Callable, Tuple, TypeVar

import torch

__all__ = ['record_graph']

T = TypeVar('T')
W = TypeVar('W')


def record_graph(warm_up: Callable[[], W], steps: Callable[[], T]
                 ) -> Tuple[torch.cuda.CUDAGraph, W, T]:
    """``(graph, warm-up result, recorded outputs)``: ``warm_up()`` runs eagerly on a side stream
    (``torch.cuda.graph`` asks for one: lazy initialisations happen outside the capture), then
    ``steps()`` is recorded, which does not run it: the tensors it reads and writes are the graph's
    buffers, refilled before each ``graph.replay()``; the outputs it returns are overwritten by each
    replay. On the current CUDA device.

    The capture is ``'thread_local'``: the offline tools' loader and writer threads may use CUDA
    meanwhile."""
    current = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        warm = warm_up()
    current.wait_stream(stream)
    if isinstance(warm, torch.Tensor):  # made on the side stream, read on the current one
        warm.record_stream(current)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, capture_error_mode='thread_local'):
        out = steps()
    return graph, warm, out
