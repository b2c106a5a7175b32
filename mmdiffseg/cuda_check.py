"""Why torch sees no CUDA device, and the fix: one diagnosis for the install check, the tools'
``--device`` and the pre-flight check of training and testing.

The usual cause on a GPU machine is a torch build newer than the NVIDIA driver: PyPI's torch for
Linux is a CUDA 13 build, which needs driver 580 or newer (CUDA's minor-version compatibility:
CUDA 11.x needs >= 450.80, 12.x >= 525.60, 13.x >= 580). The others: a CPU-only torch build, no
driver, ``CUDA_VISIBLE_DEVICES`` hiding every GPU.

``python -m mmdiffseg.cuda_check`` prints the diagnosis (exit status 0 when CUDA is usable, else
1).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

import torch

#: oldest Linux driver per CUDA major version that torch's bundled CUDA runtime runs on
MIN_DRIVER = {11: (450, 80), 12: (525, 60), 13: (580, 0)}
OLDER_CUDA_TORCH = ('TORCH_INDEX_URL=https://download.pytorch.org/whl/cu{cuda} '
                    'bash tools/install.sh (a torch built for CUDA {dot}; TORCH_SPEC / '
                    'TORCHVISION_SPEC pick a version that pytorch.org builds for it)')


@dataclass
class CudaProblem:
    """Why CUDA cannot be used here (``reason``) and what to do about it (``fix``)."""
    reason: str
    fix: str

    def __str__(self) -> str:
        return f'{self.reason}; fix: {self.fix}'


def gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU with a loaded driver, whatever torch says."""
    gpus = Path('/proc/driver/nvidia/gpus')
    return (gpus.is_dir() and any(gpus.iterdir())) or Path('/dev/nvidia0').exists()


def nvidia_driver_version() -> Optional[Tuple[int, ...]]:
    """The NVIDIA driver's version (``(535, 104, 5)``) from ``nvidia-smi``; None without one."""
    smi = shutil.which('nvidia-smi')
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, '--query-gpu=driver_version', '--format=csv,noheader'],
                             capture_output=True, text=True, timeout=20).stdout
        return tuple(int(p) for p in out.splitlines()[0].strip().split('.'))
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _init_error() -> str:
    """torch's own words for the failed CUDA start (first line), or '' when it gives none."""
    try:
        torch.cuda.init()
    except Exception as err:  # noqa: BLE001 (any failure is the message we want)
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ''


def cuda_problem() -> Optional[CudaProblem]:
    """None when torch can use a CUDA device; else why not, with the fix."""
    if torch.cuda.is_available():
        return None
    build = f'torch {torch.__version__}'
    if torch.version.cuda is None:
        return CudaProblem(f'{build} is a CPU-only build',
                           'install a CUDA build: bash tools/install.sh (PyPI\'s torch for Linux '
                           'is a CUDA build), or ' +
                           OLDER_CUDA_TORCH.format(cuda='126', dot='12.6'))
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    if visible is not None and visible.strip() in ('', '-1'):
        return CudaProblem(f'CUDA_VISIBLE_DEVICES={visible!r} hides every GPU',
                           'unset CUDA_VISIBLE_DEVICES or list the GPUs to use (e.g. 0)')
    cuda = torch.version.cuda
    major = int(cuda.split('.')[0])
    driver = nvidia_driver_version()
    needed = MIN_DRIVER.get(major)
    if driver is not None and needed is not None and driver[:2] < needed:
        have = '.'.join(map(str, driver))
        return CudaProblem(
            f'the NVIDIA driver {have} is too old for {build} (CUDA {cuda} needs driver '
            f'>= {needed[0]}{f".{needed[1]:02d}" if needed[1] else ""})',
            'update the driver, or install a torch for the driver you have: ' +
            (OLDER_CUDA_TORCH.format(cuda='126', dot='12.6') if driver[:2] >= MIN_DRIVER[12]
             else OLDER_CUDA_TORCH.format(cuda='118', dot='11.8')))
    detail = _init_error()
    if driver is None and not gpu_present():
        return CudaProblem(f'no NVIDIA GPU or driver on this machine ({build}, CUDA {cuda}'
                           + (f': {detail})' if detail else ')'),
                           'run on a GPU machine (nvidia-smi should list its GPUs)')
    return CudaProblem(f'{build} (CUDA {cuda}) cannot start CUDA'
                       + (f': {detail}' if detail else ''),
                       'check that nvidia-smi lists the GPU and that this process may use it')


def warn_if_gpu_unused(stream=None) -> None:
    """One line on ``stream`` when the machine has a GPU that torch cannot use (after the install;
    when an automatic device choice is about to fall back to the CPU, tens of times slower)."""
    problem = cuda_problem() if gpu_present() else None  # no nvidia-smi, no CUDA start otherwise
    if problem is not None:
        print(f'warning: this machine has an NVIDIA GPU but torch cannot use it, so the CPU is '
              f'used: {problem}', file=stream or sys.stderr)


def auto_device() -> str:
    """The automatic device choice of the tools: ``cuda`` where torch can use a GPU, else ``cpu``
    (with :func:`warn_if_gpu_unused`'s line when a GPU is there but unusable)."""
    if torch.cuda.is_available():
        return 'cuda'
    warn_if_gpu_unused()
    return 'cpu'


def main() -> int:
    """Print the diagnosis; with CUDA, each GPU and whether the package's Triton kernels run on
    it (:mod:`mmdiffseg.triton_support`) or the PyTorch paths do."""
    problem = cuda_problem()
    if problem is not None:
        print(f'CUDA not available: {problem}')
        return 1
    from .triton_support import triton_problem
    print(f'CUDA available: torch {torch.__version__} (CUDA {torch.version.cuda})')
    for index in range(torch.cuda.device_count()):
        major, minor = torch.cuda.get_device_capability(index)
        why_not = triton_problem(torch.device('cuda', index))
        path = 'run' if why_not is None else f'not used, the PyTorch paths run: {why_not}'
        print(f'  cuda:{index} {torch.cuda.get_device_name(index)} (sm_{major}{minor}): Triton '
              f'kernels {path}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
