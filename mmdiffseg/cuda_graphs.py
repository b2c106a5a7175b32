"""Strings of short kernels replayed from CUDA graphs (``torch.cuda.graph``): the one recipe
behind the ``'graph'`` backends (PAMR's steps, DiffSeg's first pass, iSeg's k-means smoothing and
Ent-Self). Where a step
is many launches over small tensors, the host's launch cost outlasts the GPU's work; a replay is
one launch and runs the same kernels, so the same numbers.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Callable, Dict, Optional, Sequence, Tuple, TypeVar

import torch

from .triton_support import on_device_of

__all__ = ['record_graph', 'GraphCache', 'GraphedSteps', 'BACKENDS', 'AUTO_MAX_BYTES',
           'check_backend', 'use_graphs']

#: a generator's ``postprocess_backend``: eager, replayed from CUDA graphs, or the rule below
BACKENDS = ('auto', 'torch', 'graph')
#: ``'auto'`` replays CUDA graphs for batches whose largest map is at most this (4 images of
#: 4096x4096 float32 self-attention): there launches outlast the GPU's work; a larger batch's
#: kernels outlast their launches, and its graphs would keep more memory (a copy of that map)
AUTO_MAX_BYTES = 256 * 2 ** 20

T = TypeVar('T')
W = TypeVar('W')


def record_graph(warm_up: Callable[[], W], steps: Callable[[], T], pool=None
                 ) -> Tuple[torch.cuda.CUDAGraph, W, T]:
    """``(graph, warm-up result, recorded outputs)``: ``warm_up()`` runs eagerly on a side stream
    (``torch.cuda.graph`` asks for one: lazy initialisations happen outside the capture), then
    ``steps()`` is recorded, which does not run it: the tensors it reads and writes are the graph's
    buffers, refilled before each ``graph.replay()``; the outputs it returns are overwritten by each
    replay. On the current CUDA device; ``pool``: another graph's ``pool()``, to share its memory.

    The capture is ``'thread_local'``: the offline tools' loader and writer threads may use CUDA
    meanwhile. It runs on the warm-up's side stream, made on the current device (torch's default
    capture stream is one per process, on the device that recorded first). A capture that fails
    leaves the caller on its own stream (``torch.cuda.graph`` does not when ending the capture
    fails)."""
    current = torch.cuda.current_stream()
    stream = torch.cuda.Stream()
    stream.wait_stream(current)
    with torch.cuda.stream(stream):
        warm = warm_up()
    current.wait_stream(stream)
    if isinstance(warm, torch.Tensor):  # made on the side stream, read on the current one
        warm.record_stream(current)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode='thread_local'):
            out = steps()
    finally:
        torch.cuda.set_stream(current)
    return graph, warm, out


def check_backend(backend: str, owner: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else a clear error naming ``owner``."""
    if backend not in BACKENDS:
        raise ValueError(f'{owner}: postprocess_backend must be one of {BACKENDS}, got '
                         f'{backend!r}')
    return backend


def check_device(backend: str, device: torch.device, owner: str) -> None:
    """A clear error naming ``owner`` for ``'graph'`` off CUDA."""
    if backend == 'graph' and torch.device(device).type != 'cuda':
        raise ValueError(f"{owner}(postprocess_backend='graph') needs CUDA tensors, got "
                         f"{device}; use postprocess_backend='auto' or 'torch'")


def use_graphs(backend: str, largest: torch.Tensor, owner: str) -> bool:
    """Whether a batch whose largest map is ``largest`` replays CUDA graphs on ``backend``
    (``'graph'`` off CUDA: :func:`check_device`'s error)."""
    check_device(backend, largest.device, owner)
    cuda = largest.device.type == 'cuda'
    small = largest.numel() * largest.element_size() <= AUTO_MAX_BYTES
    return backend == 'graph' or (backend == 'auto' and cuda and small)


def _layout(t: torch.Tensor) -> Tuple:
    return tuple(t.shape), t.stride(), t.dtype


class GraphCache:
    """``fn(*inputs) -> Tensor`` replayed from CUDA graphs, one recorded per layout of the inputs.

    A call fills the graph's input buffers (a copy, or ``writers[i](input, out=buffer)`` where
    input ``i`` is first transformed, e.g. normalised straight into the buffer), replays, and
    returns a clone of the output. ``fn`` may overwrite its inputs (they are the buffers). Graphs
    share the buffers of equal position and layout (a new class count reuses the buffer of a
    64 MiB-an-image attention) and one memory pool for their intermediates: replays never overlap.
    Past ``max_graphs`` layouts the least recently used graph is dropped (and the buffers no
    other graph uses); on another device, all are. A first call records (its result comes from
    the warm-up run). If recording fails (an operator a capture refuses),
    the cache warns once and runs ``fn`` eagerly from then on.

    Args:
        fn: tensors in, one tensor out, no host synchronisation.
        name: what runs, for the warning.
        writers: per input position, ``writer(input, out=None)`` applied before ``fn``.
    """

    def __init__(self, fn: Callable[..., torch.Tensor], name: str,
                 writers: Optional[Dict[int, Callable]] = None, max_graphs: int = 32):
        self.fn, self.name = fn, name
        self.writers = dict(writers or {})
        self.max_graphs = max_graphs
        self.failed = False
        self._drop(None)

    def _drop(self, device) -> None:
        self.device = device
        #: input layouts -> (graph, buffers, output), least recently used first
        self.graphs: 'OrderedDict[Tuple, Tuple]' = OrderedDict()
        self.buffers: Dict[Tuple, torch.Tensor] = {}  # (position, layout) -> shared buffer
        self.pool = None

    def eager(self, *inputs: torch.Tensor) -> torch.Tensor:
        """``fn`` on the written inputs, without graphs."""
        return self.fn(*(self.writers[i](t) if i in self.writers else t
                         for i, t in enumerate(inputs)))

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.failed:
            return self.eager(*inputs)
        device = inputs[0].device
        key = tuple(_layout(t) for t in inputs)
        if device != self.device:
            self._drop(device)
        with on_device_of(inputs[0]):
            if key in self.graphs:
                self.graphs.move_to_end(key)
                graph, buffers, out = self.graphs[key]
                self._fill(buffers, inputs)
                graph.replay()
                return out.clone()
            buffers = [self._buffer(i, t) for i, t in enumerate(inputs)]
            self._fill(buffers, inputs)
            try:
                graph, result, out = record_graph(lambda: self.fn(*buffers),
                                                  lambda: self.fn(*buffers), self.pool)
            except RuntimeError as err:
                warnings.warn(f'{self.name}: recording into a CUDA graph failed ({err}); it runs '
                              f'eagerly from now on')
                self.failed = True
                self._drop(None)
                return self.eager(*inputs)
        self.pool = graph.pool()
        self.graphs[key] = graph, buffers, out
        if len(self.graphs) > self.max_graphs:
            self._evict_oldest()
        return result

    def _evict_oldest(self) -> None:
        self.graphs.popitem(last=False)
        used = {id(b) for _, buffers, _ in self.graphs.values() for b in buffers}
        self.buffers = {k: b for k, b in self.buffers.items() if id(b) in used}

    def _buffer(self, position: int, t: torch.Tensor) -> torch.Tensor:
        key = (position, _layout(t))
        if key not in self.buffers:
            with torch.inference_mode(False):  # written again in or out of inference mode
                self.buffers[key] = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                                        device=t.device)
        return self.buffers[key]

    def _fill(self, buffers: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor]) -> None:
        for i, (buffer, t) in enumerate(zip(buffers, inputs)):
            if i in self.writers:
                self.writers[i](t, out=buffer)
            else:
                buffer.copy_(t)

    def __getstate__(self):
        state = dict(self.__dict__)
        state.update(device=None, graphs=OrderedDict(), buffers={}, pool=None)
        return state


class GraphedSteps:
    """A generator's fixed-shape post-processing steps on its ``postprocess_backend``
    (:data:`BACKENDS`), one :class:`GraphCache` per steps and settings. Copies and pickles carry
    no graphs."""

    def __init__(self, backend: str, owner: str):
        self.backend = check_backend(backend, owner)
        self.owner = owner
        self._caches: Dict[Tuple, GraphCache] = {}

    def check_device(self, device: torch.device) -> None:
        """Refuse ``'graph'`` off CUDA (before any work on ``device``)."""
        check_device(self.backend, device, self.owner)

    def graphed(self, largest: torch.Tensor) -> bool:
        """Whether a batch whose largest map is ``largest`` replays CUDA graphs."""
        return use_graphs(self.backend, largest, self.owner)

    def run(self, settings: Tuple, steps: Callable[..., torch.Tensor], graphed: bool,
            *inputs: torch.Tensor, writers: Optional[Dict[int, Callable]] = None
            ) -> torch.Tensor:
        """``steps(*inputs)`` (``settings``: what ``steps`` bakes in, its name first), from a
        CUDA graph if ``graphed``."""
        cache = self._caches.get(settings)
        if cache is None:
            self._caches[settings] = cache = GraphCache(steps, f'{self.owner} {settings[0]}',
                                                        writers)
        return cache(*inputs) if graphed else cache.eager(*inputs)

    def buffer_bytes(self) -> int:
        """Bytes of the input buffers the recorded graphs keep (their memory pools aside)."""
        return sum(b.numel() * b.element_size() for cache in self._caches.values()
                   for b in cache.buffers.values())

    def __getstate__(self):
        return {**self.__dict__, '_caches': {}}

    def __repr__(self) -> str:
        return f'{type(self).__name__}(backend={self.backend!r})'
