"""Per-cluster sums in the order PyTorch's CPU ``sum`` adds rows, for every cluster at once.

iSeg's released k-means (iseg.code ``wsss/featurecluster.py:DFC_KL``) takes each cluster's centre
as ``x[cluster == c].mean(0)``, one cluster at a time, and casts the centres to float16; a centre
summed in another order (a matrix product) differs in the last bits, which float16 turns into
different assignments. :func:`cpu_order_cluster_sums` gives every cluster's sum bit for bit as
``x[cluster == c].sum(0)`` does on a CPU, from a handful of batched operations and no host sync,
on any device.

The CPU's float32 ``sum`` over the rows of a ``(n, D)`` matrix (ATen ``SumKernel.cpp``,
``vectorized_outer_sum``) treats the columns in two ways, each column on its own:

* the columns in whole groups of four SIMD vectors of 8 floats (the first 64 of 77): ATen runs its
  ``sum`` kernel with AVX2 vectors on AVX-512 CPUs too (measured: 32-column groups on an AVX-512
  CPU); fewer than 8 columns take the scalar loop, whose groups are 4 columns. These go through
  ``multi_row_sum``: rows added in blocks of 16 into a first accumulator, starting from zero; after
  each block the first accumulator is added into a second one (and reset), after every 16 blocks
  the second into a third, after every 16 of those the third into a fourth; rows after the last
  full block go into the first accumulator, and the result is ``((a1 + a2) + a3) + a4``. Appending
  zero rows changes nothing (``x + 0`` is exact and a final ``a + b`` equals ``b + a``), so this
  equals summing the rows padded with zeros to a multiple of ``16 ** 3``: each block of 16 in
  order, each group of 16 block sums in order, each run of 16 group sums in order, and the runs in
  order (:func:`_cascade`);
* the other columns by ``row_sum``: the rows as ``n // 4`` super-rows of 4 consecutive rows, each
  of the 4 lanes summed over the super-rows as above, the last ``n % 4`` rows added in order to
  lane 0, then lanes 1, 2, 3 added to lane 0 (:func:`_interleaved`).

With more than one thread and at least ``2 ** 15`` elements (``n * D``), ATen splits the columns
between threads at multiples of 32 (``parallel_dim_reduction``), and each part is grouped on its
own: when a part holds only the last ``D % 32 < 8`` columns, their first 4 take the scalar loop's
``multi_row_sum`` (:func:`column_split`). Measured against ``sum`` for 22 column counts from 2 to
260 and 1 to 64 threads.

``mean(0)`` is that sum divided by the row count. The block size grows beyond 16 for more than ``2
** 19`` rows, so clusters are limited to ``2 ** 16`` pixels, and a single column is summed another
way, so at least 2 columns are required (iSeg's have 77).

Two backends give the same bits: ``'torch'`` (here: ~300 batched operators per call) and
``'triton'`` (:mod:`.ordered_sums_triton`: two kernel launches, one program per cluster walking its
rows in that order); ``'auto'`` takes Triton where it runs
(:func:`mmdiffseg.triton_support.triton_problem`: CUDA GPUs of compute capability 8.0+, any device
under Triton's interpreter ``TRITON_INTERPRET=1``).
"""
from __future__ import annotations

import functools

import torch

from ..triton_support import auto_takes_triton, triton_problem

__all__ = ['cpu_order_cluster_sums', 'column_split', 'BACKENDS']

BACKENDS = ('auto', 'torch', 'triton')

_BLOCK = 16
_LEVELS = 3  # blocks, groups, runs; the runs are then added in order
_LANES = 4  # row_sum's interleaved partial sums
MAX_ROWS = 2 ** 16
MIN_COLUMNS = 2
_VECTOR = 8  # floats per vector of ATen's sum kernel (AVX2's, on AVX-512 CPUs too)
_GROUP = 4 * _VECTOR  # multi_row_sum's columns; also the 128-byte rounding of the thread split
_PARALLEL_ELEMENTS = 2 ** 15  # at::internal::GRAIN_SIZE: fewer elements are summed on one thread


def _grouped(width: int) -> int:
    """Leading columns of a part of ``width`` columns that ``multi_row_sum`` takes."""
    return width // _GROUP * _GROUP if width >= _VECTOR else width // _LANES * _LANES


def column_split(d: int, threads: int) -> tuple[int, int]:
    """``(low, high)``: of ``d`` columns, a cluster's first ``low`` are summed by
    ``multi_row_sum`` when it has fewer than ``2 ** 15 / d`` rows, its first ``high`` otherwise
    (``high > low`` only where ATen's thread split leaves the last ``d % 32 < 8`` columns a part
    of their own)."""
    whole = d // _GROUP * _GROUP
    low = _grouped(d)
    parts = min(threads, d)
    step = -(-d // parts)  # at::parallel_for's columns per thread
    first = -(-whole // step)  # the first thread starting at or past the last whole group
    alone = whole > 0 and first < parts and first * step < d
    return low, (whole + _grouped(d - whole) if alone else low)


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
    if backend == 'auto':
        return 'triton' if auto_takes_triton(device) else 'torch'
    problem = triton_problem(device)
    if backend == 'triton' and problem is not None:
        raise ValueError(f"cpu_order_cluster_sums(backend='triton') cannot run here: {problem}; "
                         "use backend='auto' or 'torch'")
    return backend


def cpu_order_cluster_sums(x: torch.Tensor, clusters: torch.Tensor, k: int,
                           backend: str = 'auto', threads: int | None = None) -> torch.Tensor:
    """``(B, K, D)``: for each image and cluster ``c``, ``x[b][clusters[b] == c].sum(0)`` as a CPU
    computes it (zeros for an empty cluster), on any device and without a host sync.

    Args:
        x: ``(B, N, D)`` float32 rows.
        clusters: ``(B, N)`` cluster ids in ``[0, k)``.
        backend: ``'auto'``, ``'torch'`` or ``'triton'`` (the module docstring).
        threads: the CPU threads of the ``sum`` reproduced (default: this process's
            ``torch.get_num_threads()``); only column counts with ``D % 32`` in ``[4, 8)`` depend
            on it.
    """
    b, n, d = x.shape
    if x.dtype != torch.float32:
        raise ValueError(f'cpu_order_cluster_sums: float32 rows needed (the order reproduced is '
                         f'that of a float32 sum), got {x.dtype}; cast with .float()')
    if d < MIN_COLUMNS:
        raise ValueError(f'cpu_order_cluster_sums: {d} columns; ATen sums fewer than '
                         f'{MIN_COLUMNS} another way, not reproduced here')
    if n > MAX_ROWS:
        raise ValueError(f'cpu_order_cluster_sums: {n} rows per image; the CPU summation order '
                         f'reproduced here holds up to {MAX_ROWS}')
    owners = (clusters + k * torch.arange(b, device=x.device)[:, None]).flatten()
    order = torch.sort(owners, stable=True).indices  # rows by (image, cluster), in pixel order
    rows, owner = x.reshape(b * n, d)[order], owners[order]
    counts = torch.zeros(b * k, dtype=torch.long, device=x.device)
    counts.scatter_add_(0, owners, torch.ones_like(owners))
    low, high = column_split(d, torch.get_num_threads() if threads is None else threads)
    if _resolve(backend, x.device) == 'triton':
        from .ordered_sums_triton import triton_cluster_sums
        sums = functools.partial(triton_cluster_sums, rows, counts)
    else:
        sums = functools.partial(_torch_cluster_sums, rows, owner, counts, n)
    out = sums(((0, high, False), (high, d, True)))
    if high > low:  # these columns go to row_sum in clusters summed on one thread
        one_thread = (counts * d < _PARALLEL_ELEMENTS)[:, None]
        out[:, low:high] = torch.where(one_thread, sums(((low, high, True),))[:, low:high],
                                       out[:, low:high])
    return out.view(b, k, d)


def _torch_cluster_sums(rows: torch.Tensor, owner: torch.Tensor, counts: torch.Tensor, most: int,
                        ranges) -> torch.Tensor:
    """``(O, D)``: for each ``(low, high, interleaved)`` of ``ranges``, those columns of each
    owner's sum by ``row_sum`` (``interleaved``) or ``multi_row_sum``; the others left unset."""
    out = rows.new_empty(len(counts), rows.shape[1])
    for low, high, interleaved in ranges:
        if high <= low:
            continue
        if interleaved:
            index = torch.arange(len(rows), device=rows.device) - (counts.cumsum(0) - counts)[owner]
            out[:, low:high] = _interleaved(rows[:, low:high], owner, index, counts, most)
        else:
            out[:, low:high] = _cascade(rows[:, low:high], counts, most)
    return out
