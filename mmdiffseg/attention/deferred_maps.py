"""Deferred head maps: the layers averaged into one large buffer, summed by one kernel launch.

A request averaged over layers (DiffSeg: the five 64x64 self-attention layers into one float32
``(B, 4096, 4096)`` buffer) makes every layer's map kernel read and write the whole buffer: 1 GiB
each way per layer at batch 16, the same memory traffic as the layer's exponentials take in time
(``benchmarks/results/map_kernel.md``: 1.16 ms a 64x64 SD 2 layer, 0.77 ms its SDPA call). On the
Triton backend, a buffer of at least :data:`DEFER_MIN_BYTES` therefore has its layers' captured
query, key and row LSE copied into one staging tensor as each layer runs (about a tenth of the
buffer's bytes per layer); when the U-Net forward ends, one launch of the same kernel
(:func:`mmdiffseg.attention.map_kernel.add_head_maps`) sums every staged head in registers and
adds ``weight x`` that sum to the buffer once (the first time writes it: the buffer is allocated
uninitialised, not zeroed). The maps are the same sums in another order (float32 rounding only);
the U-Net output is untouched.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, FrozenSet, Optional, Sequence, Tuple

import torch

from ..transfer import host_to_device

#: buffers from this size on are deferred: a 64x64 map at batch 4 or more. Below it the three
#: copies a staged layer costs are launches the host must issue, and a small batch is host-bound
#: (batch 1: ~30 ms a forward on an H200), while the buffer traffic saved is ~30 us a layer;
#: a reasoned bound, to be set from ``bench_capture.py``'s new and layerwise rows on a GPU.
DEFER_MIN_BYTES = 256 * 2 ** 20


class LayerStash:
    """The staged layers of one averaged request.

    Args:
        heads: per layer name, in forward order: its head count and the heads this request
            averages (local indices).
        weight: the request's weight of one head (``1 / heads averaged``).
    """

    def __init__(self, heads: Dict[str, Tuple[int, Sequence[int]]], weight: float):
        self.weight = weight
        self.offsets: Dict[str, int] = {}
        self.selected: Dict[str, Tuple[int, ...]] = {}
        total = 0
        for name, (count, local) in heads.items():
            self.offsets[name] = total
            self.selected[name] = tuple(total + h for h in local)
            total += count
        self.total_heads = total
        self.stage: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        self.pending: Dict[str, None] = {}  # layers staged since the last flush, in order
        self._index: Dict[FrozenSet[str], torch.Tensor] = {}

    def accepts(self, query: torch.Tensor, key: torch.Tensor, buffer_bytes: int) -> bool:
        """Whether a layer's ``(B, H, N, d)`` query and key are staged: a buffer of at least
        :data:`DEFER_MIN_BYTES`, and the shape, dtype and device of the first staged layer."""
        if buffer_bytes < DEFER_MIN_BYTES:
            return False
        if self.stage is None:
            return True
        q_stage, k_stage, _ = self.stage
        return (q_stage.dtype == query.dtype and q_stage.device == query.device
                and q_stage.shape[0] == query.shape[0] and q_stage.shape[2:] == query.shape[2:]
                and k_stage.shape[2:] == key.shape[2:])

    def add(self, name: str, query: torch.Tensor, key: torch.Tensor,
            lse: Optional[torch.Tensor]) -> None:
        """Stage layer ``name``'s captured rows (all its heads; LSE computed where SDPA gave none)."""
        from . import map_kernel
        if lse is None:
            lse = map_kernel.row_lse(query, key, 1.0 / math.sqrt(query.shape[-1]))
        if self.stage is None:
            batch, _, n_query, head_dim = query.shape
            shape = (batch, self.total_heads)
            self.stage = (query.new_empty(shape + (n_query, head_dim)),
                          key.new_empty(shape + tuple(key.shape[2:])),
                          torch.empty(shape + (n_query,), dtype=torch.float32, device=query.device))
        start = self.offsets[name]
        for staged, value in zip(self.stage, (query, key, lse)):
            staged[:, start:start + value.shape[1]].copy_(value)
        self.pending[name] = None

    def flush(self, buffer: torch.Tensor, scratch: Callable[..., torch.Tensor],
              overwrite: bool = False) -> None:
        """Add ``weight x`` the sum of the staged layers' selected heads to ``buffer`` (or write
        it there: ``overwrite``, the buffer's first write, which then need not be zeroed)."""
        from . import map_kernel
        layers = frozenset(self.pending)
        if layers not in self._index:
            heads = [h for name in self.pending for h in self.selected[name]]
            self._index[layers] = host_to_device(heads, buffer.device)
        query, key, lse = self.stage
        map_kernel.add_head_maps(query, key, lse, 1.0 / math.sqrt(query.shape[-1]),
                                 [(self._index[layers], [(buffer, self.weight)])], scratch,
                                 overwrite=overwrite)
        self.pending.clear()

    def release(self) -> None:
        self.stage, self.pending = None, {}
