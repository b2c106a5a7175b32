"""Every Triton kernel of the package compiles for an H200 (sm_90), and fits the shared memory of
the other GPUs it runs on (sm_80: A100, sm_89: RTX 40xx / L40S, whose 99 KiB sm_86 shares), on a
machine without a GPU.

Triton compiles to a cubin with the ``ptxas`` it bundles (``benchmarks/cubin_compile.py``), so
type errors, shared-memory overruns, register spills and FMA contractions show in CI instead of in
a GPU session. The launch configurations are those the package picks for Stable Diffusion's shapes
(SD 1.x head dims 40 / 80 / 160, SD 2.x 64; 64x64 self-attention, 77 text tokens; SeeDiff's and
the original PAMR's tiles), with the unit strides specialised as Triton does at run time. The
interpreter tests check the numbers.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

if importlib.util.find_spec('triton') is None:
    pytest.skip('triton is not installed (a test extra: pip install -e ".[tests]")',
                allow_module_level=True)

import triton  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
from bench_pamr_registers import PACK_ARGS, STEPS_ARGS  # noqa: E402
from bench_triton_registers import signature, unit_strides  # noqa: E402
from cubin_compile import SHARED_BYTES, compile_cubin  # noqa: E402

from mmdiffseg.triton_support import MIN_CAPABILITY  # noqa: E402

BYTES = {'float16': 2, 'bfloat16': 2, 'float32': 4}


def compile_for(arch, kernel, signature, constexprs, **options):
    """``(compiled, spilled bytes a thread)`` of ``kernel`` for ``sm_{arch}``, within its shared
    memory."""
    if not isinstance(kernel, triton.runtime.JITFunction):
        pytest.skip('this process runs Triton interpreted')
    compiled, report = compile_cubin(kernel, signature, constexprs, arch=arch, **options)
    assert compiled.metadata.shared <= SHARED_BYTES[arch], (arch, compiled.metadata.shared)
    return compiled, report.spilled_bytes


def compile_for_h200(kernel, signature, constexprs, **options):
    return compile_for(90, kernel, signature, constexprs, **options)


def ints(*names):
    return {name: 'i32' for name in names}


@pytest.mark.parametrize('dtype', ['float16', 'bfloat16', 'float32'])
@pytest.mark.parametrize('n_query, n_key, head_dim', [
    (4096, 4096, 64),   # SD 2.x 64x64 self-attention
    (4096, 4096, 40),   # SD 1.x 64x64 self-attention (4 warps in fp16 / bf16)
    (4096, 77, 40),     # SD 1.x 64x64 cross-attention
    (64, 64, 160),      # SD 1.x 8x8 self-attention, the widest heads
])
def test_map_kernels(dtype, n_query, n_key, head_dim):
    """The built-in tiles compile, and where nearly all the time goes nothing spills to local
    memory (head dim 64: every layer of SD 2), or little: SD 1's head dim 40 takes the 4-warp
    tile the H200 sweep measured 1.4x faster than the 8-warp one that spills nothing (ptxas
    reports ~0.6 KB a thread since the head is two dots, 32 + 16; 1.2 KB as one padded to 64),
    and wider heads spill at most 1 KB a thread in fp16 / bf16 (float32 160 as two dots: 0.3 KB
    in the row-LSE kernel). A failure here after a Triton upgrade means: sweep the tiles again
    (``map_kernel._tiles``, ``benchmarks/check_map_kernel.py``)."""
    from mmdiffseg.attention import map_kernel
    tiles = map_kernel._tiles(n_query, n_key, head_dim, BYTES[dtype])
    options = {key: tiles.pop(key) for key in ('num_warps', 'num_stages')}
    dot = dict(UPCAST=False, PRECISION='ieee' if dtype == 'float32' else 'tf32',
               HEAD_DIM=head_dim, HEAD_ALIGN=8)
    tensors = signature(dtype)
    limit = (float('inf') if dtype == 'float32' and head_dim > 64 else
             1536 if head_dim == 40 and dtype != 'float32' else 0 if head_dim <= 64 else 1024)
    lse = map_kernel._row_lse_kernel
    _, spills = compile_for_h200(lse, tensors, dict(tiles, **dot, **unit_strides(lse)), **options)
    assert spills <= limit, (tiles, options, spills)
    for accumulate in (False, True):
        kernel = map_kernel._head_map_kernel
        _, spills = compile_for_h200(
            kernel, tensors, dict(tiles, ACCUMULATE=accumulate, **dot, **unit_strides(kernel)),
            **options)
        assert spills <= limit, (tiles, options, spills)


@pytest.mark.parametrize('kernel_name', ['_head_map_kernel', '_row_lse_kernel'])
def test_sd1_heads_load_as_16_byte_vectors(kernel_name):
    """SD 1's head dim 40 (head stride 40: neither is a multiple of 16, so Triton specialises on
    neither at run time) loads Q and K as 16-byte vectors, as SD 2's 64 does: no 2-byte global
    loads in the PTX. Compiled with what Triton knows at run time for a ``(16, 8, 4096, 40)``
    float16 query of a U-Net (aligned pointers; token counts, batch and token strides multiples
    of 16). Before ``HEAD_DIM`` / ``HEAD_ALIGN`` the map kernel issued 96 2-byte loads a head."""
    import torch

    from mmdiffseg.attention import map_kernel
    kernel = getattr(map_kernel, kernel_name)
    query = torch.empty(16, 4096, 8, 40, dtype=torch.float16).transpose(1, 2)
    tiles = map_kernel._tiles(4096, 4096, 40, 2)
    options = {key: tiles.pop(key) for key in ('num_warps', 'num_stages')}
    extra = dict(ACCUMULATE=True) if 'ACCUMULATE' in kernel.arg_names else {}
    constexprs = dict(tiles, **map_kernel._head_layout(query, query)[1], UPCAST=False,
                      PRECISION='tf32', **extra, **unit_strides(kernel))
    aligned = ('q_ptr', 'k_ptr', 'lse_ptr', 'out_ptr', 'heads_ptr', 'n_query', 'n_key', 'sq_b',
               'sq_n', 'sk_b', 'sk_n', 'sl_b', 'sl_h', 'so_b', 'so_n')
    if not isinstance(kernel, triton.runtime.JITFunction):
        pytest.skip('this process runs Triton interpreted')
    compiled, _ = compile_cubin(kernel, signature('float16'), constexprs, arch=90,
                                divisible_by_16=[n for n in aligned if n in kernel.arg_names],
                                **options)
    ptx = compiled.asm['ptx']
    assert 'ld.global.v4' in ptx and 'ld.global.b16' not in ptx and 'ld.global.u16' not in ptx


@pytest.mark.parametrize('dilations, steps, tile', [
    ((1,), 8, 64), ((1, 2), 8, 64), ((1, 2, 4, 8, 12, 24), 8, 64),  # SeeDiff's, the original's
    ((1,), 16, 128)])  # bench_seediff's sweep: 1.9 KB spilled (Triton 3.6) in one pass
def test_pamr_kernels_without_contractions(dilations, steps, tile):
    from mmdiffseg.generators import pamr_triton
    pad = max(dilations)
    config = pamr_triton.kernel_config(pad, *pamr_triton.launch_plan(pad, steps, tile))
    options = {key: config.pop(key) for key in ('num_warps', 'enable_fp_fusion')}
    _, spills = compile_for_h200(
        pamr_triton._pack_weights_kernel, PACK_ARGS, dict(config, NUM_TAPS=8 * len(dilations)),
        **options)
    assert spills == 0, spills  # a copy, once per call
    steps_kernel, spills = compile_for_h200(
        pamr_triton._pamr_steps_kernel, STEPS_ARGS,
        dict(config, DILATIONS=tuple(dilations), PAD=pad), num_stages=1, **options)
    # original PAMR's 48 taps on a 128 tile, 32 rows a pass: none (Triton 3.8), 12 B (3.6); in
    # one pass 0.9 KB and 24 KB
    assert spills <= (0 if len(dilations) <= 2 else 16), spills
    ptx = steps_kernel.asm['ptx']
    assert 'fma.rn.f32' in ptx  # tl.fma, as torch's addcmul_
    assert 'mul.rn.f32' in ptx or 'mul.f32' in ptx  # the first product, rounded on its own


@pytest.mark.parametrize('interleaved', [False, True])
def test_cluster_sums_kernel_adds_only(interleaved):
    from mmdiffseg.generators import ordered_sums_triton
    config = ordered_sums_triton.kernel_config(13 if interleaved else 64, interleaved)  # iSeg's
    warps = config.pop('num_warps')
    compiled, spills = compile_for_h200(
        ordered_sums_triton._cluster_sums_kernel,
        dict(rows_ptr='*fp32', starts_ptr='*i64', counts_ptr='*i64', out_ptr='*fp32',
             **ints('col_start', 'col_end', 'width')),
        config, num_warps=warps)
    ptx = compiled.asm['ptx']
    assert 'add.f32' in ptx and 'fma.rn.f32' not in ptx and spills == 0


@pytest.mark.parametrize('arch', [80, 89])
def test_the_largest_shared_memory_needs_fit_other_supported_gpus(arch):
    """The configurations with the most shared memory (SD 1's 160-wide heads; original PAMR's 48
    taps; iSeg's cluster sums) fit sm_80's 163 KiB and sm_89's 99 KiB. On sm_75 / sm_70 the map
    kernels' wide-head tiles do not (128 KiB: ``benchmarks/results/triton_registers.md``), hence
    ``mmdiffseg.triton_support.MIN_CAPABILITY``."""
    assert (arch // 10, arch % 10) >= MIN_CAPABILITY
    from mmdiffseg.attention import map_kernel
    from mmdiffseg.generators import ordered_sums_triton, pamr_triton
    for dtype in ('float16', 'float32'):
        tiles = map_kernel._tiles(64, 64, 160, BYTES[dtype])
        options = {key: tiles.pop(key) for key in ('num_warps', 'num_stages')}
        dot = dict(UPCAST=False, PRECISION='ieee' if dtype == 'float32' else 'tf32',
                   HEAD_DIM=160, HEAD_ALIGN=8)
        for kernel, extra in ((map_kernel._row_lse_kernel, {}),
                              (map_kernel._head_map_kernel, dict(ACCUMULATE=True))):
            compile_for(arch, kernel, signature(dtype),
                        dict(tiles, **extra, **dot, **unit_strides(kernel)), **options)
    dilations = (1, 2, 4, 8, 12, 24)
    config = pamr_triton.kernel_config(24, *pamr_triton.launch_plan(24, 8, 64))
    options = {key: config.pop(key) for key in ('num_warps', 'enable_fp_fusion')}
    compile_for(arch, pamr_triton._pamr_steps_kernel, STEPS_ARGS,
                dict(config, DILATIONS=dilations, PAD=24), num_stages=1, **options)
    config = ordered_sums_triton.kernel_config(64, False)
    warps = config.pop('num_warps')
    compile_for(arch, ordered_sums_triton._cluster_sums_kernel,
                dict(rows_ptr='*fp32', starts_ptr='*i64', counts_ptr='*i64', out_ptr='*fp32',
                     **ints('col_start', 'col_end', 'width')), config, num_warps=warps)
