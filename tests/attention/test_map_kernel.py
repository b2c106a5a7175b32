"""The Triton map kernels, run on CPU through Triton's interpreter in a subprocess.

``TRITON_INTERPRET=1`` must be set before a kernel is decorated, and other tests of this process may
already have imported Triton or the kernel module, so the interpreted cases
(``interpreted_map_kernel.py``) run in their own pytest process with the variable set.
"""
import importlib.util
from pathlib import Path

import pytest
from interpreted import run_interpreted

import mmdiffseg.attention.head_maps as head_maps

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                    reason='triton is not installed (a test extra: pip install -e ".[tests]")')
def test_map_kernels_under_the_triton_interpreter():
    run_interpreted(HERE / 'interpreted_map_kernel.py', passed=30)


def test_auto_backend_is_torch_on_cpu_and_for_masked_layers():
    assert head_maps.resolve_backend('auto', 'cpu', masked=False) == 'torch'
    assert head_maps.resolve_backend('triton', 'cuda', masked=True) == 'torch'
    with pytest.raises(ValueError, match="map_backend must be one of"):
        head_maps.resolve_backend('cuda', 'cpu', masked=False)


def test_triton_backend_without_triton_names_the_package(monkeypatch):
    monkeypatch.setattr(head_maps, '_map_kernel', lambda: None)
    with pytest.raises(ValueError, match=r'triton package is not installed \(pip install triton\)'):
        head_maps.resolve_backend('triton', 'cpu', masked=False)


def test_a_kernel_module_that_cannot_be_imported_is_no_kernel(monkeypatch):
    """Without triton, importing the kernel module fails: the lookup answers None (once, then
    from its cache), so 'auto' takes the torch path and 'triton' is refused naming the package."""
    import sys

    import mmdiffseg.attention
    monkeypatch.setitem(sys.modules, 'mmdiffseg.attention.map_kernel', None)  # import fails
    monkeypatch.delattr(mmdiffseg.attention, 'map_kernel', raising=False)
    monkeypatch.setattr(head_maps, '_MAP_KERNEL', {})
    assert head_maps._map_kernel() is None and head_maps._MAP_KERNEL['module'] is None
    assert head_maps.resolve_backend('auto', 'cuda', masked=False) == 'torch'
    with pytest.raises(ValueError, match=r'triton package is not installed \(pip install triton\)'):
        head_maps.resolve_backend('triton', 'cuda', masked=False)


def test_a_triton_that_breaks_on_import_is_named_and_not_imported_on_the_cpu(monkeypatch):
    """A triton that raises something else than ImportError on import: 'auto' on the CPU does
    not import it (it raised there), on a GPU it takes the torch path, and 'triton' is refused
    naming the error and the fix."""
    import builtins

    import mmdiffseg.attention
    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if 'map_kernel' in (args[2] if len(args) > 2 and args[2] else ()):
            raise RuntimeError('triton: libcuda.so not found')
        return real_import(name, *args, **kwargs)

    monkeypatch.delattr(mmdiffseg.attention, 'map_kernel', raising=False)
    monkeypatch.setattr(head_maps, '_MAP_KERNEL', {})
    monkeypatch.setattr(builtins, '__import__', broken)
    assert head_maps.resolve_backend('auto', 'cpu', masked=False) == 'torch'
    assert head_maps._MAP_KERNEL == {}   # not looked up
    assert head_maps.resolve_backend('auto', 'cuda', masked=False) == 'torch'
    with pytest.raises(ValueError, match=r"cannot run here: the Triton kernels fail to import "
                                         r"\(RuntimeError: triton: libcuda.so not found\); "
                                         r'reinstall triton; use'):
        head_maps.resolve_backend('triton', 'cuda', masked=False)


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
def test_compiled_kernels_refuse_cpu_tensors_with_the_fix():
    import torch
    from mmdiffseg.attention import map_kernel
    if map_kernel.INTERPRETED:
        pytest.skip('this process runs Triton interpreted')
    q = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match='TRITON_INTERPRET=1'):
        map_kernel.row_lse(q, q, 0.25)


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
@pytest.mark.parametrize('head_dim', [8, 36, 40, 64, 80, 160])
@pytest.mark.parametrize('tokens', [(1, 77), (4, 4), (64, 77), (4096, 4096)])
def test_tiles_are_dot_shapes_covering_the_head(head_dim, tokens):
    """``tl.dot`` needs every side >= 16 and a power of two: the query and key tiles (also for
    a 1x1 grid) and both head-dim parts, which together cover the head."""
    from mmdiffseg.attention import map_kernel
    for element_bytes in (2, 4):
        tiles = map_kernel._tiles(*tokens, head_dim, element_bytes)
        parts = [tiles['BLOCK_M'], tiles['BLOCK_N'], tiles['BLOCK_D']] + (
            [tiles['REST_D']] if tiles['REST_D'] else [])
        assert all(p >= 16 and p & (p - 1) == 0 for p in parts), tiles
        assert tiles['BLOCK_D'] + tiles['REST_D'] >= head_dim
        assert tiles['BLOCK_D'] < head_dim or tiles['REST_D'] == 0


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
def test_head_layout_aligns_only_heads_of_8_element_multiples():
    """Head strides are passed in units of 8 only where the head dim and both head strides are
    multiples of 8; a head stride of 12 (a slice of wider heads) stays in elements."""
    import torch

    from mmdiffseg.attention import map_kernel
    sd = torch.zeros(2, 77, 8, 40).transpose(1, 2)  # (B, H, N, d) view of (B, N, H*d)
    strides, layout = map_kernel._head_layout(sd, sd)
    assert layout == dict(HEAD_DIM=40, HEAD_ALIGN=8)
    assert strides == [77 * 320, 5, 320, 1] * 2
    sliced = torch.zeros(2, 77, 8, 12)[..., :8].transpose(1, 2)  # head dim 8, head stride 12
    for query, key in ((sliced, sd[..., :8]), (sd[..., :8], sliced)):
        strides, layout = map_kernel._head_layout(query, key)
        assert layout == dict(HEAD_DIM=8, HEAD_ALIGN=1)
        assert strides[1] == query.stride(1) and strides[5] == key.stride(1)


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
def test_float32_logits_never_use_tf32_and_mixed_inputs_are_refused():
    import torch

    from mmdiffseg.attention import map_kernel
    q = torch.zeros(1, 1, 16, 16)
    assert map_kernel._dot_options(q) == dict(UPCAST=False, PRECISION='ieee')
    assert map_kernel._dot_options(q.bfloat16()) == dict(UPCAST=True, PRECISION='ieee')
    with pytest.raises(ValueError, match=r'map kernel: query and key differ \(torch\.float32 on '
                                         r'cpu vs torch\.float16 on cpu\)'):
        map_kernel.row_lse(q, q.half(), 0.25)


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
@pytest.mark.parametrize('head_dim, parts', [(24, (32, 0)), (56, (64, 0)), (40, (32, 16)),
                                             (36, (32, 16)), (64, (64, 0)), (80, (64, 16))])
def test_head_dims_split_in_two_dots_only_where_that_multiplies_less(head_dim, parts):
    """Two dots (a power of two plus a rest) only where they are narrower than one dot padded to
    the next power of two: 24 = 16 + 16 and 56 = 32 + 32 stay one dot of 32 / 64."""
    from mmdiffseg.attention import map_kernel
    tiles = map_kernel._tiles(64, 77, head_dim, 2)
    assert (tiles['BLOCK_D'], tiles['REST_D']) == parts


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
def test_query_and_key_on_different_devices_are_refused():
    import torch

    from mmdiffseg.attention import map_kernel
    q = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match=r'map kernel: query and key differ \(torch\.float32 on '
                                         r'cpu vs torch\.float32 on meta\)'):
        map_kernel.row_lse(q, q.to('meta'), 0.25)
