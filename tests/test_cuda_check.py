"""Why torch sees no CUDA device: the diagnosis and where users meet it (tools, pre-flight)."""
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from mmdiffseg import cuda_check, preflight
from mmdiffseg.apis.builders import pick_device
from mmdiffseg.apis.io import UserInputError

pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason='diagnoses machines where torch cannot use CUDA')


@pytest.fixture
def cuda_build(monkeypatch):
    """A CUDA 13 torch build with every GPU visible, as on a user's GPU machine."""
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)


@pytest.mark.skipif(torch.version.cuda is None, reason='needs a CUDA build of torch')
def test_cuda_build_without_a_driver_says_so_in_torch_words(monkeypatch):
    """This machine as it is: PyPI's CUDA torch, no NVIDIA driver: torch's own error is quoted."""
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    problem = cuda_check.cuda_problem()
    assert problem.reason.startswith('no NVIDIA GPU or driver on this machine')
    assert f'CUDA {torch.version.cuda}' in problem.reason
    assert 'NVIDIA driver' in problem.reason.split(':', 1)[1]  # torch.cuda.init()'s message
    assert 'GPU machine' in problem.fix


def test_a_cpu_build_names_the_install_fix(monkeypatch):
    monkeypatch.setattr(torch.version, 'cuda', None)
    problem = cuda_check.cuda_problem()
    assert 'CPU-only build' in problem.reason and 'bash tools/install.sh' in problem.fix


def test_hidden_gpus_name_the_variable(cuda_build, monkeypatch):
    for value in ('', '-1'):
        monkeypatch.setenv('CUDA_VISIBLE_DEVICES', value)
        problem = cuda_check.cuda_problem()
        assert problem.reason == f'CUDA_VISIBLE_DEVICES={value!r} hides every GPU'
        assert 'unset CUDA_VISIBLE_DEVICES' in problem.fix


@pytest.mark.parametrize('driver, index', [((535, 104, 5), 'cu126'), ((470, 57, 2), 'cu118')])
def test_a_driver_older_than_the_build_gets_a_torch_it_can_run(cuda_build, monkeypatch, driver,
                                                               index):
    """The common case on clusters: PyPI's CUDA 13 torch on a CUDA 12 (or 11) driver."""
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: driver)
    problem = cuda_check.cuda_problem()
    have = '.'.join(map(str, driver))
    assert problem.reason.startswith(f'the NVIDIA driver {have} is too old for torch')
    assert 'CUDA 13.0 needs driver >= 580)' in problem.reason
    assert f'https://download.pytorch.org/whl/{index} bash tools/install.sh' in problem.fix


def test_a_new_enough_driver_falls_back_to_torch_words(cuda_build, monkeypatch):
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: (590, 1))
    monkeypatch.setattr(cuda_check, '_init_error', lambda: 'CUDA unknown error')
    problem = cuda_check.cuda_problem()
    assert problem.reason.endswith('cannot start CUDA: CUDA unknown error')


def test_tools_refuse_cuda_with_the_reason(cuda_build, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    with pytest.raises(UserInputError) as err:
        pick_device('cuda')
    assert "CUDA_VISIBLE_DEVICES='' hides every GPU" in str(err.value)
    assert 'or pass --device cpu' in str(err.value)
    assert pick_device('cpu') == 'cpu'


def test_a_gpu_given_by_index_becomes_the_current_device(monkeypatch):
    """--device cuda:1 (with two usable GPUs, as described here) makes GPU 1 the current device;
    plain cuda and the CPU leave it alone; a rank's GPU is its LOCAL_RANK. A GPU this machine
    lacks is named with the ones it has (it was a traceback from torch.cuda.set_device)."""
    calls = []
    monkeypatch.setattr('mmdiffseg.cuda_check.cuda_problem', lambda: None)
    monkeypatch.setattr(torch.cuda, 'set_device', calls.append)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.delenv('LOCAL_RANK', raising=False)
    assert [pick_device(d) for d in ('cuda:1', 'cuda', 'cpu')] == ['cuda:1', 'cuda', 'cpu']
    assert calls == ['cuda:1']
    with pytest.raises(UserInputError, match=r'--device cuda:2: this machine has 2 GPU\(s\), '
                                             r'cuda:0 to cuda:1; pass one of them'):
        pick_device('cuda:2')
    monkeypatch.setenv('LOCAL_RANK', '1')
    assert pick_device('cuda') == 'cuda:1' and pick_device('cpu') == 'cpu'
    monkeypatch.setenv('LOCAL_RANK', '2')
    with pytest.raises(UserInputError, match=r'LOCAL_RANK=2 would use cuda:2, but this machine '
                                             r'has 2 GPU\(s\): launch at most 2 rank\(s\) per '
                                             r'node \(torchrun --nproc-per-node 2\)'):
        pick_device('cuda')
    assert calls == ['cuda:1']


def test_preflight_names_the_reason_and_the_config_fix(cuda_build, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '-1')
    cfg = Config(dict(model=dict(data_preprocessor=dict(engine_dtype='float16'))))
    (item,) = preflight.check(cfg, 'train')
    assert item.what == "a CUDA device (torch sees none: CUDA_VISIBLE_DEVICES='-1' hides every GPU)"
    assert item.fix.startswith('unset CUDA_VISIBLE_DEVICES')
    assert 'model.data_preprocessor.engine_dtype=float16' in item.fix


def test_module_command_reports_and_fails_without_cuda():
    done = subprocess.run([sys.executable, '-m', 'mmdiffseg.cuda_check'], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1 and done.stdout.startswith('CUDA not available: '), done.stdout
    assert 'RuntimeWarning' not in done.stderr  # the package's import left the module to runpy


def test_module_command_lists_each_gpu_and_its_kernel_path(monkeypatch, capsys):
    """With CUDA (described here: an H200 and a T4), each GPU is listed with whether the Triton
    kernels run on it."""
    from mmdiffseg import triton_support
    gpus = [('NVIDIA H200', (9, 0)), ('Tesla T4', (7, 5))]
    monkeypatch.setattr(cuda_check, 'cuda_problem', lambda: None)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda i: gpus[i][0])
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda i: gpus[i][1])
    monkeypatch.setattr(triton_support, '_capability', lambda i: gpus[i][1])
    monkeypatch.setattr(triton_support, '_installed', lambda: True)
    assert cuda_check.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == '  cuda:0 NVIDIA H200 (sm_90): Triton kernels run'
    assert lines[2].startswith('  cuda:1 Tesla T4 (sm_75): Triton kernels not used, the PyTorch '
                               'paths run: cuda:1 is sm_75')


@pytest.mark.parametrize('driver, index', [((525, 60, 13), 'cu126'), ((525, 59), 'cu118'),
                                           ((525, 30), 'cu118'), ((450, 80), 'cu118')])
def test_the_cu126_advice_starts_at_the_cuda_12_minimum_driver(cuda_build, monkeypatch,
                                                               driver, index):
    """Driver 525.60 is the first to run a CUDA 12 torch; anything older is sent to cu118."""
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: driver)
    assert f'/whl/{index} bash tools/install.sh' in cuda_check.cuda_problem().fix


def test_a_driver_at_the_builds_minimum_is_new_enough(monkeypatch):
    """Exactly the minimum driver is not "too old": torch's own words are given instead."""
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr(cuda_check, '_init_error', lambda: 'CUDA unknown error')
    for cuda, driver in (('13.0', (580, 0, 2)), ('12.4', (525, 60)), ('11.8', (450, 80, 2))):
        monkeypatch.setattr(torch.version, 'cuda', cuda)
        monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: driver)
        assert 'cannot start CUDA' in cuda_check.cuda_problem().reason
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: (450, 66))
    assert 'CUDA 11.8 needs driver >= 450.80)' in cuda_check.cuda_problem().reason


def test_a_cpu_build_is_sent_to_the_cuda_12_6_index(monkeypatch):
    monkeypatch.setattr(torch.version, 'cuda', None)
    problem = cuda_check.cuda_problem()
    assert 'TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash' in problem.fix
    assert str(problem) == f'{problem.reason}; fix: {problem.fix}'


def test_blank_cuda_visible_devices_hides_every_gpu(cuda_build, monkeypatch):
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', ' ')
    assert cuda_check.cuda_problem().reason == "CUDA_VISIBLE_DEVICES=' ' hides every GPU"


@pytest.mark.parametrize('output, version', [('535.104.05\n535.104.05\n', (535, 104, 5)),
                                             ('580.65\n', (580, 65)), ('', None),
                                             ('N/A\n', None)])
def test_the_driver_version_is_read_from_nvidia_smi(tmp_path, monkeypatch, output, version):
    """nvidia-smi prints one line per GPU; no output or a non-number gives no version."""
    smi = tmp_path / 'nvidia-smi'
    smi.write_text(f'#!/bin/sh\nprintf {output!r}\n')
    smi.chmod(0o755)
    monkeypatch.setenv('PATH', str(tmp_path))
    assert cuda_check.nvidia_driver_version() == version
    monkeypatch.setenv('PATH', str(tmp_path / 'none'))
    assert cuda_check.nvidia_driver_version() is None


@pytest.mark.skipif(cuda_check.gpu_present(), reason='a machine without an NVIDIA GPU')
def test_no_warning_about_an_unused_gpu_without_a_gpu():
    """Without an NVIDIA GPU there is nothing to warn about (the tools call this on the CPU)."""
    import io
    stream = io.StringIO()
    cuda_check.warn_if_gpu_unused(stream)
    assert stream.getvalue() == ''


def test_a_gpu_without_nvidia_smi_is_not_called_missing(monkeypatch):
    """No driver version (no nvidia-smi) but a GPU is present: torch cannot start CUDA, which is
    not 'no NVIDIA GPU'."""
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: None)
    monkeypatch.setattr(cuda_check, 'gpu_present', lambda: True)
    monkeypatch.setattr(cuda_check, '_init_error', lambda: 'CUDA unknown error')
    problem = cuda_check.cuda_problem()
    assert problem.reason == (f'torch {torch.__version__} (CUDA 13.0) cannot start CUDA: '
                              'CUDA unknown error')
    monkeypatch.setattr(cuda_check, 'gpu_present', lambda: False)
    assert cuda_check.cuda_problem().reason.startswith('no NVIDIA GPU or driver on this machine')


def test_torch_words_are_the_first_line_of_its_error(monkeypatch):
    """torch.cuda.init()'s error is quoted by its first line; a blank one by its type."""
    def fail(message):
        def init():
            raise RuntimeError(message)
        return init
    monkeypatch.setattr(torch.cuda, 'init', fail('  no driver found\nsee the docs\n'))
    assert cuda_check._init_error() == 'no driver found'
    monkeypatch.setattr(torch.cuda, 'init', fail(''))
    assert cuda_check._init_error() == 'RuntimeError'


def test_a_cuda_start_without_an_error_adds_no_words_and_a_usable_cuda_is_no_problem(
        cuda_build, monkeypatch):
    """torch.cuda.init() that raises nothing leaves the reason without a quote (no ': ');
    torch seeing a CUDA device is no problem at all."""
    monkeypatch.setattr(torch.cuda, 'init', lambda: None)
    assert cuda_check._init_error() == ''
    build = f'torch {torch.__version__}'
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: (580, 65, 6))
    assert cuda_check.cuda_problem().reason == f'{build} (CUDA 13.0) cannot start CUDA'
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: None)
    monkeypatch.setattr(cuda_check, 'gpu_present', lambda: False)
    assert cuda_check.cuda_problem().reason == (f'no NVIDIA GPU or driver on this machine '
                                                f'({build}, CUDA 13.0)')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert cuda_check.cuda_problem() is None


def test_an_empty_nvidia_gpu_folder_is_no_gpu(tmp_path, monkeypatch):
    """/proc/driver/nvidia/gpus lists one folder per GPU: empty (a driver, no GPU) is none;
    /dev/nvidia0 alone is one (the paths are moved under tmp_path)."""
    monkeypatch.setattr(cuda_check, 'Path', lambda p: tmp_path / p.lstrip('/'))
    gpus = tmp_path / 'proc/driver/nvidia/gpus'
    assert not cuda_check.gpu_present()
    gpus.mkdir(parents=True)
    assert not cuda_check.gpu_present()
    (gpus / '0000:01:00.0').mkdir()
    assert cuda_check.gpu_present()
    (gpus / '0000:01:00.0').rmdir()
    (tmp_path / 'dev').mkdir()
    (tmp_path / 'dev/nvidia0').touch()
    assert cuda_check.gpu_present()


def test_the_automatic_device_is_cuda_where_torch_can_use_it_else_the_cpu_with_the_reason(
        monkeypatch, capsys):
    """One choice for every tool's ``--device auto`` and prefill's default: an unusable GPU is
    said on stderr (the CPU is tens of times slower), no GPU is silent."""
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert cuda_check.auto_device() == 'cuda'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(cuda_check, 'gpu_present', lambda: False)
    assert cuda_check.auto_device() == 'cpu'
    assert capsys.readouterr().err == ''
    monkeypatch.setattr(cuda_check, 'gpu_present', lambda: True)
    monkeypatch.setattr(cuda_check, 'cuda_problem',
                        lambda: cuda_check.CudaProblem('the driver is too old', 'update it'))
    assert cuda_check.auto_device() == 'cpu'
    err = capsys.readouterr().err
    assert err.startswith('warning: this machine has an NVIDIA GPU but torch cannot use it, so '
                          'the CPU is used: the driver is too old')


def test_a_gpu_given_by_index_under_a_launcher_of_several_ranks_is_refused(monkeypatch):
    """--device cuda:0 under torchrun put every rank on GPU 0 (init_dist had made each rank's
    current device its LOCAL_RANK, the compute stayed on cuda:0): out of memory, or N times
    slower, silently. One rank per node keeps the index."""
    monkeypatch.setattr('mmdiffseg.cuda_check.cuda_problem', lambda: None)
    monkeypatch.setattr(torch.cuda, 'set_device', lambda device: None)
    monkeypatch.setattr(torch.cuda, 'device_count', lambda: 2)
    monkeypatch.setenv('LOCAL_RANK', '1')
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '2')
    with pytest.raises(UserInputError, match=r'^--device cuda:0 under a launcher of 2 ranks would '
                                             r'put every rank on that one GPU: pass --device cuda'):
        pick_device('cuda:0')
    assert pick_device('cuda') == 'cuda:1'
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '1')
    assert pick_device('cuda:0') == 'cuda:0'
