"""Per-cluster sums in the order PyTorch's CPU ``sum`` adds rows, for every cluster at once.

iSeg's released k-means (iseg.code ``wsss/featurecluster.py:DFC_KL``) takes each cluster's centre
as ``x[cluster == c].mean(0)``, one cluster at a time, and casts the centres to float16; a centre
summed in another order (a matrix product) differs in the last bits, which float16 turns into
different assignments. :func:`cpu_order_cluster_sums` gives every cluster's sum bit for bit as
``x[cluster == c].sum(0)`` does on a CPU, from a handful of batched operations and no host sync,
on any device.

The CPU's float32 ``sum`` over the rows of a ``(n, D)`` matrix (ATen ``SumKernel.cpp``,
``vectorized_outer_sum``) treats the columns in two ways, each column on its own:

* the columns in whole groups of four SIMD vectors (the first 64 of 77 with AVX2's 8 floats or
  AVX-512's 16: :func:`cascade_columns`) by ``multi_row_sum``: rows added in blocks of 16 into a
  first accumulator, starting from zero; after each block the first accumulator is added into a
  second one (and reset), after every 16 blocks the second into a third, after every 16 of those
  the third into a fourth; rows after the last full block go into the first accumulator, and the
  result is ``((a1 + a2) + a3) + a4``. Appending zero rows changes nothing (``x + 0`` is exact and
  a final ``a + b`` equals ``b + a``), so this equals summing the rows padded with zeros to a
  multiple of ``16 ** 3``: each block of 16 in order, each group of 16 block sums in order, each
  run of 16 group sums in order, and the runs in order (:func:`_cascade`);
* the other columns by ``row_sum``: the rows as ``n // 4`` super-rows of 4 consecutive rows, each
  of the 4 lanes summed over the super-rows as above, the last ``n % 4`` rows added in order to
  lane 0, then lanes 1, 2, 3 added to lane 0 (:func:`_interleaved`).

``mean(0)`` is that sum divided by the row count. The block size grows beyond 16 for more than ``2
** 19`` rows, so clusters are limited to ``2 ** 16`` pixels, and rows of fewer than 8 floats (one
vector) are summed another way, so at least 8 columns are required (iSeg's have 77). With AVX-512
and more than two threads, ATen splits the columns of a cluster of more than 425 rows between
threads at other boundaries, which this does not follow.

Two backends give the same bits: ``'torch'`` (here: ~300 batched operators per call) and
``'triton'`` (:mod:`.ordered_sums_triton`: two kernel launches, one program per cluster walking its
rows in that order); ``'auto'`` takes Triton where it runs
(:func:`mmdiffseg.triton_support.triton_problem`: CUDA GPUs of compute capability 8.0+, any device
under Triton's interpreter ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import torch

from ..triton_support import triton_problem

__all__ = ['cpu_order_cluster_sums', 'cascade_columns', 'BACKENDS']

BACKENDS = ('auto', 'torch', 'triton')

_BLOCK = 16
_LEVELS = 3  # blocks, groups, runs; the runs are then added in order
_LANES = 4  # row_sum's interleaved partial sums
MAX_ROWS = 2 ** 16
MIN_COLUMNS = 8


def cascade_columns(d: int) -> int:
    """How many of ``d`` columns ATen sums with ``multi_row_sum`` (whole groups of 4 vectors)."""
    floats = 16 if torch.backends.cpu.get_cpu_capability().startswith('AVX512') else 8
    return d // (4 * floats) * (4 * floats)


def _sum_in_order(units: torch.Tensor) -> torch.Tensor:
    """``(T, G, D)`` -> ``(T, D)``: each ``units[t]`` summed from zero in row order."""
    total = units[:, 0]
    for j in range(1, units.shape[1]):
        total = total + units[:, j]
    return total


def _group(units: torch.Tensor, counts: torch.Tensor, size: int, capacity: int,
           one_per_owner: bool = False):
    """Sums of consecutive ``size`` units of each owner, each from zero in order.

    Args:
        units: ``(T, D)`` laid out owner after owner (``counts[o]`` units each), then padding.
        counts: ``(O,)`` units per owner.
        capacity: rows of the output (at least the number of groups).
        one_per_owner: every owner has at most ``size`` units; output row ``o`` is owner ``o``.

    Returns:
        ``(capacity, D)`` group sums laid out the same way, and the groups per owner.
    """
    ends = counts.cumsum(0)
    unit = torch.arange(units.shape[0], device=units.device)
    owner = torch.searchsorted(ends, unit, right=True).clamp_max(len(counts) - 1)
    index = unit - (ends - counts)[owner]  # the unit's position within its owner
    groups = torch.ones_like(counts) if one_per_owner else (counts + size - 1) // size
    target = (groups.cumsum(0) - groups)[owner] + index // size
    target = torch.where(unit < ends[-1], target, torch.full_like(target, capacity))  # padding
    slots = units.new_zeros(capacity + 1, size, units.shape[1])
    slots[target, index % size] = units
    return _sum_in_order(slots)[:capacity], groups


def _cascade(units: torch.Tensor, counts: torch.Tensor, most: int) -> torch.Tensor:
    """``multi_row_sum`` of each owner's units (:func:`_group` layout, at most ``most`` each):
    ``(O, D)``."""
    owners = len(counts)
    for _ in range(_LEVELS):
        capacity = -(-units.shape[0] // _BLOCK) + owners  # sum of ceil(count / 16) at most
        units, counts = _group(units, counts, _BLOCK, capacity)
    runs = max(1, -(-most // _BLOCK ** _LEVELS))
    return _group(units, counts, runs, owners, one_per_owner=True)[0]


def _interleaved(rows: torch.Tensor, owner: torch.Tensor, index: torch.Tensor,
                 counts: torch.Tensor, most: int) -> torch.Tensor:
    """``row_sum`` of each owner's rows (row ``r`` is row ``index[r]`` of owner ``owner[r]``):
    ``(O, D)``."""
    owners, d = len(counts), rows.shape[1]
    full = counts // _LANES
    in_full = index < _LANES * full[owner]
    capacity = rows.shape[0] // _LANES
    spare = torch.full_like(index, capacity)
    target = torch.where(in_full, (full.cumsum(0) - full)[owner] + index // _LANES, spare)
    super_rows = rows.new_zeros(capacity + 1, _LANES, d)
    super_rows[target, index % _LANES] = rows
    lanes = _cascade(super_rows[:capacity].flatten(1), full, most // _LANES)
    lanes = lanes.view(owners, _LANES, d)
    tail = rows.new_zeros(owners + 1, _LANES - 1, d)  # the last count % 4 rows, zeros after
    tail_owner = torch.where(in_full, torch.full_like(owner, owners), owner)
    tail[tail_owner, (index - _LANES * full[owner]).clamp(0, _LANES - 2)] = rows
    total = lanes[:, 0]
    for t in range(_LANES - 1):
        total = total + tail[:owners, t]
    for lane in range(1, _LANES):
        total = total + lanes[:, lane]
    return total


def _resolve(backend: str, device: torch.device) -> str:
    """``'auto'`` -> ``'triton'`` where a kernel can run (see the module docstring), else
    ``'torch'``; a clear error for ``'triton'`` where it cannot."""
    if backend not in BACKENDS:
        raise ValueError(f'cpu_order_cluster_sums: backend must be one of {BACKENDS}, '
                         f'got {backend!r}')
    problem = triton_problem(device)
    if backend == 'auto':
        return 'triton' if problem is None else 'torch'
    if backend == 'triton' and problem is not None:
        raise ValueError(f"cpu_order_cluster_sums(backend='triton') cannot run here: {problem}; "
                         "use backend='auto' or 'torch'")
    return backend


def cpu_order_cluster_sums(x: torch.Tensor, clusters: torch.Tensor, k: int,
                           backend: str = 'auto') -> torch.Tensor:
    """``(B, K, D)``: for each image and cluster ``c``, ``x[b][clusters[b] == c].sum(0)`` as a CPU
    computes it (zeros for an empty cluster), on any device and without a host sync.

    Args:
        x: ``(B, N, D)`` float32 rows.
        clusters: ``(B, N)`` cluster ids in ``[0, k)``.
        backend: ``'auto'``, ``'torch'`` or ``'triton'`` (the module docstring).
    """
    b, n, d = x.shape
    if x.dtype != torch.float32:
        raise ValueError(f'cpu_order_cluster_sums: float32 rows needed (the order reproduced is '
                         f'that of a float32 sum), got {x.dtype}; cast with .float()')
    if d < MIN_COLUMNS:
        raise ValueError(f'cpu_order_cluster_sums: {d} columns; ATen sums fewer than '
                         f'{MIN_COLUMNS} (one SIMD vector) another way, not reproduced here')
    if n > MAX_ROWS:
        raise ValueError(f'cpu_order_cluster_sums: {n} rows per image; the CPU summation order '
                         f'reproduced here holds up to {MAX_ROWS}')
    owners = (clusters + k * torch.arange(b, device=x.device)[:, None]).flatten()
    order = torch.sort(owners, stable=True).indices  # rows by (image, cluster), in pixel order
    rows, owner = x.reshape(b * n, d)[order], owners[order]
    counts = torch.zeros(b * k, dtype=torch.long, device=x.device)
    counts.scatter_add_(0, owners, torch.ones_like(owners))
    split = cascade_columns(d)
    if _resolve(backend, x.device) == 'triton':
        from .ordered_sums_triton import triton_cluster_sums
        return triton_cluster_sums(rows, counts, split).view(b, k, d)
    parts = []
    if split:
        parts.append(_cascade(rows[:, :split], counts, n))
    if split < d:
        index = torch.arange(b * n, device=x.device) - (counts.cumsum(0) - counts)[owner]
        parts.append(_interleaved(rows[:, split:], owner, index, counts, n))
    return torch.cat(parts, 1).view(b, k, d)
