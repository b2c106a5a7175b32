"""Registers and spills of the Triton map kernels on an H200 (sm_90) per tile configuration,
compiled on any machine (:mod:`sm90_compile`): the evidence behind ``map_kernel._tiles``.

A thread has at most 255 registers; what does not fit is spilled to local memory (L1, then
HBM), which a kernel bound by its exponentials and its map writes should not pay for. Per input
dtype (fp16; bf16 compiles the same way; float32, whose ``tl.dot`` is FMAs) and padded head dim
(64: SD 2 and SD 1's 40; 128: SD 1's 80; 256: SD 1's 160), every tile of the GPU sweep in
``check_map_kernel.py`` (stages 2) and 32 x 32 (float32 at 256: up to 64 x 64): registers and
spilled bytes of the map kernel and the row log-sum-exp kernel, with the unit strides specialised as at run time; the built-in choice
is marked. Speed needs a GPU: ``check_map_kernel``.

    python benchmarks/bench_sm90_registers.py [--dtypes float16 float32] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import triton

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from results_table import append_section  # noqa: E402
from sm90_compile import compile_sm90  # noqa: E402
from mmdiffseg.attention import map_kernel  # noqa: E402

RESULTS = HERE / 'results' / 'sm90_registers.md'
POINTER = {'float16': '*fp16', 'bfloat16': '*bf16', 'float32': '*fp32'}
TILES = [(128, 128, 8), (128, 128, 4), (128, 64, 8), (128, 64, 4), (64, 128, 8), (64, 128, 4),
         (64, 64, 8), (64, 64, 4), (32, 32, 4)]
#: padded head dim -> (a head dim it stands for, query tokens, key tokens)
HEADS = {64: (64, 4096, 4096), 128: (80, 1024, 1024), 256: (160, 256, 256)}
INTS = ('n_heads', 'n_query', 'n_key', 'head_dim', 'sq_b', 'sq_h', 'sq_n', 'sk_b', 'sk_h', 'sk_n',
        'sl_b', 'sl_h', 'so_b', 'so_n')
#: the innermost strides, 1 at run time (head dims, LSE rows, map rows are contiguous): Triton
#: compiles an integer argument equal to 1 as a constant, and so does this
UNIT_STRIDES = dict(sq_d=1, sk_d=1, sl_n=1, so_k=1)


def unit_strides(kernel) -> dict:
    """The :data:`UNIT_STRIDES` that ``kernel`` takes."""
    return {name: 1 for name in UNIT_STRIDES if name in kernel.arg_names}


def signature(dtype: str) -> dict:
    """Argument types of both map kernels (the unit strides are constexprs)."""
    return dict(q_ptr=POINTER[dtype], k_ptr=POINTER[dtype], lse_ptr='*fp32', out_ptr='*fp32',
                heads_ptr='*i64', qk_scale='fp32', weight='fp32', **{n: 'i32' for n in INTS})


def measure(dtype: str, block_d: int, rows: int, cols: int, warps: int) -> str:
    dot = dict(UPCAST=False, PRECISION='ieee' if dtype == 'float32' else 'tf32')
    tiles = dict(BLOCK_M=rows, BLOCK_N=cols, BLOCK_D=block_d, **dot)
    cells = []
    for kernel, extra in ((map_kernel._head_map_kernel, dict(ACCUMULATE=True)),
                          (map_kernel._row_lse_kernel, {})):
        compiled, report = compile_sm90(kernel, signature(dtype),
                                        dict(tiles, **extra, **unit_strides(kernel)),
                                        num_warps=warps, num_stages=2)
        cells += [str(report.registers), str(report.spilled_bytes)]
    return ' | '.join(cells) + f' | {compiled.metadata.shared // 1024}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--dtypes', nargs='+', default=['float16', 'float32'],
                        choices=sorted(POINTER))
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for dtype in args.dtypes:
        element = 4 if dtype == 'float32' else 2
        for block_d, (head_dim, n_query, n_key) in HEADS.items():
            chosen = map_kernel._tiles(n_query, n_key, head_dim, element)
            for m, n, warps in TILES:
                if element == 4 and block_d == 256 and m * n > 64 * 64:
                    continue  # spills kilobytes like the others, and takes minutes to compile
                mark = ' (built-in)' if (m, n, warps) == (chosen['BLOCK_M'], chosen['BLOCK_N'],
                                                          chosen['num_warps']) else ''
                rows.append(f'| {dtype} | {block_d} | {m}x{n}, {warps} warps{mark} | '
                            f'{measure(dtype, block_d, m, n, warps)} |')
                print(rows[-1], flush=True)
    append_section(
        args.out, 'Triton map kernels on sm_90: registers and spills per tile',
        ' '.join(__doc__.split('\n\n')[:2]).replace('\n', ' '),
        f'{datetime.date.today()}: compiled for sm_90 on the CPU, triton {triton.__version__}',
        ['dtype', 'head dim (padded)', 'tile (query x key), warps', 'map kernel registers',
         'map kernel spilled bytes', 'lse kernel registers', 'lse kernel spilled bytes',
         'shared KiB (lse)'], rows)

if __name__ == '__main__':
    main()
