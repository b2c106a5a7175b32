"""Host/device synchronisations and kernel launches of a call, counted on the CPU as a proxy of what
the same code costs on CUDA.

The call runs on the CPU under two modes: a ``TorchFunctionMode`` sees each Python-level torch call
(and decides whether it works on *host* data or on *device* data), a ``TorchDispatchMode`` sees the
aten operators each device call runs. Counted:

* **launches**: aten operators of device calls that do work (views, allocations and scalar reads
  excluded), about one CUDA kernel each (a few, e.g. sort, unique or cuBLAS, launch more);
* **bytes**: what those operators read and write, at least once each: the distinct elements of
  every tensor argument and result (a broadcast dimension counts once; an in-place result counts
  again, as the write it is), the memory traffic a GPU's elementwise and reduction kernels are
  bound by;
* **syncs**, by reason, the operations after which the host waits for the device on CUDA:
  ``item`` (``.item()``, ``bool(t)``, ``if t``, ``int(t)``: aten ``_local_scalar_dense``), ``D2H``
  (``.cpu()``, ``.to('cpu')``, ``.tolist()``, ``.numpy()``), ``H2D`` (a host tensor or a Python
  list copied to the device without ``non_blocking``: ``.to(device)``, ``torch.tensor(...,
  device=d)``, a list or host tensor as an index or value of a device tensor), and the operators
  whose output size depends on the data (``nonzero``, boolean-mask indexing, ``unique``,
  ``masked_select``, ``repeat_interleave`` without ``output_size``, ``bincount``, ``equal``,
  ``masked_fill`` with a device tensor as value);
* **async_h2d**: ``.to(device, non_blocking=True)`` from the host (no sync if the source is
  pinned);
* **loops**: Python iterations over a device tensor (``unbind``: the loop runs on the host).

Triton kernels run on the CPU only under Triton's interpreter (``TRITON_INTERPRET=1``, set before
Triton is imported); there each kernel launch counts as one launch and the interpreter's own
copies are not counted.

What is a device tensor: every tensor that exists when counting starts (the inputs, and caches
built before), and whatever device calls make; factories with a ``device=`` argument (other than
the string ``'cpu'``) make device tensors too. Host tensors are those made during the call from
Python data or by factories without ``device=``, and whatever host-only calls make from them.
With ``simulate_cuda`` (default), ``tensor.is_cuda`` reads True for device tensors in the code
under test, so branches taken on CUDA are the ones counted. CUDA-only differences the proxy knows:
``one_hot`` with ``num_classes`` does not check its input on CUDA (no sync).

    from op_counts import count_ops
    labels, counts = count_ops(generator, maps, None, names)
    counts.syncs_total, counts.launches, dict(counts.syncs)
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, List, Tuple

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ['OpCounts', 'count_ops']

aten = torch.ops.aten
#: aten operators that read data back to the host on CUDA: reason -> operators (overload packets)
DATA_DEPENDENT = {
    'item': (aten._local_scalar_dense,),
    'nonzero': (aten.nonzero, aten.argwhere),
    'unique': (aten._unique, aten._unique2, aten.unique_dim, aten.unique_consecutive,
               aten.unique_dim_consecutive),
    'masked_select': (aten.masked_select,),
    'equal': (aten.equal,),
}
#: operators that run no kernel: allocations, scalar reads (counted as syncs), wrapping
NO_KERNEL = {aten.empty, aten.empty_like, aten.empty_strided, aten.new_empty,
             aten.new_empty_strided, aten._local_scalar_dense, aten.lift_fresh, aten._unsafe_view,
             aten.resize_, aten.set_}
#: Python-level functions whose CPU implementation checks its input where CUDA does not
CUDA_UNCHECKED = {'one_hot'}
_TO_HOST = {'cpu', 'tolist', 'numpy', '__array__'}
_MOVES = {'to', 'cuda', 'cpu', 'type'}


@dataclass
class OpCounts:
    """What one call would cost on CUDA (see the module docstring)."""

    launches: int = 0
    bytes: int = 0
    syncs: Counter = field(default_factory=Counter)
    async_h2d: int = 0
    loops: int = 0

    @property
    def syncs_total(self) -> int:
        return sum(self.syncs.values())

    def describe(self) -> str:
        reasons = ', '.join(f'{k} {v}' for k, v in sorted(self.syncs.items())) or 'none'
        return (f'{self.syncs_total} syncs ({reasons}), {self.launches} launches '
                f'({self.bytes / 2 ** 20:.0f} MiB), '
                f'{self.async_h2d} async copies, {self.loops} host loops')


def _is_view(func) -> bool:
    return any(r.alias_info is not None and not r.alias_info.is_write
               for r in func._schema.returns)


def _distinct_bytes(t: torch.Tensor) -> int:
    count = 1
    for size, stride in zip(t.shape, t.stride()):
        count *= size if stride else min(size, 1)
    return count * t.element_size()


def _traffic(args, kwargs, out) -> int:
    return sum(_distinct_bytes(t) for t in tree_flatten((args, kwargs, out))[0]
               if isinstance(t, torch.Tensor))


def _bool_indices(indices) -> int:
    return sum(1 for i in indices if isinstance(i, torch.Tensor)
               and i.dtype in (torch.bool, torch.uint8))


class _AtenCounter(TorchDispatchMode):
    def __init__(self, counts: OpCounts):
        super().__init__()
        self.counts = counts
        self.host_call = False
        self.unchecked = False
        self.paused = False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.host_call or self.paused:
            return out
        packet = func.overloadpacket
        if self.unchecked and packet in (aten._local_scalar_dense, aten.aminmax, aten.min,
                                         aten.max):
            return out
        for reason, packets in DATA_DEPENDENT.items():
            if packet in packets:
                self.counts.syncs[reason] += 1
        if packet in (aten.index, aten.index_put, aten.index_put_, aten._index_put_impl_):
            masks = _bool_indices(args[1])
            if masks:
                self.counts.syncs['boolean mask'] += masks
        elif packet is aten.repeat_interleave and func is aten.repeat_interleave.Tensor \
                and kwargs.get('output_size') is None:
            self.counts.syncs['repeat_interleave'] += 1
        elif packet is aten.bincount:
            self.counts.syncs['bincount'] += 2  # CUDA reads the input's min and max
        if packet not in NO_KERNEL and not _is_view(func):
            self.counts.launches += 1
            self.counts.bytes += _traffic(args, kwargs, out)
        return out


class _CallCounter(TorchFunctionMode):
    """Sorts each Python-level call into host or device work and counts the transfers."""

    def __init__(self, counts: OpCounts, aten_counter: _AtenCounter, simulate_cuda: bool):
        super().__init__()
        self.counts = counts
        self.aten = aten_counter
        self.simulate_cuda = simulate_cuda
        self.host = WeakIdKeyDictionary()

    def is_host(self, t: torch.Tensor) -> bool:
        return t in self.host

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.aten.paused:
            return func(*args, **kwargs)
        name = getattr(func, '__name__', '')
        if name == '__get__':
            prop = getattr(func.__self__, '__name__', '')
            if prop == 'is_cuda' and self.simulate_cuda:
                return not self.is_host(args[0])
            return func(*args, **kwargs)
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        on_host = self._classify(name, args, kwargs, tensors)
        self.aten.host_call = on_host
        self.aten.unchecked = name in CUDA_UNCHECKED and (len(args) > 1 or 'num_classes' in kwargs)
        try:
            out = func(*args, **kwargs)
        finally:
            self.aten.host_call = self.aten.unchecked = False
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                if on_host:
                    self.host[t] = True
                else:
                    self.host.pop(t, None)
        return out

    def _classify(self, name, args, kwargs, tensors) -> bool:
        """True if the call works on host data; counts the transfers it makes."""
        device_in = [t for t in tensors if not self.is_host(t)]
        host_in = [t for t in tensors if self.is_host(t) and t.dim() > 0]
        if name in _TO_HOST or (name == 'to' and self._target(args[1:], kwargs) == 'host'):
            if device_in:
                self.counts.syncs['D2H'] += 1
            return True
        if name in _MOVES and self._target(args[1:], kwargs, name == 'cuda') == 'device':
            if not device_in and tensors:
                if kwargs.get('non_blocking'):
                    self.counts.async_h2d += 1
                else:
                    self.counts.syncs['H2D'] += 1
            return False
        if name == 'unbind' and device_in:  # how Python iterates over a tensor
            self.counts.loops += 1
        if not tensors:  # a factory: device only where told
            device = kwargs.get('device')
            if device is None or (isinstance(device, str) and device.startswith('cpu')):
                return True
            if name in ('tensor', 'as_tensor', 'asarray'):
                self.counts.syncs['H2D'] += 1
            return False
        if not device_in:
            return kwargs.get('device') in (None, 'cpu')
        # device work that reads host data: a copy each (CUDA copies CPU indices and values)
        lists = 0
        if name in ('__getitem__', '__setitem__'):
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            lists = sum(1 for i in index if isinstance(i, list))
            if name == '__setitem__' and isinstance(args[2], list):
                lists += 1
        if name == 'new_tensor':
            lists += 1
        if name in ('masked_fill', 'masked_fill_') and isinstance(args[2], torch.Tensor) \
                and not self.is_host(args[2]):
            self.counts.syncs['item'] += 1
        if host_in or lists:
            self.counts.syncs['H2D'] += len(host_in) + lists
        return False

    def _target(self, args, kwargs, default: bool = False) -> str:
        """'host', 'device' or '' (a dtype change only) for the arguments of ``Tensor.to``."""
        for value in list(args) + [kwargs.get('device'), kwargs.get('other')]:
            if isinstance(value, str):
                return 'host' if value.startswith('cpu') else 'device'
            if isinstance(value, (torch.device, int)) and not isinstance(value, bool):
                return 'device'
            if isinstance(value, torch.Tensor):
                return 'host' if self.is_host(value) else 'device'
        return 'device' if default else ''


@contextmanager
def _interpreted_triton_launches(counts: OpCounts, aten_counter: _AtenCounter):
    """Counts each interpreted Triton kernel launch as one launch, and nothing inside it."""
    interpreter = sys.modules.get('triton.runtime.interpreter')
    if interpreter is None or os.environ.get('TRITON_INTERPRET') != '1':
        yield
        return
    launch = interpreter.InterpretedFunction.run

    def counted(self, *args, **kwargs):
        counts.launches += 1
        aten_counter.paused = True
        try:
            return launch(self, *args, **kwargs)
        finally:
            aten_counter.paused = False

    interpreter.InterpretedFunction.run = counted
    try:
        yield
    finally:
        interpreter.InterpretedFunction.run = launch


#: the counts and counter of each ``count_ops`` call in progress, innermost last
_ACTIVE: List[Tuple[OpCounts, _AtenCounter]] = []


@contextmanager
def _uncounted():
    """Work the innermost count leaves out."""
    aten = _ACTIVE[-1][1] if _ACTIVE else None
    paused = aten is not None and aten.paused
    if aten is not None:
        aten.paused = True
    try:
        yield
    finally:
        if aten is not None:
            aten.paused = paused


class ReplayedGraph:
    """A CUDA graph's stand-in on the CPU: a replay re-runs the recorded steps on the same buffers,
    uncounted, into the recorded output (what a CUDA graph does), and is one launch of the count
    in progress. ``pool()`` is a token for the graphs recorded after it."""

    def __init__(self, steps: Callable, out: torch.Tensor):
        self.steps, self.out = steps, out

    def replay(self):
        if _ACTIVE:
            _ACTIVE[-1][0].launches += 1
        # a graph writes its output's memory whatever the mode it was recorded in
        with _uncounted(), torch.inference_mode(self.out.is_inference()):
            self.out.copy_(self.steps())

    def pool(self):
        return 'pool'


def record_stand_in(warm_up, steps, pool=None):
    """``mmdiffseg.cuda_graphs.record_graph`` on the CPU, as on CUDA: the warm-up runs (counted
    as the eager run it is), the capture launches nothing: its output is the recorded steps' own
    tensor, rewritten by each replay of the :class:`ReplayedGraph`."""
    warm = warm_up()
    with _uncounted():
        out = steps().clone()
    return ReplayedGraph(steps, out), warm, out


@contextmanager
def _replayed_cuda_graphs():
    """CUDA graphs recorded through ``mmdiffseg.cuda_graphs`` made of :class:`ReplayedGraph`."""
    module = sys.modules.get('mmdiffseg.cuda_graphs')
    if module is None:
        yield
        return
    record, module.record_graph = module.record_graph, record_stand_in
    try:
        yield
    finally:
        module.record_graph = record


def count_ops(fn: Callable, *args, simulate_cuda: bool = True, **kwargs) -> Tuple[Any, OpCounts]:
    """``fn(*args, **kwargs)`` and what it would cost on CUDA, counted on the CPU. CUDA graphs
    that ``fn`` is made to record through ``mmdiffseg.cuda_graphs`` on the CPU are stand-ins
    (:class:`ReplayedGraph`); a graph recorded under one count and replayed under another counts
    its replays there."""
    counts = OpCounts()
    aten_counter = _AtenCounter(counts)
    _ACTIVE.append((counts, aten_counter))
    try:
        with aten_counter, _CallCounter(counts, aten_counter, simulate_cuda), \
                _interpreted_triton_launches(counts, aten_counter), _replayed_cuda_graphs():
            out = fn(*args, **kwargs)
    finally:
        _ACTIVE.pop()
    return out, counts
