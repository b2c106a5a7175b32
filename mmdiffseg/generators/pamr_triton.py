"""PAMR propagation fused in Triton: several steps per kernel launch, on tiles with a recomputed halo.

:meth:`PAMR.propagate <mmdiffseg.generators.pamr.PAMR.propagate>` in PyTorch is ~13 kernel launches
per step (8 multiply-adds, a copy, 4 border refreshes); SeeDiff's 5000 steps at 512x512 are then
launch-bound on a GPU. Here one launch runs up to ``K`` steps:

* The image is cut into output tiles of ``T - 2 * halo`` pixels a side, ``halo = K * pad``
  (``pad`` = the largest dilation). One program per (tile, batch x mask channel) copies its
  ``T x T`` working block (the tile, its halo, and outside the image the replicate padding) into a
  private scratch buffer in global memory (2 x 17 KiB for ``T = 64``: it stays in L1/L2) and
  iterates ``m <- sum_j w_j m_j`` there, ping-pong between two halves, with a block barrier
  between steps. Block pixels outside the image are refreshed from their clamped source after
  every step (tiles on the image border only), which is the PyTorch path's replicate padding.
* At the block's inner edges the neighbour reads see stale values, and the error moves inwards by
  at most ``pad`` pixels a step, so after ``n <= K`` steps the central ``T - 2 * halo`` pixels are
  exact and are the only ones written out.
* The weights are packed once per call, tile by tile and tap-major (``_pack_weights_kernel``), so
  that every weight and neighbour address is one pointer per pixel plus a constant: no index
  tensors live across the step loop. A step runs over the block 4096 pixels at a time (``STRIP``
  rows: 8 a thread with 16 warps), so the original PAMR's 48 taps on a 128 tile do not spill
  registers either (64 registers a thread on sm_90).
* Each program also writes the largest change of its last step over its output pixels, so the
  ``tol`` early stop reads one small buffer (one sync per check, at the PyTorch path's steps).

Per step the work is ``P`` loads of weights and of the mask per working-block pixel
(``(T / (T - 2 halo))^2`` times the image: 1.8x for ``T = 64, K = 8, pad = 1``), from L1/L2;
the launches drop from ~13 per step to ``1 / K``.

Numerics: the sum runs over the neighbours in the PyTorch path's order, rounded as it rounds: the
first product, then one fused multiply-add per neighbour (``tl.fma``; torch's CPU ``addcmul_`` is
an FMA too). Triton's interpreter evaluates ``tl.fma`` as a product then a sum (two roundings),
so on the CPU the two agree within the bound below (tested; a 2026-12-06 check: 1.8e-07 at
most), not bit for bit. On a GPU, ``tl.fma`` is a hardware FMA and torch's CUDA ``addcmul_`` is
contracted to one by nvcc, so the two should agree bit for bit; where a compiler rounds
differently, each step's result differs by at most
``2 P u max|m|`` (``u = 2^-24``) and the steps are averages with weights summing to 1
(non-expansive), so after ``n`` steps ``|fused - torch| <= 2 n P u max|m|`` (5000 SeeDiff steps on
a 0/1 mask: 2.4e-3). ``benchmarks/bench_seediff.py`` reports the measured difference.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl

from ..triton_support import ceil_div, kernel_launch, next_power_of_2
from .pamr import run_in_chunks

__all__ = ['fused_propagate', 'launch_plan', 'kernel_config']

#: the options that run PAMR without the kernel (named where Triton fails to build it)
PAMR_OPTION = "pamr_backend='torch' (SeeDiff's), or PAMR(backend='torch')"


@triton.jit
def _clamp(index, low, high):
    return tl.minimum(tl.maximum(index, low), high)


@triton.jit
def _working_block(tile, tiles_x, height, width, first_row, HALO: tl.constexpr,
                   TILE: tl.constexpr, ROWS: tl.constexpr):
    """Block coordinates ``(r, c)``, image coordinates ``(rows, cols)`` of ``ROWS`` rows of one
    tile's working block from its row ``first_row``, and the image index each block pixel copies
    (replicate padding = clamped index)."""
    out_size: tl.constexpr = TILE - 2 * HALO
    r = first_row + tl.arange(0, ROWS)[:, None]
    c = tl.arange(0, TILE)[None, :]
    rows = (tile // tiles_x) * out_size - HALO + r
    cols = (tile % tiles_x) * out_size - HALO + c
    source = _clamp(rows, 0, height - 1) * width + _clamp(cols, 0, width - 1)
    return r, c, rows, cols, source


@triton.jit
def _pack_weights_kernel(weight_ptr, packed_ptr, height, width, tiles_x, NUM_TAPS: tl.constexpr,
                         HALO: tl.constexpr, TILE: tl.constexpr, STRIP: tl.constexpr):
    """Each tile's weights, tap-major and contiguous per tile: ``packed[b, tile, tap, r, c]``."""
    tile = tl.program_id(0)
    batch = tl.program_id(1).to(tl.int64)
    weights = weight_ptr + batch * NUM_TAPS * height * width
    packed = packed_ptr + (batch * tl.num_programs(0) + tile) * (NUM_TAPS * TILE * TILE)
    for first in range(0, TILE, STRIP):
        r, c, rows, cols, source = _working_block(tile, tiles_x, height, width, first, HALO,
                                                  TILE, STRIP)
        for tap in range(NUM_TAPS):  # a loop, not unrolled: 48 unrolled taps take ~50 s to compile
            tl.store(packed + tap * (TILE * TILE) + r * TILE + c,
                     tl.load(weights + tap * height * width + source))


@triton.jit
def _pamr_steps_kernel(src_ptr, dst_ptr, packed_ptr, scratch_ptr, change_ptr, num_steps, channels,
                       height, width, tiles_x, DILATIONS: tl.constexpr, PAD: tl.constexpr,
                       HALO: tl.constexpr, TILE: tl.constexpr, STRIP: tl.constexpr):
    """``num_steps`` (<= HALO / PAD) steps on one tile of one mask plane: src -> dst.

    Scratch: two halves of ``(TILE + 2 PAD)^2`` (the block and a ring that keeps the neighbour
    reads of the block's edge in bounds), so every neighbour and weight address is a constant
    offset from one pointer per pixel. A step runs over the block ``STRIP`` rows at a time (a
    run-time loop: a 128 tile's 48 taps in one pass spilled 24 KB a thread under Triton 3.6)."""
    tile = tl.program_id(0)
    plane = tl.program_id(1).to(tl.int64)
    STRIDE: tl.constexpr = TILE + 2 * PAD
    HALF: tl.constexpr = STRIDE * STRIDE
    out_size: tl.constexpr = TILE - 2 * HALO
    top = (tile // tiles_x) * out_size - HALO  # the block's first image row and column
    left = (tile % tiles_x) * out_size - HALO
    on_border = (top < 0) | (top + TILE > height) | (left < 0) | (left + TILE > width)
    plane_size = height * width
    block = scratch_ptr + (plane * tl.num_programs(0) + tile) * (2 * HALF)
    packed = (packed_ptr + ((plane // channels) * tl.num_programs(0) + tile)
              * (8 * len(DILATIONS) * TILE * TILE))
    for first in range(0, TILE, STRIP):
        r, c, rows, cols, source = _working_block(tile, tiles_x, height, width, first, HALO,
                                                  TILE, STRIP)
        tl.store(block + (r + PAD) * STRIDE + (c + PAD),
                 tl.load(src_ptr + plane * plane_size + source))
    tl.debug_barrier()
    for step in range(num_steps):
        read = block + (step % 2) * HALF
        write = block + ((step + 1) % 2) * HALF
        for first in range(0, TILE, STRIP):
            r = first + tl.arange(0, STRIP)[:, None]
            c = tl.arange(0, TILE)[None, :]
            here = (r + PAD) * STRIDE + (c + PAD)
            taps = packed + r * TILE + c
            acc = tl.zeros([STRIP, TILE], tl.float32)  # overwritten by the first product
            for k in tl.static_range(len(DILATIONS)):  # neighbours in PAMR.offsets order
                for dy in tl.static_range(-1, 2):
                    for dx in tl.static_range(-1, 2):
                        if dy != 0 or dx != 0:
                            tap = k * 8 + (dy + 1) * 3 + (dx + 1) - (dy * 3 + dx > 0)
                            value = tl.load(read + here + (dy * STRIDE + dx) * DILATIONS[k])
                            weight = tl.load(taps + tap * (TILE * TILE))
                            if tap == 0:
                                acc = value * weight
                            else:  # as torch's addcmul_: one rounding per multiply-add
                                acc = tl.fma(value, weight, acc)
            tl.store(write + here, acc)
        if on_border:  # refresh the replicate padding (outside the image: the clamped pixel)
            tl.debug_barrier()
            for first in range(0, TILE, STRIP):
                r, c, rows, cols, source = _working_block(tile, tiles_x, height, width, first,
                                                          HALO, TILE, STRIP)
                outside = (rows < 0) | (rows >= height) | (cols < 0) | (cols >= width)
                replica = ((_clamp(rows, 0, height - 1) - top + PAD) * STRIDE
                           + (_clamp(cols, 0, width - 1) - left + PAD))
                tl.store(write + (r + PAD) * STRIDE + (c + PAD),
                         tl.load(write + replica, mask=outside), mask=outside)
        tl.debug_barrier()
    change = 0.0
    for first in range(0, TILE, STRIP):
        r, c, rows, cols, source = _working_block(tile, tiles_x, height, width, first, HALO,
                                                  TILE, STRIP)
        here = (r + PAD) * STRIDE + (c + PAD)
        new = tl.load(block + (num_steps % 2) * HALF + here)
        old = tl.load(block + ((num_steps + 1) % 2) * HALF + here)
        inside = ((r >= HALO) & (r < HALO + out_size) & (c >= HALO) & (c < HALO + out_size)
                  & (rows < height) & (cols < width))
        tl.store(dst_ptr + plane * plane_size + rows * width + cols, new, mask=inside)
        change = tl.maximum(change, tl.max(tl.max(tl.where(inside, tl.abs(new - old), 0.0),
                                                  axis=1), axis=0))
    tl.store(change_ptr + plane * tl.num_programs(0) + tile, change)


def launch_plan(pad: int, steps_per_launch: int, tile: int) -> Tuple[int, int]:
    """``(K, T)``: steps per launch at most ``steps_per_launch`` with the halo ``K * pad`` at most
    a quarter of the tile, and the tile ``T`` (a power of two, at least ``tile``) grown until one
    step fits (large dilations)."""
    if steps_per_launch < 1 or tile < 8 or tile & (tile - 1):
        raise ValueError(f'PAMR (triton): steps_per_launch must be >= 1 and tile a power of two '
                         f'>= 8, got {steps_per_launch} and {tile}')
    steps = max(1, min(steps_per_launch, tile // (4 * pad)))
    return steps, max(tile, next_power_of_2(4 * pad * steps))


def kernel_config(pad: int, steps: int, tile: int) -> dict:
    """Constexprs and options of both kernels for :func:`launch_plan`'s ``(K, T)``: blocks of at
    most 4096 pixels a pass (``STRIP`` rows; 8 a thread with 16 warps) and explicit FMAs only
    (``tl.fma``), no contraction left to the compiler's default."""
    return dict(HALO=steps * pad, TILE=tile, STRIP=min(tile, 4096 // tile),
                num_warps=max(4, min(16, tile * tile // 256)), enable_fp_fusion=False)


def fused_propagate(weights: torch.Tensor, mask: torch.Tensor, dilations: Sequence[int],
                    num_iter: int, tol: Optional[float] = None, check_every: int = 10,
                    steps_per_launch: int = 8, tile: int = 64) -> torch.Tensor:
    """``num_iter`` steps of ``m <- sum_j w_j m_j`` (replicate border), as ``PAMR.propagate``.

    Args:
        weights: ``(B, P, H, W)`` neighbour weights in ``PAMR.offsets`` order (per dilation, the
            8 neighbours row by row), ``P = 8 * len(dilations)``.
        mask: ``(B, C, H, W)`` float32.
        dilations: PAMR's dilations.
        tol / check_every: the early stop of :func:`~mmdiffseg.generators.pamr.run_in_chunks`
            (launches end at the checked steps).
        steps_per_launch / tile: ``K`` and ``T`` (see :func:`launch_plan`).
    """
    b, c, h, w = mask.shape
    pad = max(dilations)
    steps, size = launch_plan(pad, steps_per_launch, tile)
    out_size = size - 2 * steps * pad
    tiles_x = ceil_div(w, out_size)
    grid = (ceil_div(h, out_size) * tiles_x, b * c)
    config = kernel_config(pad, steps, size)
    packed = mask.new_empty(b * grid[0] * weights.shape[1] * size * size, dtype=torch.float32)
    with kernel_launch(mask, 'PAMR weight packing', PAMR_OPTION):
        _pack_weights_kernel[grid[0], b](weights.float().contiguous(), packed, h, w, tiles_x,
                                         NUM_TAPS=weights.shape[1], **config)
    state = [mask.float().contiguous().clone(), torch.empty_like(mask, dtype=torch.float32)]
    scratch = state[0].new_zeros(grid[0] * grid[1] * 2 * (size + 2 * pad) ** 2)
    change = state[0].new_empty(grid[0] * grid[1])

    def advance(n: int, measure: bool) -> Optional[torch.Tensor]:
        with kernel_launch(mask, 'PAMR steps', PAMR_OPTION):
            _pamr_steps_kernel[grid](state[0], state[1], packed, scratch, change, n, c, h, w,
                                     tiles_x, DILATIONS=tuple(dilations), PAD=pad, num_stages=1,
                                     **config)
        state.reverse()
        return change.max() if measure else None

    run_in_chunks(advance, num_iter, steps, tol, check_every)
    return state[0]
