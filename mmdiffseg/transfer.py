"""Host-to-device copies that do not make the host wait for the GPU.

A copy from pageable host memory to a CUDA device waits for every kernel already queued, so a small
table copied between two launches stalls the launch queue. Staged in pinned memory and copied with
``non_blocking``, it is queued like a kernel (the caching host allocator keeps the pinned block
until the copy has run).
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch

__all__ = ['host_to_device', 'padded_table']


def host_to_device(values: Union[Sequence, torch.Tensor], device,
                   dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``values`` (nested lists, or a CPU tensor) as a ``dtype`` tensor on ``device``, without a
    host-device sync: on CUDA staged in pinned memory and copied with ``non_blocking``."""
    table = (values.to(dtype) if isinstance(values, torch.Tensor)
             else torch.tensor(values, dtype=dtype))
    if torch.device(device).type == 'cuda':
        table = table.pin_memory()
    return table.to(device, non_blocking=True)


def padded_table(rows: Sequence[Sequence[int]], device, fill: int = 0
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``rows`` (e.g. each sample's class indices) padded with ``fill`` to the longest, as one
    int64 ``(len(rows), width)`` tensor on ``device``, and which entries are real as a bool tensor
    of the same shape, ``None`` when no row is padded; both copied by :func:`host_to_device`."""
    width = max(map(len, rows))
    table = host_to_device([list(row) + [fill] * (width - len(row)) for row in rows], device)
    if all(len(row) == width for row in rows):
        return table, None
    valid = host_to_device([[True] * len(row) + [False] * (width - len(row)) for row in rows],
                           device, torch.bool)
    return table, valid
