"""Fused Triton kernels for head-summed attention maps (CUDA; CPU tensors under ``TRITON_INTERPRET=1``).

:func:`add_head_maps` adds ``weight * sum_h exp(q_h.k_h * scale - lse_h)`` over a list of heads into
a float32 ``(B, N, K)`` buffer. One program owns a tile of (query rows x key columns) of one image
and loops over the heads: the logits come from one ``tl.dot`` per head with float32 accumulation,
the probabilities live in registers only (``exp2`` of log2-scaled logits), and the buffer is read
and written once per tile. Key columns and query rows past the ends (77 text tokens, token counts
that are not a tile multiple) are loaded as zeros and never stored. :func:`row_lse` computes the row
LSE itself (online max / sum over key tiles) where the SDPA backend returns none.

Both launch through the custom operators ``mmdiffseg::row_lse`` and ``mmdiffseg::add_head_map``
when traced by ``torch.compile`` (a U-Net compiled with capture): the graph holds them as opaque
calls instead of breaking at each launch. Eager calls launch directly (an operator call costs host
time at every layer).

Importing this module needs ``triton``; it is imported only when the Triton path is used.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

from ..triton_support import ceil_div, kernel_launch, next_power_of_2

LOG2E = 1.4426950408889634
#: the option that runs these maps without the kernels (named where Triton fails to build them)
MAP_OPTION = "map_backend='torch' (DiffusionAttentionEngine's)"


@triton.jit
def _load_query(q_rows, sq_d, row_ok, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
                REST_D: tl.constexpr, UPCAST: tl.constexpr):
    """One head's query tile in the two parts :func:`_logits` multiplies (the second is the
    first again where ``REST_D == 0``)."""
    dims = tl.arange(0, BLOCK_D)
    q = tl.load(q_rows + dims[None, :] * sq_d,
                mask=row_ok[:, None] & (dims < HEAD_DIM)[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)
    q_rest = q
    if REST_D > 0:
        rest = BLOCK_D + tl.arange(0, REST_D)
        q_rest = tl.load(q_rows + rest[None, :] * sq_d,
                         mask=row_ok[:, None] & (rest < HEAD_DIM)[None, :], other=0.0)
        if UPCAST:
            q_rest = q_rest.to(tl.float32)
    return q, q_rest


@triton.jit
def _logits(q, q_rest, k_cols, sk_d, col_ok, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr,
            REST_D: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """``q.k^T`` of one head for a (rows x cols) tile, float32: one ``tl.dot`` over the head dims
    ``[0, BLOCK_D)`` and, where ``REST_D > 0``, a second over ``[BLOCK_D, BLOCK_D + REST_D)``
    (zeros past ``HEAD_DIM``). SD 1's head dims 40 / 80 / 160 are 32 + 16 / 64 + 16 / 128 + 32:
    a quarter to a third fewer products and operand registers than one dot padded to 64 / 128 /
    256."""
    dims = tl.arange(0, BLOCK_D)
    kt = tl.load(k_cols + dims[:, None] * sk_d,
                 mask=col_ok[None, :] & (dims < HEAD_DIM)[:, None], other=0.0)
    if UPCAST:
        kt = kt.to(tl.float32)
    logits = tl.dot(q, kt, input_precision=PRECISION)
    if REST_D > 0:
        rest = BLOCK_D + tl.arange(0, REST_D)
        kt = tl.load(k_cols + rest[:, None] * sk_d,
                     mask=col_ok[None, :] & (rest < HEAD_DIM)[:, None], other=0.0)
        if UPCAST:
            kt = kt.to(tl.float32)
        logits = tl.dot(q_rest, kt, acc=logits, input_precision=PRECISION)
    return logits


@triton.jit
def _head_map_kernel(q_ptr, k_ptr, lse_ptr, out_ptr, heads_ptr, n_heads, n_query, n_key,
                     qk_scale, weight, sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d,
                     sl_b, sl_h, sl_n, so_b, so_n, so_k,
                     BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                     REST_D: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_ALIGN: tl.constexpr,
                     ACCUMULATE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    b = tl.program_id(2).to(tl.int64)
    # int64 offsets: a map of 2**31 elements and more (46k tokens, ~1728 px images) wraps int32
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = (tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    row_ok, col_ok = rows < n_query, cols < n_key
    q_rows = q_ptr + b * sq_b + rows[:, None] * sq_n
    k_cols = k_ptr + b * sk_b + cols[None, :] * sk_n  # K^T
    lse_row = lse_ptr + b * sl_b + rows * sl_n
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for i in range(n_heads):
        h = tl.load(heads_ptr + i).to(tl.int64)
        q, q_rest = _load_query(q_rows + h * sq_h * HEAD_ALIGN, sq_d, row_ok, HEAD_DIM, BLOCK_D,
                                REST_D, UPCAST)
        logits = _logits(q, q_rest, k_cols + h * sk_h * HEAD_ALIGN, sk_d, col_ok, HEAD_DIM,
                         BLOCK_D, REST_D, UPCAST, PRECISION)
        lse = tl.load(lse_row + h * sl_h, mask=row_ok, other=0.0)
        acc += tl.exp2(logits * qk_scale - lse[:, None] * 1.4426950408889634)
    acc = acc * weight
    out = out_ptr + b * so_b + rows[:, None] * so_n + cols[None, :] * so_k
    inside = row_ok[:, None] & col_ok[None, :]
    if ACCUMULATE:
        acc += tl.load(out, mask=inside, other=0.0)
    tl.store(out, acc, mask=inside)


@triton.jit
def _row_lse_kernel(q_ptr, k_ptr, lse_ptr, n_query, n_key, qk_scale,
                    sq_b, sq_h, sq_n, sq_d, sk_b, sk_h, sk_n, sk_d, sl_b, sl_h,
                    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                    REST_D: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_ALIGN: tl.constexpr,
                    UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    h = tl.program_id(1).to(tl.int64)
    b = tl.program_id(2).to(tl.int64)
    rows = (tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    row_ok = rows < n_query
    q, q_rest = _load_query(q_ptr + b * sq_b + h * sq_h * HEAD_ALIGN + rows[:, None] * sq_n, sq_d,
                            row_ok, HEAD_DIM, BLOCK_D, REST_D, UPCAST)
    k_head = k_ptr + b * sk_b + h * sk_h * HEAD_ALIGN
    top = tl.full([BLOCK_M], float('-inf'), dtype=tl.float32)
    total = tl.zeros([BLOCK_M], dtype=tl.float32)
    for start in range(0, n_key, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < n_key
        logits = _logits(q, q_rest, k_head + cols[None, :] * sk_n, sk_d, col_ok, HEAD_DIM,
                         BLOCK_D, REST_D, UPCAST, PRECISION) * qk_scale
        logits = tl.where(col_ok[None, :], logits, float('-inf'))
        new_top = tl.maximum(top, tl.max(logits, axis=1))
        total = total * tl.exp2(top - new_top) + tl.sum(tl.exp2(logits - new_top[:, None]), axis=1)
        top = new_top
    lse = (top + tl.log2(total)) * 0.6931471805599453
    tl.store(lse_ptr + b * sl_b + h * sl_h + rows, lse, mask=row_ok)


#: the kernels run in Triton's interpreter (``TRITON_INTERPRET=1`` when this module was imported)
INTERPRETED = isinstance(_head_map_kernel, InterpretedFunction)


def _tiles(n_query: int, n_key: int, head_dim: int, element_bytes: int) -> dict:
    """Tile sizes, from the H200 sweep of ``benchmarks/check_map_kernel.py`` (batch 16, float16,
    ``benchmarks/results/map_kernel.md``) and, where it has no figure, the largest tiles ptxas
    fits in sm_90's registers (``benchmarks/bench_triton_registers.py``;
    ``tests/test_triton_kernels_compile.py`` compiles these). fp16 / bf16, head dims up to 64:
    128 x 64 (query x key rows); 8 warps for a full 64 (SD 2: 1.16 ms a 64x64 layer, the best of
    the sweep 1.12), 4 warps for SD 1's 40 (2.74 ms against 3.85 with 8 warps, the best of the
    sweep, measured as one dot padded to 64 with 2-byte loads). Wider heads (SD 1's 80 and
    160): 64 x 64 with 8 warps. float32: 32 x 32 with 4 warps (its ``tl.dot`` is FMAs; larger
    tiles spill kilobytes). Shrunk to small token counts; ``tl.dot`` needs every side >= 16.
    Head dims that are not a power of two are multiplied as two dots (:func:`_logits`: 40 = 32 +
    16, 80 = 64 + 16, 160 = 128 + 32), which took sm_90's spills a thread from 1072 to 576 bytes
    (40), 712 to 48 (160) and 896 / 8428 to none in float32 (80 / 160)."""
    block_d = max(16, next_power_of_2(head_dim))  # one dot's padded width (the tile classes)
    main = max(16, next_power_of_2(head_dim + 1) // 2)  # the largest power of two <= head_dim
    rest = 0 if head_dim <= main else max(16, next_power_of_2(head_dim - main))
    if main + rest >= block_d:  # two dots would multiply as much as one
        main, rest = block_d, 0
    if element_bytes == 4:
        rows, cols, warps = 32, 32, 4
    elif block_d <= 64:
        rows, cols, warps = 128, 64, 8 if head_dim == block_d else 4
    else:
        rows, cols, warps = 64, 64, 8
    block_m = min(rows, max(16, next_power_of_2(n_query)))
    block_n = min(cols, max(16, next_power_of_2(n_key)))
    if block_m * block_n < 64 * 64:
        warps = 4
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=main, REST_D=rest, num_warps=warps,
                num_stages=2)


def _dot_options(query: torch.Tensor) -> dict:
    # float32 logits must not go through TF32 ('ieee'); fp16 / bf16 products are exact in the
    # float32 accumulator anyway. The interpreter multiplies bfloat16 tiles wrongly (their raw
    # bits), so on CPU they are converted to float32 first.
    upcast = query.dtype == torch.bfloat16 and not query.is_cuda
    return dict(UPCAST=upcast, PRECISION='ieee' if upcast or query.dtype == torch.float32 else 'tf32')


def _head_layout(query: torch.Tensor, key: torch.Tensor) -> Tuple[list, dict]:
    """The query and key strides, with the head strides in units of ``HEAD_ALIGN``, and the
    constants ``HEAD_DIM`` (so the masks of a padded head dim are known in 8-element runs) and
    ``HEAD_ALIGN``: 8 where the head dim and both head strides are multiples of 8 (every SD
    layer), else 1. Runtime integers that are not multiples of 16 (SD 1's head dim and head stride
    40) tell Triton nothing, and it loaded those tiles 2 bytes at a time; with both known they are
    16-byte vector loads (``tests/test_triton_kernels_compile.py``)."""
    head_dim = query.shape[-1]
    align = 8 if head_dim % 8 == 0 and query.stride(1) % 8 == 0 and key.stride(1) % 8 == 0 else 1
    q, k = list(query.stride()), list(key.stride())
    q[1], k[1] = q[1] // align, k[1] // align
    return q + k, dict(HEAD_DIM=head_dim, HEAD_ALIGN=align)


def _check(query: torch.Tensor, key: torch.Tensor) -> None:
    if query.dtype != key.dtype or query.device != key.device:
        raise ValueError(f'map kernel: query and key differ ({query.dtype} on {query.device} vs '
                         f'{key.dtype} on {key.device})')
    if not query.is_cuda and not INTERPRETED:
        raise ValueError('map kernel: CPU tensors run only under the Triton interpreter '
                         '(set TRITON_INTERPRET=1 before mmdiffseg.attention.map_kernel is '
                         'imported); use the torch map backend on CPU')


def row_lse(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """``(B, H, N)`` float32 ``logsumexp_j(q.k_j * scale)`` of every head (natural log)."""
    _check(query, key)
    if torch.compiler.is_compiling():
        return torch.ops.mmdiffseg.row_lse(query, key, scale)
    return _launch_row_lse(query, key, scale)


def _launch_row_lse(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    batch, heads, n_query, head_dim = query.shape
    lse = torch.empty(batch, heads, n_query, dtype=torch.float32, device=query.device)
    tiles = _tiles(n_query, key.shape[2], head_dim, query.element_size())
    grid = (ceil_div(n_query, tiles['BLOCK_M']), heads, batch)
    strides, layout = _head_layout(query, key)
    with kernel_launch(query, 'row log-sum-exp', MAP_OPTION):
        _row_lse_kernel[grid](query, key, lse, n_query, key.shape[2], scale * LOG2E, *strides,
                              lse.stride(0), lse.stride(1), **tiles, **layout,
                              **_dot_options(query))
    return lse


def add_head_maps(query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor, scale: float,
                  targets: Sequence[Tuple[torch.Tensor, List[Tuple[torch.Tensor, float]]]],
                  scratch: Callable[..., torch.Tensor], tiles: Optional[dict] = None,
                  overwrite: bool = False) -> None:
    """For each ``(heads, sinks)`` of ``targets``: ``buffer += weight * sum_{h in heads}
    exp(q_h.k_h * scale - lse_h)`` for every ``(buffer, weight)`` of ``sinks``.

    Args:
        query, key: ``(B, H, N, d)`` and ``(B, H, K, d)``, any strides, fp16 / bf16 / fp32.
        lse: ``(B, H, N)`` float32 row log-sum-exp (natural log), any strides.
        heads: integer tensor of head indices on the device.
        sinks: float32 ``(B, N, K)`` buffers (any strides, e.g. a per-layer slot) and
            weights. Several sinks of one head set share one head sum (in ``scratch('head_sum',
            numel, dtype, device)``; a new tensor where traced), added to each buffer with its
            weight.
        tiles: launch configuration (``BLOCK_M``, ``BLOCK_N``, ``BLOCK_D``, ``REST_D``,
            ``num_warps``, ``num_stages``) instead of the built-in choice
            (benchmarks/check_map_kernel.py tunes); eager calls only.
        overwrite: write ``weight x`` the sum instead of adding it (the buffers' old contents are
            never read).
    """
    _check(query, key)
    batch, _, n_query, _ = query.shape
    traced = torch.compiler.is_compiling()
    for heads, sinks in targets:
        if len(sinks) == 1:
            (out, weight), accumulate = sinks[0], not overwrite
        else:
            numel = batch * n_query * key.shape[2]
            out = (torch.empty(numel, dtype=torch.float32, device=query.device) if traced
                   else scratch('head_sum', numel, torch.float32, query.device))
            out, weight, accumulate = out.view(batch, n_query, -1), 1.0, False
        if traced:
            torch.ops.mmdiffseg.add_head_map(query, key, lse, out, heads, scale, weight,
                                             accumulate)
        else:
            _launch_head_map(query, key, lse, out, heads, scale, weight, accumulate, tiles)
        if len(sinks) > 1:
            for buffer, weight in sinks:
                if overwrite:
                    torch.mul(out, weight, out=buffer)
                else:
                    buffer.add_(out, alpha=weight)


def _launch_head_map(query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor,
                     out: torch.Tensor, heads: torch.Tensor, scale: float, weight: float,
                     accumulate: bool, tiles: Optional[dict]) -> None:
    """One launch: ``out (+)= weight * sum_{h in heads} exp(q_h.k_h * scale - lse_h)``."""
    batch, _, n_query, head_dim = query.shape
    n_key = key.shape[2]
    tiles = tiles or _tiles(n_query, n_key, head_dim, query.element_size())
    grid = (ceil_div(n_query, tiles['BLOCK_M']), ceil_div(n_key, tiles['BLOCK_N']), batch)
    strides, layout = _head_layout(query, key)
    with kernel_launch(query, 'attention map', MAP_OPTION):
        _head_map_kernel[grid](query, key, lse, out, heads, heads.numel(), n_query, n_key,
                               scale * LOG2E, weight, *strides, *lse.stride(), *out.stride(),
                               ACCUMULATE=accumulate, **tiles, **layout, **_dot_options(query))


@torch.library.custom_op('mmdiffseg::row_lse', mutates_args=())
def _row_lse_op(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """:func:`row_lse` as an operator a compiled graph calls."""
    return _launch_row_lse(query, key, scale)


@_row_lse_op.register_fake
def _row_lse_shape(query, key, scale):
    return query.new_empty(query.shape[:3], dtype=torch.float32)


@torch.library.custom_op('mmdiffseg::add_head_map', mutates_args=('out',))
def _head_map_op(query: torch.Tensor, key: torch.Tensor, lse: torch.Tensor, out: torch.Tensor,
                 heads: torch.Tensor, scale: float, weight: float, accumulate: bool) -> None:
    """One launch of :func:`add_head_maps` as an operator a compiled graph calls."""
    _launch_head_map(query, key, lse, out, heads, scale, weight, accumulate, None)


@_head_map_op.register_fake
def _head_map_shape(query, key, lse, out, heads, scale, weight, accumulate):
    return None
