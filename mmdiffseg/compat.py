"""Work-arounds for known problems of mmengine 0.10.7 / mmcv 2.1.0 on torch >= 2.6 and Python 3.11.

Applied once, when :mod:`mmdiffseg` is imported (tools import it first):

* ``torch.load`` defaults to ``weights_only=True`` since torch 2.6, but mmengine's checkpoints
  pickle ``HistoryBuffer`` and numpy objects, so ``--resume``, ``load_from`` and ``tools/test.py``
  fail with ``UnpicklingError``. mmengine's own checkpoint loaders are wrapped to pass
  ``weights_only=False`` (checkpoints written by mmengine runners are trusted input, as before
  torch 2.6). Other ``torch.load`` callers keep torch's safe default.
* mmengine decides whether a config is a "lazy import" config by asking if each imported module is
  built in; on Python 3.11 frozen standard modules (``os``, ``os.path``...) report the origin
  ``'frozen'`` and are taken for third-party modules, so a base-less config that imports ``os``
  fails with a bare ``RuntimeError``. In a virtual environment mmengine also takes every other
  standard module (``json``, ``collections``, ``math``...) for a third-party one: it looks for
  them under the venv's prefix, not the base Python's. Frozen modules and the modules of the
  standard library's folders (``sysconfig``'s ``stdlib``, ``platstdlib``) are built in.
* ``mmseg::`` config bases need ``pkg_resources`` at run time: the install pins
  ``setuptools<82``; :func:`config_fromfile` (the tools read configs with it) turns its absence
  into a clear message, and the deprecation warning setuptools prints on every import of it (by
  mmengine, by mmseg's bases) is silenced: it asks mmengine's authors to act, not the user.
* mmcv built without its compiled kernels (``mmcv-lite``, i.e. ``MMCV_WITH_OPS=0``: the default of
  ``tools/install.sh``, no compiler, any torch) has every ``mmcv.ops`` Python module, but each one
  asks ``ext_loader.load_ext`` for ``mmcv._ext`` at import and fails. :mod:`mmdiffseg_mmcv_ops`
  (outside this package, also run at interpreter start by the ``.pth`` file ``tools/install.sh``
  writes, so that mmseg imports in any order) makes the loader return stand-ins that raise a
  clear error only if a compiled-only op is called, and sends ``MultiScaleDeformableAttention``
  (Mask2Former's pixel decoder) to mmcv's own ``multi_scale_deformable_attn_pytorch`` on every
  device (mmcv already takes it on the CPU). ``point_sample`` is plain ``grid_sample`` in mmcv and
  needs nothing. With compiled ops present nothing is changed.
* Stock notices that ask nothing of the user are kept out of a run's output: the warnings of
  mmseg's ``SegVisualizationHook`` (``draw=False``, the configs' choice: ``tools/test.py
  --show-dir`` draws predictions) and of ``torch.meshgrid`` called without ``indexing`` inside
  mmdet, and (:func:`quiet_stock_notices`, on a runner's logger) mmengine's ``FileClient`` /
  ``HardDiskBackend`` deprecation notices and ``IoUMetric``'s "prefix is not set".
"""
from __future__ import annotations

import functools
import logging
import os
import sys
import sysconfig
import warnings
from importlib.util import find_spec

import mmdiffseg_mmcv_ops

_APPLIED = False
#: the start of each stock mmengine / mmseg log notice :func:`quiet_stock_notices` drops
STOCK_NOTICES = ('The prefix is not set in metric class', '"FileClient" will be deprecated',
                 '"HardDiskBackend" is the alias of')
#: the start of each stock warning :func:`apply` silences (see the module docstring)
STOCK_WARNINGS = ('The draw is False', 'torch.meshgrid: in an upcoming release')


def _trusting_torch_load(load):
    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        kwargs.setdefault('weights_only', False)
        return load(*args, **kwargs)

    return wrapper


class _CheckpointTorch:
    """``torch`` as seen from :mod:`mmengine.runner.checkpoint`, with a trusting ``load``."""

    def __init__(self, torch_module):
        self._torch = torch_module
        self.load = _trusting_torch_load(torch_module.load)

    def __getattr__(self, name):
        return getattr(self._torch, name)


def _patch_checkpoint_loading() -> None:
    from mmengine.runner import checkpoint

    if not isinstance(checkpoint.torch, _CheckpointTorch):
        checkpoint.torch = _CheckpointTorch(checkpoint.torch)


def _patch_builtin_module_check() -> None:
    from mmengine.config import config, utils

    original = utils._is_builtin_module
    if getattr(original, '__mmdiffseg_patched__', False):
        return

    stdlib = tuple(os.path.join(os.path.abspath(sysconfig.get_paths()[key]), '')
                   for key in ('stdlib', 'platstdlib'))

    @functools.wraps(original)
    def is_builtin_module(module_name: str) -> bool:
        if not module_name.startswith('.'):
            spec = find_spec(module_name.split('.')[0])
            origin = getattr(spec, 'origin', None)
            if origin in ('frozen', 'built-in'):
                return True
            parts = os.path.abspath(origin).split(os.sep) if origin else []
            if os.sep.join(parts).startswith(stdlib) and \
                    not {'site-packages', 'dist-packages'} & set(parts):
                return True
        return original(module_name)

    is_builtin_module.__mmdiffseg_patched__ = True
    utils._is_builtin_module = is_builtin_module
    config._is_builtin_module = is_builtin_module


def config_fromfile(path):
    """``mmengine.Config.fromfile(path)``; a failure for want of ``pkg_resources`` (which
    ``mmseg::`` bases need and setuptools>=82 no longer ships) names the pin to install."""
    from mmengine.config import Config
    try:
        return Config.fromfile(path)
    except ModuleNotFoundError as exc:
        if exc.name != 'pkg_resources':
            raise
        raise ImportError(f'{path}: mmengine needs `pkg_resources` to read `mmseg::` config bases, '
                          'and setuptools>=82 no longer ships it: pip install "setuptools>=77,<82"'
                          ) from exc


def mmcv_has_compiled_ops() -> bool:
    """Whether ``mmcv._ext`` (mmcv's compiled kernels) imports; warns when it exists but fails
    (built for another torch), since the PyTorch fallbacks then run instead."""
    if find_spec('mmcv') is None:
        raise ImportError('mmcv is not installed: bash tools/install.sh '
                          '(or pip install mmcv-lite==2.1.0)')
    error = mmdiffseg_mmcv_ops.compiled_ops_error()
    if error is None:
        return True
    if find_spec('mmcv._ext') is not None:
        warnings.warn(f'mmcv\'s compiled ops do not load ({error}); using the PyTorch paths. '
                      f'Rebuild them for this torch: {mmdiffseg_mmcv_ops.COMPILED_OPS_FIX}')
    return False


def _patch_mmcv_ops_without_kernels() -> None:
    """:mod:`mmdiffseg_mmcv_ops`' patch, on the modules themselves (imported here)."""
    from mmcv.utils import ext_loader
    mmdiffseg_mmcv_ops.patch_module(mmdiffseg_mmcv_ops.LOADER, ext_loader)
    from mmcv.ops import multi_scale_deform_attn
    mmdiffseg_mmcv_ops.patch_module(mmdiffseg_mmcv_ops.DEFORMABLE, multi_scale_deform_attn)


class _StockNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(STOCK_NOTICES)


def quiet_stock_notices(logger: logging.Logger) -> None:
    """Drops :data:`STOCK_NOTICES` from ``logger`` (a runner's ``MMLogger``; idempotent)."""
    if not any(isinstance(f, _StockNotices) for f in logger.filters):
        logger.addFilter(_StockNotices())


#: the packages importing mmdiffseg needs (tools/install.sh installs them, mmcv in either build)
STACK = ('mmengine', 'mmcv', 'mmseg', 'mmdet', 'diffusers', 'transformers')


def check_stack() -> None:
    """Name the packages of :data:`STACK` missing here, with the install command (a bare
    ``ModuleNotFoundError`` came from deep in the imports, the fix unnamed)."""
    missing = [name for name in STACK if find_spec(name) is None]
    if missing:
        raise ModuleNotFoundError(
            f'mmdiffseg needs {", ".join(missing)}, not installed for {sys.executable}: run '
            'bash tools/install.sh in the mmdiffseg checkout with this Python (PYTHON=... bash '
            'tools/install.sh for another one; docs/install.md)', name=missing[0])


def apply() -> None:
    """Apply every work-around once (idempotent), after :func:`check_stack`."""
    global _APPLIED
    if _APPLIED:
        return
    check_stack()
    for message in ('pkg_resources is deprecated', ) + STOCK_WARNINGS:
        warnings.filterwarnings('ignore', message=message, category=UserWarning)
    _patch_mmcv_ops_without_kernels()
    _patch_checkpoint_loading()
    _patch_builtin_module_check()
    _APPLIED = True
