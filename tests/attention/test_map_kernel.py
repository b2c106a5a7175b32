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
    run_interpreted(HERE / 'interpreted_map_kernel.py', passed=22)


def test_auto_backend_is_torch_on_cpu_and_for_masked_layers():
    assert head_maps.resolve_backend('auto', 'cpu', masked=False) == 'torch'
    assert head_maps.resolve_backend('triton', 'cuda', masked=True) == 'torch'
    with pytest.raises(ValueError, match="map_backend must be one of"):
        head_maps.resolve_backend('cuda', 'cpu', masked=False)


def test_triton_backend_without_triton_names_the_package(monkeypatch):
    monkeypatch.setattr(head_maps, '_map_kernel', lambda: None)
    with pytest.raises(ValueError, match=r'triton package is not installed \(pip install triton\)'):
        head_maps.resolve_backend('triton', 'cpu', masked=False)


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='triton is not installed')
def test_compiled_kernels_refuse_cpu_tensors_with_the_fix():
    import torch
    from mmdiffseg.attention import map_kernel
    if map_kernel.INTERPRETED:
        pytest.skip('this process runs Triton interpreted')
    q = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match='TRITON_INTERPRET=1'):
        map_kernel.row_lse(q, q, 0.25)
