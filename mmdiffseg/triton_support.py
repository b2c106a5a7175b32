"""Where the package's Triton kernels may run: the one rule behind every ``backend='auto'``.

The kernels (attention maps, PAMR, iSeg's cluster sums) run on CUDA GPUs of compute capability 8.0
or newer (A100, RTX 30xx / 40xx, A10, L4, L40S, H100 / H200, Blackwell), the architectures CI
compiles them for (``tests/test_triton_kernels_compile.py``: sm_80, sm_89, sm_90); AMD GPUs under
ROCm torch (seen as ``cuda`` devices) are not among them. Older GPUs
(T4, V100: sm_75 / sm_70) get the PyTorch paths: there the map kernels' tiles for SD 1's widest
heads need 128 KiB of shared memory, more than such a GPU has, and bfloat16 has no tensor cores.
So does a machine where Triton cannot build its kernel launchers (it compiles them with a C compiler
against Python's headers at first use): a slim CUDA container without gcc or ``Python.h``.
On the CPU, Triton's interpreter (``TRITON_INTERPRET=1``) runs them, for tests.
``MMDIFFSEG_KERNELS=torch`` in the environment makes every ``'auto'`` take the PyTorch paths (the
way around a kernel that Triton fails to compile on a GPU, named in that failure's error).
"""
from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import shutil
import sys
import sysconfig
import traceback
from typing import Optional, Union

import torch
from mmengine.logging import print_log

#: oldest CUDA compute capability the kernels are compiled and checked for
MIN_CAPABILITY = (8, 0)
#: the environment variable that turns the kernels off: ``torch`` (else ``auto``, the default)
KERNELS_ENV = 'MMDIFFSEG_KERNELS'


def interpreting() -> bool:
    """Whether Triton runs kernels in its interpreter (on CPU tensors)."""
    return os.environ.get('TRITON_INTERPRET') == '1'


@functools.lru_cache(maxsize=None)
def _installed() -> bool:
    return importlib.util.find_spec('triton') is not None


@functools.lru_cache(maxsize=None)
def _capability(index: int):
    return torch.cuda.get_device_capability(index)


@functools.lru_cache(maxsize=None)
def _build_tools_problem() -> Optional[str]:
    """Why Triton cannot build its launchers here (None where it can): it looks for a C compiler
    as ``$CC``, ``gcc`` or ``clang`` and includes ``Python.h`` from the interpreter's scheme
    (``triton.runtime.build``), unless ``triton.knobs.build.impl`` builds them another way."""
    import triton
    if getattr(getattr(getattr(triton, 'knobs', None), 'build', None), 'impl', None):
        return None
    if not (os.environ.get('CC') or shutil.which('gcc') or shutil.which('clang')):
        return ('Triton finds no C compiler to build its kernel launchers with (install gcc, '
                'e.g. apt-get install gcc, or set CC)')
    scheme = sysconfig.get_default_scheme()
    scheme = 'posix_prefix' if scheme == 'posix_local' else scheme
    include = sysconfig.get_paths(scheme=scheme)['include']
    if not os.path.isfile(os.path.join(include, 'Python.h')):
        version = f'{sys.version_info[0]}.{sys.version_info[1]}'
        return (f'Triton builds its kernel launchers against Python.h, which is not in {include} '
                f'(install the Python headers, e.g. apt-get install python{version}-dev)')
    return None


def triton_problem(device: Union[str, torch.device]) -> Optional[str]:
    """None where the Triton kernels can run on ``device``; else why not (for error messages)."""
    chosen = os.environ.get(KERNELS_ENV, 'auto')
    if chosen not in ('auto', 'torch'):
        raise ValueError(f"{KERNELS_ENV}={chosen!r}: set it to 'torch' (the PyTorch paths "
                         "everywhere) or 'auto', or unset it")
    if chosen == 'torch':
        return f'{KERNELS_ENV}=torch is set'
    if not _installed():
        return 'the triton package is not installed (pip install triton)'
    device = torch.device(device)
    if device.type != 'cuda':
        return None if interpreting() else (f'Triton kernels need a CUDA device (or '
                                            f'TRITON_INTERPRET=1 on the CPU), got {device}')
    if torch.version.hip is not None:
        return (f'{device} is an AMD GPU (ROCm torch {torch.version.hip}): the Triton kernels are '
                'compiled and checked for NVIDIA GPUs only; the PyTorch paths run there')
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = _capability(index)
    if (major, minor) < MIN_CAPABILITY:
        return (f'cuda:{index} is sm_{major}{minor}; the Triton kernels need compute capability '
                f'{MIN_CAPABILITY[0]}.{MIN_CAPABILITY[1]} or newer (A100, RTX 30xx and later)')
    return _build_tools_problem()


def auto_takes_triton(device: Union[str, torch.device]) -> bool:
    """Whether ``backend='auto'`` takes the Triton kernels on ``device``; the first time a CUDA
    device cannot (:func:`triton_problem`), one warning says why and that the slower PyTorch
    paths run."""
    problem = triton_problem(device)
    if problem is not None and torch.device(device).type == 'cuda':
        note_kernels_unused(problem)
    return problem is None


@functools.lru_cache(maxsize=None)
def note_kernels_unused(problem: str) -> None:
    """Log once per ``problem`` that a GPU runs the PyTorch paths instead of the kernels."""
    print_log(f'The Triton kernels do not run here, the slower PyTorch paths do: {problem} '
              '(python -m mmdiffseg.cuda_check shows this for each GPU)', logger='current',
              level=logging.WARNING)


def on_device_of(tensor: torch.Tensor):
    """The context a Triton launch on ``tensor`` needs: Triton launches on the current CUDA device,
    which is not the tensor's after ``--device cuda:1`` without ``torch.cuda.set_device``; nothing
    for CPU tensors (the interpreter)."""
    cuda = tensor.device.type == 'cuda'
    return torch.cuda.device(tensor.device) if cuda else contextlib.nullcontext()


@contextlib.contextmanager
def kernel_launch(tensor: torch.Tensor, kernel: str, option: str = ''):
    """Launch the Triton kernel ``kernel`` on ``tensor``'s device (:func:`on_device_of`). Where
    Triton fails to compile or launch it (its compiler, ``ptxas``, the launcher build: the error
    comes from Triton's code), the error names the way around it, the PyTorch paths: the
    environment variable, and ``option`` (the one that picks them for this kernel, if any)."""
    with on_device_of(tensor):
        try:
            yield
        except torch.OutOfMemoryError:
            raise
        except Exception as exc:
            if not _raised_by_triton(exc):
                raise
            raise RuntimeError(
                f"Triton failed to compile or launch mmdiffseg's {kernel} kernel on "
                f'{tensor.device} ({type(exc).__name__}: {exc}); the PyTorch paths run '
                f'everywhere: set {KERNELS_ENV}=torch in the environment'
                + (f' (or pass {option})' if option else '') + ', and report it with the '
                'output of python -m mmdiffseg.cuda_check') from exc


def _raised_by_triton(exc: BaseException) -> bool:
    """Whether ``exc`` is one of Triton's or was raised in Triton's (or its build's) code."""
    if type(exc).__module__.split('.')[0] == 'triton':
        return True
    frames = traceback.extract_tb(exc.__traceback__)
    return bool(frames) and f'{os.sep}triton{os.sep}' in frames[-1].filename


def ceil_div(a: int, b: int) -> int:
    """``triton.cdiv`` on the host without its call overhead (a constexpr function there: ~7 us
    a call in Triton 3.8, several per launch)."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """``triton.next_power_of_2`` on the host (see :func:`ceil_div`)."""
    return n and 1 << (n - 1).bit_length()
