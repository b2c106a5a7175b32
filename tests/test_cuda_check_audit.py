"""Gaps found by a mutation audit of mmdiffseg.cuda_check (CPU: torch's CUDA state stood in for)."""
import torch

from mmdiffseg import cuda_check


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
