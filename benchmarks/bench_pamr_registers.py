"""Registers and spills of the fused PAMR kernels (``mmdiffseg.generators.pamr_triton``) per
dilation set and launch setting ``(K, T)``, a step over the whole tile at once (``STRIP = T``)
against the built-in passes of at most 4096 pixels (``kernel_config``), compiled for a GPU
architecture (default sm_90, the H200) on any machine (:mod:`cubin_compile`). The settings:
SeeDiff's one dilation at the built-in ``K=8 T=64`` and at the 128 tiles of ``bench_seediff.py``'s
GPU sweep, two dilations, and the original PAMR's six (48 taps, a 128 tile for its 24-pixel halo).
What spills goes to local memory at every one of thousands of steps; speed needs a GPU
(``bench_seediff.py``). "One pass" is this kernel with ``STRIP = T``; the kernel before the
passes (commit 5fef7b6) spilled more: for the 48 taps 924 bytes a thread under Triton 3.8 and
24,136 under 3.6 (the H200 machine's).

    python benchmarks/bench_pamr_registers.py [--arch 90 89 80] [--out FILE]
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
from mmdiffseg.generators import pamr_triton  # noqa: E402

RESULTS = HERE / 'results' / 'pamr_registers.md'
#: (dilations, steps per launch, tile) as ``fused_propagate`` takes them
SETTINGS = [((1,), 8, 64), ((1,), 16, 128), ((1,), 32, 128), ((1, 2), 8, 64),
            ((1, 2, 4, 8, 12, 24), 8, 64)]
STEPS_ARGS = dict(src_ptr='*fp32', dst_ptr='*fp32', packed_ptr='*fp32', scratch_ptr='*fp32',
                  change_ptr='*fp32', **{n: 'i32' for n in ('num_steps', 'channels', 'height',
                                                            'width', 'tiles_x')})
PACK_ARGS = dict(weight_ptr='*fp32', packed_ptr='*fp32',
                 **{n: 'i32' for n in ('height', 'width', 'tiles_x')})


def measure(dilations, steps: int, tile: int, strip: int, arch: int) -> list:
    """Cells: the tile and its rows a pass, warps, registers and spilled bytes of the steps and
    packing kernels, and whether their shared memory fits ``arch``."""
    pad = max(dilations)
    config = dict(pamr_triton.kernel_config(pad, *pamr_triton.launch_plan(pad, steps, tile)),
                  STRIP=strip)
    options = {key: config.pop(key) for key in ('num_warps', 'enable_fp_fusion')}
    step_kernel, step = compile_cubin(pamr_triton._pamr_steps_kernel, STEPS_ARGS,
                                      dict(config, DILATIONS=tuple(dilations), PAD=pad),
                                      arch=arch, num_stages=1, **options)
    pack_kernel, pack = compile_cubin(pamr_triton._pack_weights_kernel, PACK_ARGS,
                                      dict(config, NUM_TAPS=8 * len(dilations)), arch=arch,
                                      **options)
    shared = max(step_kernel.metadata.shared, pack_kernel.metadata.shared)
    return [f'{config["TILE"]} / {strip}', str(options['num_warps']), str(step.registers),
            str(step.spilled_bytes), str(pack.registers), str(pack.spilled_bytes),
            'yes' if shared <= SHARED_BYTES[arch] else '**no**']


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', nargs='+', type=int, default=[90], choices=sorted(SHARED_BYTES),
                        help='compute capabilities to compile for (90: H100 / H200, 89: RTX 40xx '
                             '/ L40S, 80: A100)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for arch in args.arch:
        for dilations, steps, tile in SETTINGS:
            pad = max(dilations)
            k, size = pamr_triton.launch_plan(pad, steps, tile)
            built_in = pamr_triton.kernel_config(pad, k, size)['STRIP']
            for strip, how in ((size, 'one pass'), (built_in, 'built-in passes')):
                cells = measure(dilations, steps, tile, strip, arch)
                rows.append(f'| sm_{arch} | {dilations} | K={k} | {how} | ' + ' | '.join(cells)
                            + ' |')
                print(rows[-1], flush=True)
    archs = ', '.join(f'sm_{a}' for a in args.arch)
    append_section(
        args.out, 'Triton PAMR kernels: registers and spills per launch setting',
        ' '.join(__doc__.split('\n\n')[:1]).replace('\n', ' '),
        f'{datetime.date.today()}: compiled for {archs} on the CPU, triton {triton.__version__}',
        ['arch', 'dilations', 'steps a launch', 'a step over the tile', 'tile / rows a pass',
         'warps', 'steps kernel registers', 'steps kernel spilled bytes',
         'packing kernel registers', 'packing kernel spilled bytes', 'shared memory fits'], rows)


if __name__ == '__main__':
    main()
