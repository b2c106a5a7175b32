"""Which GPUs get the Triton kernels: every ``backend='auto'`` follows one rule (compute capability
8.0+), older GPUs get the PyTorch paths, an explicit ``'triton'`` there is refused with the fix.
The GPU is described by its capability (no CUDA device is needed)."""
import importlib.util

import pytest
import torch

from mmdiffseg import triton_support
from mmdiffseg.attention.head_maps import resolve_backend
from mmdiffseg.generators import ordered_sums
from mmdiffseg.generators.pamr import PAMR

pytestmark = pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                                reason='triton is not installed (a test extra)')
GPU = torch.device('cuda', 0)


@pytest.fixture
def capability(monkeypatch):
    def set_capability(major, minor):
        monkeypatch.setattr(triton_support, '_capability', lambda index: (major, minor))
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    return set_capability


@pytest.mark.parametrize('major, minor', [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0)])
def test_ampere_and_newer_take_every_kernel(capability, major, minor):
    capability(major, minor)
    assert triton_support.triton_problem(GPU) is None
    assert resolve_backend('auto', GPU, masked=False) == 'triton'
    assert PAMR(backend='auto').backend_for(GPU) == 'triton'
    assert ordered_sums._resolve('auto', GPU) == 'triton'


@pytest.mark.parametrize('major, minor', [(7, 0), (7, 5)])  # V100, T4
def test_older_gpus_take_the_pytorch_paths_and_refuse_triton_with_the_fix(capability, major,
                                                                          minor):
    capability(major, minor)
    problem = triton_support.triton_problem(GPU)
    assert problem.startswith(f'cuda:0 is sm_{major}{minor}') and '8.0 or newer' in problem
    assert resolve_backend('auto', GPU, masked=False) == 'torch'
    assert PAMR(backend='auto').backend_for(GPU) == 'graph'
    assert ordered_sums._resolve('auto', GPU) == 'torch'
    with pytest.raises(ValueError, match=rf"map_backend='triton' cannot run here: cuda:0 is "
                                         rf"sm_{major}{minor}.*use map_backend='torch' or 'auto'"):
        resolve_backend('triton', GPU, masked=False)
    with pytest.raises(ValueError,
                       match=rf"PAMR\(backend='triton'\) cannot run here: .*sm_{major}"):
        PAMR(backend='triton').backend_for(GPU)
    with pytest.raises(ValueError,
                       match=r"backend='triton'\) cannot run here: .*'auto' or 'torch'"):
        ordered_sums._resolve('triton', GPU)


def test_amd_gpus_under_rocm_take_the_pytorch_paths(capability, monkeypatch):
    """ROCm torch shows AMD GPUs as cuda devices with their gfx version as the capability
    (9.4 for an MI300X): 'auto' took kernels compiled and checked for NVIDIA GPUs only."""
    capability(9, 4)
    monkeypatch.setattr(torch.version, 'hip', '6.4.43482')
    assert triton_support.triton_problem(GPU).startswith('cuda:0 is an AMD GPU (ROCm torch 6.4')
    assert resolve_backend('auto', GPU, masked=False) == 'torch'
    assert PAMR(backend='auto').backend_for(GPU) == 'graph'
    assert ordered_sums._resolve('auto', GPU) == 'torch'


def test_the_cpu_runs_kernels_only_interpreted(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    assert 'TRITON_INTERPRET=1' in triton_support.triton_problem('cpu')
    assert ordered_sums._resolve('auto', torch.device('cpu')) == 'torch'
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    assert triton_support.triton_problem('cpu') is None
    assert ordered_sums._resolve('auto', torch.device('cpu')) == 'triton'
    assert resolve_backend('auto', 'cpu', masked=False) == 'torch'  # maps: the CPU's own path


def test_without_triton_every_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(triton_support, '_installed', lambda: False)
    assert triton_support.triton_problem(GPU) == ('the triton package is not installed '
                                                  '(pip install triton)')
    assert PAMR(backend='auto').backend_for(GPU) == 'graph'
    with pytest.raises(ValueError, match=r'pip install triton'):
        ordered_sums._resolve('triton', GPU)


def test_launches_go_to_the_tensors_gpu():
    """Triton launches on the current CUDA device: the kernels enter the tensors' device first
    (``--device cuda:1`` without ``torch.cuda.set_device``); CPU tensors (the interpreter) need
    nothing. A fake CUDA tensor stands for one on the second GPU."""
    import contextlib

    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode():
        second_gpu = torch.empty(2, device='cuda:1')
    guard = triton_support.on_device_of(second_gpu)
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert isinstance(triton_support.on_device_of(torch.empty(2)), contextlib.nullcontext)


def test_only_triton_interpret_1_turns_the_interpreter_on(monkeypatch):
    for value in ('0', '', 'yes'):
        monkeypatch.setenv('TRITON_INTERPRET', value)
        assert 'TRITON_INTERPRET=1 on the CPU), got cpu' in triton_support.triton_problem('cpu')


def test_a_gpu_without_an_index_is_the_current_one(capability, monkeypatch):
    """``'cuda'`` means the current device (here described as GPU 1, a T4)."""
    capability(7, 5)
    monkeypatch.setattr(torch.cuda, 'current_device', lambda: 1)
    assert triton_support.triton_problem('cuda').startswith('cuda:1 is sm_75; ')


def test_the_host_helpers_match_tritons():
    import triton
    assert [triton_support.ceil_div(a, 4) for a in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]
    assert [triton_support.next_power_of_2(n) for n in (0, 1, 2, 3, 4, 5, 64, 65)] == \
        [0, 1, 2, 4, 4, 8, 64, 128]
    for n in range(1, 300):
        assert triton_support.next_power_of_2(n) == triton.next_power_of_2(n)
        assert triton_support.ceil_div(n, 7) == triton.cdiv(n, 7)


@pytest.mark.parametrize('device', ['meta', 'mps'])
def test_devices_other_than_cuda_and_cpu_are_refused_by_name(monkeypatch, device):
    """Only CUDA devices are asked for their capability; any other device (not only the CPU) is
    refused outside the interpreter with the device named."""
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(triton_support, '_capability',
                        lambda index: pytest.fail('capability asked of a non-CUDA device'))
    assert triton_support.triton_problem(device) == (
        f'Triton kernels need a CUDA device (or TRITON_INTERPRET=1 on the CPU), got {device}')
