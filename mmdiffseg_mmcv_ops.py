"""mmcv without compiled kernels (``mmcv-lite``, the default of ``tools/install.sh``): ``mmcv.ops``
importable whatever is imported first.

mmcv-lite has every ``mmcv.ops`` module, but each asks ``mmcv.utils.ext_loader.load_ext`` for the
compiled ``mmcv._ext`` at import and fails, and mmseg imports ``mmcv.ops`` (``from mmseg.apis
import init_model``, ``import mmseg.utils``): without a patch in place first, that fails with
``No module named 'mmcv._ext'``. This module is the patch. It lives outside the :mod:`mmdiffseg`
package so that it loads without torch or mmcv:

* :func:`patch_module` patches a module already imported (``mmdiffseg.compat`` does so);
* :func:`install` patches them as they are imported, whoever imports them; ``tools/install.sh``
  runs it at interpreter start through a ``.pth`` file (:func:`write_pth`) for ``MMCV_OPS=lite``.

Only where ``mmcv._ext`` does not load: ``load_ext`` returns stand-ins that raise a clear error if
a compiled-only op is called, and ``MultiScaleDeformableAttention`` (Mask2Former's pixel decoder)
takes mmcv's own PyTorch path on every device (its forward calls the CUDA kernel only when
``IS_CUDA_AVAILABLE`` is set). With compiled ops nothing changes.

    python -m mmdiffseg_mmcv_ops --write-pth | --remove-pth    # into / from site-packages
"""
import importlib
import importlib.abc
import importlib.util
import sys
import sysconfig
import types
from pathlib import Path

COMPILED_OPS_FIX = 'MMCV_OPS=compiled bash tools/install.sh (README: "Install")'
LOADER, DEFORMABLE = 'mmcv.utils.ext_loader', 'mmcv.ops.multi_scale_deform_attn'
PTH_NAME = 'mmdiffseg_mmcv_ops.pth'
#: a .pth line runs when it starts with "import"; it does nothing once this module is uninstalled
PTH_LINE = ("import importlib.util as u; u.find_spec('mmdiffseg_mmcv_ops') and "
            "__import__('mmdiffseg_mmcv_ops').install()\n")


def compiled_ops_error():
    """Why ``mmcv._ext`` (mmcv's compiled kernels) does not import; None when it does."""
    try:
        importlib.import_module('mmcv._ext')
    except ImportError as err:
        return err
    return None


def compiled_ops_load() -> bool:
    """Whether ``mmcv._ext`` (mmcv's compiled kernels) imports."""
    return compiled_ops_error() is None


def kernels_not_built(name: str, funcs) -> types.SimpleNamespace:
    """Stand-in for ``mmcv.utils.ext_loader.load_ext`` when mmcv has no compiled kernels."""
    def stand_in(func):
        def call(*args, **kwargs):
            raise RuntimeError(f'mmcv op {func!r} needs mmcv\'s compiled kernels (mmcv.{name}), '
                               f'which this mmcv build lacks: {COMPILED_OPS_FIX}')
        return call
    return types.SimpleNamespace(**{func: stand_in(func) for func in funcs})


def patch_module(name: str, module) -> None:
    """Patch ``mmcv.utils.ext_loader`` or ``mmcv.ops.multi_scale_deform_attn`` (just imported)
    when mmcv has no compiled kernels; anything else is left alone."""
    if name == LOADER and module.load_ext is not kernels_not_built and not compiled_ops_load():
        module.load_ext = kernels_not_built
    elif name == DEFORMABLE and not compiled_ops_load():
        module.IS_CUDA_AVAILABLE = False


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader, name):
        self.loader, self.name = loader, name

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        patch_module(self.name, module)

    def __getattr__(self, attr):  # get_source, get_filename... for tracebacks and inspect
        return getattr(self.loader, attr)


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the two patched modules through the other finders and patches them once loaded."""

    def find_spec(self, name, path=None, target=None):
        if name not in (LOADER, DEFORMABLE):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, name)
                return spec
        return None


def install() -> None:
    """Patch the two modules when (or if already) imported; idempotent."""
    if not any(isinstance(finder, PatchOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport())
    for name in (LOADER, DEFORMABLE):
        if name in sys.modules:
            patch_module(name, sys.modules[name])


def site_folder() -> Path:
    """The site folder that holds mmcv (the user site where pip fell back to a user install,
    whose site-packages this user may not write), else this interpreter's site-packages."""
    spec = importlib.util.find_spec('mmcv')
    if spec is not None and spec.origin:
        return Path(spec.origin).parent.parent
    return Path(sysconfig.get_paths()['purelib'])


def write_pth(folder=None) -> Path:
    """The ``.pth`` that runs :func:`install` at interpreter start, in ``folder`` (default
    :func:`site_folder`)."""
    path = Path(folder or site_folder()) / PTH_NAME
    path.write_text(PTH_LINE)
    return path


def remove_pth(folder=None) -> None:
    for where in [folder] if folder else {site_folder(), Path(sysconfig.get_paths()['purelib'])}:
        (Path(where) / PTH_NAME).unlink(missing_ok=True)


if __name__ == '__main__':
    if sys.argv[1:] == ['--write-pth']:
        print(f'mmcv-lite ops patch runs at interpreter start: {write_pth()}')
    elif sys.argv[1:] == ['--remove-pth']:
        remove_pth()
    else:
        sys.exit('usage: python -m mmdiffseg_mmcv_ops --write-pth | --remove-pth')
