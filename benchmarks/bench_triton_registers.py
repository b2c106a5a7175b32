"""Registers, spills and shared memory of the Triton map kernels per tile configuration and GPU
architecture (default sm_90, the H200), compiled on any machine (:mod:`cubin_compile`): the
evidence behind ``map_kernel._tiles`` and behind the compute-capability floor of
:mod:`mmdiffseg.triton_support`.

A thread has at most 255 registers; what does not fit is spilled to local memory (L1, then
HBM), which a kernel bound by its exponentials and its map writes should not pay for. Per input
dtype (fp16; bf16 compiles the same way; float32, whose ``tl.dot`` is FMAs) and head dim (64:
SD 2; 40, 80 and 160: SD 1, multiplied as two dots, 32 + 16, 64 + 16 and 128 + 32), every tile of
the GPU sweep in ``check_map_kernel.py`` (stages 2) and 32 x 32 (float32 at 160: up to 64 x 64):
registers and
spilled bytes of the map kernel and the row log-sum-exp kernel, with the unit strides specialised
as at run time, and the larger shared-memory need of the two against the architecture's limit;
the built-in choice is marked. ``--tiles built-in`` compiles only the built-in tiles (a quick look
at other GPUs). Speed needs a GPU: ``check_map_kernel``.

    python benchmarks/bench_triton_registers.py [--arch 90 89 80] [--tiles all|built-in]
        [--dtypes float16 float32] [--out FILE]
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
from cubin_compile import SHARED_BYTES, compile_cubin  # noqa: E402
from mmdiffseg.attention import map_kernel  # noqa: E402

RESULTS = HERE / 'results' / 'triton_registers.md'
POINTER = {'float16': '*fp16', 'bfloat16': '*bf16', 'float32': '*fp32'}
TILES = [(128, 128, 8), (128, 128, 4), (128, 64, 8), (128, 64, 4), (64, 128, 8), (64, 128, 4),
         (64, 64, 8), (64, 64, 4), (32, 32, 4)]
#: SD's head dims -> (query tokens, key tokens) of a layer that has them (SD 2: 64 everywhere; SD 1:
#: 40 at 64x64, 80 at 32x32, 160 below)
HEADS = {64: (4096, 4096), 40: (4096, 4096), 80: (1024, 1024), 160: (256, 256)}
INTS = ('n_heads', 'n_query', 'n_key', 'sq_b', 'sq_h', 'sq_n', 'sk_b', 'sk_h', 'sk_n',
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


def dots(head_dim: int, element: int) -> str:
    """How the kernels cover ``head_dim``: one dot (its padded width) or two."""
    chosen = map_kernel._tiles(*HEADS[head_dim], head_dim, element)
    width, rest = chosen['BLOCK_D'], chosen['REST_D']
    return f'{head_dim} ({width} + {rest})' if rest else f'{head_dim} ({width})'


def measure(dtype: str, head_dim: int, rows: int, cols: int, warps: int, arch: int) -> str:
    dot = dict(UPCAST=False, PRECISION='ieee' if dtype == 'float32' else 'tf32')
    chosen = map_kernel._tiles(*HEADS[head_dim], head_dim, 4 if dtype == 'float32' else 2)
    tiles = dict(BLOCK_M=rows, BLOCK_N=cols, BLOCK_D=chosen['BLOCK_D'], REST_D=chosen['REST_D'],
                 HEAD_DIM=head_dim, HEAD_ALIGN=8, **dot)
    cells, shared = [], 0
    for kernel, extra in ((map_kernel._head_map_kernel, dict(ACCUMULATE=True)),
                          (map_kernel._row_lse_kernel, {})):
        compiled, report = compile_cubin(kernel, signature(dtype),
                                         dict(tiles, **extra, **unit_strides(kernel)), arch=arch,
                                         num_warps=warps, num_stages=2)
        cells += [str(report.registers), str(report.spilled_bytes)]
        shared = max(shared, compiled.metadata.shared)
    fits = 'yes' if shared <= SHARED_BYTES[arch] else '**no**'
    return ' | '.join(cells) + f' | {shared / 1024:.0f} of {SHARED_BYTES[arch] // 1024} ({fits})'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', nargs='+', type=int, default=[90], choices=sorted(SHARED_BYTES),
                        help='compute capabilities to compile for (90: H100 / H200, 89: RTX 40xx '
                             '/ L40S, 86: RTX 30xx, 80: A100, 75: T4, 70: V100)')
    parser.add_argument('--tiles', choices=['all', 'built-in'], default='all')
    parser.add_argument('--dtypes', nargs='+', default=['float16', 'float32'],
                        choices=sorted(POINTER))
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for arch in args.arch:
        for dtype in args.dtypes:
            element = 4 if dtype == 'float32' else 2
            for head_dim, (n_query, n_key) in HEADS.items():
                chosen = map_kernel._tiles(n_query, n_key, head_dim, element)
                built_in = (chosen['BLOCK_M'], chosen['BLOCK_N'], chosen['num_warps'])
                for m, n, warps in TILES if args.tiles == 'all' else [built_in]:
                    if element == 4 and head_dim == 160 and m * n > 64 * 64:
                        continue  # spills kilobytes like the others, and takes minutes to compile
                    mark = ' (built-in)' if (m, n, warps) == built_in else ''
                    rows.append(f'| sm_{arch} | {dtype} | {dots(head_dim, element)} | {m}x{n}, '
                                f'{warps} warps{mark} | '
                                f'{measure(dtype, head_dim, m, n, warps, arch)} |')
                    print(rows[-1], flush=True)
    archs = ', '.join(f'sm_{a}' for a in args.arch)
    append_section(
        args.out, 'Triton map kernels: registers, spills and shared memory per tile',
        ' '.join(__doc__.split('\n\n')[:2]).replace('\n', ' '),
        f'{datetime.date.today()}: compiled for {archs} on the CPU, triton {triton.__version__}, '
        f'{args.tiles} tiles',
        ['arch', 'dtype', 'head dim (dot widths)', 'tile (query x key), warps',
         'map kernel registers',
         'map kernel spilled bytes', 'lse kernel registers', 'lse kernel spilled bytes',
         'shared KiB (larger kernel) of the limit (fits)'], rows)


if __name__ == '__main__':
    main()
