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
BUILD_TOOLS_PROBLEM = triton_support._build_tools_problem  # (the capability fixture replaces it)


@pytest.fixture
def capability(monkeypatch):
    def set_capability(major, minor):
        monkeypatch.setattr(triton_support, '_capability', lambda index: (major, minor))
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    monkeypatch.setattr(triton_support, '_build_tools_problem', lambda: None)  # (this machine's)
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


@pytest.fixture
def build_tools(monkeypatch, tmp_path):
    """This machine's compilers and headers, as a slim CUDA container would have them: no
    ``$CC``, ``gcc`` or ``clang`` on the path unless named, ``Python.h`` where the test says."""
    import shutil
    import sysconfig

    import triton
    monkeypatch.delenv('CC', raising=False)
    knobs = getattr(triton, 'knobs', None)
    if knobs is not None and hasattr(knobs, 'build'):
        monkeypatch.setattr(knobs.build, 'impl', None)

    def set_tools(compilers=(), headers=True):
        include = tmp_path / 'include'
        include.mkdir(exist_ok=True)
        header = include / 'Python.h'
        header.write_text('') if headers else header.unlink(missing_ok=True)
        monkeypatch.setattr(shutil, 'which', lambda name: f'/usr/bin/{name}'
                            if name in compilers else None)
        monkeypatch.setattr(sysconfig, 'get_paths', lambda scheme=None: {'include': str(include)})
        monkeypatch.setattr(triton_support, '_build_tools_problem', BUILD_TOOLS_PROBLEM)
        BUILD_TOOLS_PROBLEM.cache_clear()
    yield set_tools
    BUILD_TOOLS_PROBLEM.cache_clear()


def test_a_machine_without_a_c_compiler_takes_the_pytorch_paths_and_says_so(
        capability, build_tools, monkeypatch):
    """Triton compiles its launchers with a C compiler at the first launch: on a slim CUDA image
    without one, every capture stopped with Triton's RuntimeError; 'auto' takes the PyTorch
    paths now, with one logged line saying why, and 'triton' is refused naming the fix."""
    capability(9, 0)
    logged = []
    monkeypatch.setattr(triton_support, 'print_log', lambda msg, **kw: logged.append(msg))
    triton_support.note_kernels_unused.cache_clear()
    build_tools(compilers=())
    problem = triton_support.triton_problem(GPU)
    assert 'no C compiler' in problem and 'apt-get install gcc, or set CC' in problem
    assert resolve_backend('auto', GPU, masked=False) == 'torch'
    assert PAMR(backend='auto').backend_for(GPU) == 'graph'
    assert ordered_sums._resolve('auto', GPU) == 'torch'
    assert len(logged) == 1 and 'slower PyTorch paths' in logged[0] and 'gcc' in logged[0]
    with pytest.raises(ValueError, match=r"map_backend='triton' cannot run here: .*install gcc"):
        resolve_backend('triton', GPU, masked=False)
    for tools, env in ((('gcc',), {}), (('clang',), {}), ((), {'CC': '/opt/cc'})):
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        build_tools(compilers=tools)
        assert triton_support.triton_problem(GPU) is None, (tools, env)
    monkeypatch.delenv('CC')
    build_tools(compilers=('gcc',), headers=False)
    assert 'Python.h, which is not in ' in triton_support.triton_problem(GPU)
    assert '-dev)' in triton_support.triton_problem(GPU)


def test_a_gpu_that_takes_the_kernels_logs_nothing(capability, monkeypatch):
    capability(8, 0)
    logged = []
    monkeypatch.setattr(triton_support, 'print_log', lambda msg, **kw: logged.append(msg))
    triton_support.note_kernels_unused.cache_clear()
    assert PAMR(backend='auto').backend_for(GPU) == 'triton'
    assert resolve_backend('auto', GPU, masked=False) == 'triton'
    assert ordered_sums._resolve('auto', 'cpu') == 'torch' and not logged


def test_mmdiffseg_kernels_torch_turns_every_kernel_off(capability, monkeypatch):
    """The way around a kernel Triton fails to compile on a user's GPU, for the tools too (they
    have no backend option): every 'auto' takes the PyTorch paths, 'triton' is refused naming
    the variable, and another value is refused naming the two it takes."""
    capability(9, 0)
    monkeypatch.setenv('MMDIFFSEG_KERNELS', 'torch')
    assert triton_support.triton_problem(GPU) == 'MMDIFFSEG_KERNELS=torch is set'
    assert resolve_backend('auto', GPU, masked=False) == 'torch'
    assert PAMR(backend='auto').backend_for(GPU) == 'graph'
    assert ordered_sums._resolve('auto', GPU) == 'torch'
    with pytest.raises(ValueError, match="map_backend='triton' cannot run here: "
                                         "MMDIFFSEG_KERNELS=torch is set"):
        resolve_backend('triton', GPU, masked=False)
    monkeypatch.setenv('MMDIFFSEG_KERNELS', 'auto')
    assert triton_support.triton_problem(GPU) is None
    monkeypatch.setenv('MMDIFFSEG_KERNELS', 'off')
    with pytest.raises(ValueError, match=r"MMDIFFSEG_KERNELS='off': set it to 'torch' .* or "
                                         r"'auto', or unset it"):
        triton_support.triton_problem(GPU)


def _raise_in(filename: str, exc: BaseException):
    """Raise ``exc`` from code that reads as ``filename``'s."""
    exec(compile('raise exc', filename, 'exec'), {'exc': exc})


@pytest.mark.parametrize('where', ['class', 'frame'])
def test_a_kernel_triton_fails_to_build_names_the_way_around_it(where):
    """Triton's errors (its classes, or raised in its code: the launcher build's RuntimeError,
    ptxas' CalledProcessError) become one naming the kernel, the device, MMDIFFSEG_KERNELS and
    the kernel's own option where it has one; the original is chained."""
    from mmdiffseg.generators.pamr_triton import PAMR_OPTION
    tensor = torch.zeros(2)
    if where == 'class':
        error = type('CompilationError', (Exception,), {'__module__': 'triton.compiler.errors'})
        filename, raised = __file__, error('at 12:4: unsupported')
    else:
        filename = '/venv/site-packages/triton/runtime/build.py'
        raised = RuntimeError('Failed to find C compiler')
    with pytest.raises(RuntimeError, match=r"Triton failed to compile or launch mmdiffseg's PAMR "
                                           r"steps kernel on cpu \((CompilationError: at 12:4|"
                                           r"RuntimeError: Failed to find C).*set "
                                           r"MMDIFFSEG_KERNELS=torch in the environment \(or "
                                           r"pass pamr_backend='torch' \(SeeDiff's\), or "
                                           r"PAMR\(backend='torch'\)\), and report") as failed:
        with triton_support.kernel_launch(tensor, 'PAMR steps', PAMR_OPTION):
            _raise_in(filename, raised)
    assert failed.value.__cause__ is not None
    with pytest.raises(RuntimeError, match=r'set MMDIFFSEG_KERNELS=torch in the environment, '
                                           'and report'):   # the cluster sums: no option
        with triton_support.kernel_launch(tensor, 'cluster sums'):
            _raise_in(filename, raised)


@pytest.mark.parametrize('error, filename', [
    (ValueError('ours'), __file__),
    (torch.OutOfMemoryError('CUDA out of memory'), '/venv/site-packages/triton/runtime/jit.py')])
def test_other_errors_at_a_launch_pass_unchanged(error, filename):
    """Errors of our own code, and running out of memory (even in Triton's code: the jobs
    explain it), are not Triton's to explain."""
    with pytest.raises(type(error)) as failed:
        with triton_support.kernel_launch(torch.zeros(2), 'PAMR steps'):
            _raise_in(filename, error)
    assert failed.value is error


def test_a_launch_runs_in_its_tensors_device_context(monkeypatch):
    """Triton launches on the current CUDA device: ``--device cuda:1`` without
    ``torch.cuda.set_device`` launched on cuda:0 with pointers on cuda:1; each launch enters
    :func:`on_device_of` its tensor."""
    import contextlib
    entered, tensor = [], torch.zeros(2)

    @contextlib.contextmanager
    def recording(of):
        entered.append(of)
        yield
        entered.append('left')
    monkeypatch.setattr(triton_support, 'on_device_of', recording)
    with triton_support.kernel_launch(tensor, 'PAMR steps'):
        assert entered == [tensor]
    assert entered == [tensor, 'left']
