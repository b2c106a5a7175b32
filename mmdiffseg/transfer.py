"""Host-to-device copies that do not make the host wait for the GPU.

A copy from pageable host memory to a CUDA device waits for every kernel already queued, so a small
table copied between two launches stalls the launch queue. Staged in pinned memory and copied with
``non_blocking``, it is queued like a kernel (the caching host allocator keeps the pinned block
until the copy has run).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

__all__ = ['host_to_device']


def host_to_device(values: Union[Sequence, torch.Tensor], device,
                   dtype: torch.dtype = torch.long) -> torch.Tensor:
    """``values`` (nested lists, or a CPU tensor) as a ``dtype`` tensor on ``device``, without a
    host-device sync: on CUDA staged in pinned memory and copied with ``non_blocking``."""
    table = (values.to(dtype) if isinstance(values, torch.Tensor)
             else torch.tensor(values, dtype=dtype))
    if torch.device(device).type == 'cuda':
        table = table.pin_memory()
    return table.to(device, non_blocking=True)
