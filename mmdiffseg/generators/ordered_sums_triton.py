"""The CPU-order cluster sums of :mod:`.ordered_sums` in two Triton kernel launches (three where
ATen's thread split changes how a few columns are summed: :func:`~.ordered_sums.column_split`).

:func:`~.ordered_sums.cpu_order_cluster_sums` in PyTorch reproduces ATen's CPU summation order
with ~300 small operators per call (three levels of regrouping, each an in-order sum of 16
slices), which makes iSeg's float16 k-means launch-bound on a GPU (~6,000 launches per batch).
Here one program per (cluster, column block) walks its cluster's rows, already sorted by cluster,
in that order, with the partial sums in registers (a group's 16 blocks side by side):

* columns summed by ``multi_row_sum``: blocks of 16 rows summed in order from zero, groups
  of 16 block sums, runs of 16 group sums, and the runs, each in order from zero; rows past the
  cluster's end read as zeros, which is the padding of :func:`~.ordered_sums._cascade`;
* columns summed by ``row_sum``: the same cascade for each of 4 interleaved lanes (rows
  ``4 s + lane``), the last ``count % 4`` rows added in order to lane 0, then lanes 1, 2, 3.

Only float32 additions are involved, each rounded once as IEEE requires, so the result is the
PyTorch emulation's bit for bit on a GPU and under Triton's interpreter (tested on the CPU).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..triton_support import ceil_div, kernel_launch, next_power_of_2

__all__ = ['triton_cluster_sums', 'kernel_config']


@triton.jit
def _cascade_sum(first, count, row_step, cols_ok, BLOCK_D: tl.constexpr):
    """``multi_row_sum`` of ``count`` rows at ``first``, ``first + row_step``, ... (``first``:
    ``(BLOCK_D,)`` column pointers): ``(BLOCK_D,)``.

    The 16 blocks of a group are summed side by side (row ``i`` of every block at once, ``i`` in
    order); the group then adds its block sums in order, each taken out of the tile as a sum of
    itself and zeros, which is exact."""
    blocks = tl.arange(0, 16)
    total = tl.zeros([BLOCK_D], tl.float32)
    for run_start in range(0, count, 4096):
        run = tl.zeros([BLOCK_D], tl.float32)
        for group_start in range(run_start, tl.minimum(run_start + 4096, count), 256):
            used = (tl.minimum(group_start + 256, count) - group_start + 15) // 16
            block_sums = tl.zeros([16, BLOCK_D], tl.float32)
            for i in tl.static_range(16):
                row = group_start + blocks * 16 + i
                block_sums += tl.load(first[None, :] + row[:, None] * row_step,
                                      mask=(row < count)[:, None] & cols_ok[None, :], other=0.0)
            group = tl.zeros([BLOCK_D], tl.float32)
            for j in range(used):  # the blocks after these hold zeros only
                group += tl.sum(tl.where(blocks[:, None] == j, block_sums, 0.0), axis=0)
            run += group
        total += run
    return total


@triton.jit
def _cluster_sums_kernel(rows_ptr, starts_ptr, counts_ptr, out_ptr, col_start, col_end, width,
                         INTERLEAVED: tl.constexpr, BLOCK_D: tl.constexpr):
    """Columns ``[col_start, col_end)`` of one cluster's sum (``tl.program_id(0)``)."""
    owner = tl.program_id(0).to(tl.int64)
    cols = col_start + tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    cols_ok = cols < col_end
    count = tl.load(counts_ptr + owner).to(tl.int32)  # at most 2 ** 16 rows
    first = rows_ptr + tl.load(starts_ptr + owner).to(tl.int64) * width + cols
    if INTERLEAVED:
        full = count // 4
        total = _cascade_sum(first, full, 4 * width, cols_ok, BLOCK_D)
        for row in range(4 * full, count):
            total += tl.load(first + row * width, mask=cols_ok, other=0.0)
        for lane in tl.static_range(1, 4):
            total += _cascade_sum(first + lane * width, full, 4 * width, cols_ok, BLOCK_D)
    else:
        total = _cascade_sum(first, count, width, cols_ok, BLOCK_D)
    tl.store(out_ptr + owner * width + cols, total, mask=cols_ok)


def kernel_config(columns: int, interleaved: bool) -> dict:
    """Constexprs and options of a launch over ``columns`` columns."""
    block = min(64, next_power_of_2(columns))
    return dict(INTERLEAVED=interleaved, BLOCK_D=block, num_warps=2 if block <= 32 else 4)


def triton_cluster_sums(rows: torch.Tensor, counts: torch.Tensor, ranges) -> torch.Tensor:
    """``(O, D)`` sums of consecutive runs of ``rows`` (``counts[o]`` rows for owner ``o``, owner
    after owner): one launch per ``(low, high, interleaved)`` of ``ranges``, those columns as
    ``row_sum`` (``interleaved``) or ``multi_row_sum``; the other columns left unset.

    Args:
        rows: ``(R, D)`` float32, grouped by owner in row order.
        counts: ``(O,)`` rows per owner.
        ranges: column ranges and their way of summing (:func:`~.ordered_sums.column_split`).
    """
    rows = rows.contiguous()
    d = rows.shape[1]
    counts = counts.contiguous()
    starts = counts.cumsum(0) - counts
    out = rows.new_empty(len(counts), d)
    for low, high, interleaved in ranges:
        if high > low:
            config = kernel_config(high - low, interleaved)
            grid = (len(counts), ceil_div(high - low, config['BLOCK_D']))
            with kernel_launch(rows, 'cluster sums'):
                _cluster_sums_kernel[grid](rows, starts, counts, out, low, high, d, **config)
    return out
