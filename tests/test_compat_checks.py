"""mmdiffseg.compat in detail: which modules the lazy-import check takes for built in, what
``mmcv_has_compiled_ops`` reports and warns, that ``apply`` twice wraps nothing twice, and which
warnings its filters silence."""
import warnings

import pytest
from mmengine.config import config, utils

import mmdiffseg_mmcv_ops
from mmdiffseg import compat


def test_only_the_standard_library_folders_are_built_in(tmp_path, monkeypatch):
    """A module in ``stdlib`` or ``platstdlib`` is built in; one in their ``site-packages`` /
    ``dist-packages``, or in a folder whose name merely starts like ``stdlib``'s, is not."""
    lib, plat = tmp_path / 'lib', tmp_path / 'plat'
    modules = {'r12_std': lib, 'r12_plat': plat, 'r12_site': lib / 'site-packages',
               'r12_dist': plat / 'dist-packages', 'r12_sibling': tmp_path / 'lib2'}
    for name, folder in modules.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f'{name}.py').write_text('')
        monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setattr(compat.sysconfig, 'get_paths',
                        lambda: {'stdlib': str(lib), 'platstdlib': str(plat)})
    original = utils._is_builtin_module.__wrapped__  # mmengine's own check, unpatched
    for module in (utils, config):
        monkeypatch.setattr(module, '_is_builtin_module', original)
    # mmengine's own check then says False for all five
    monkeypatch.setattr(utils, 'PYTHON_ROOT_DIR', str(tmp_path / 'elsewhere'))
    monkeypatch.setattr(utils, 'SYSTEM_PYTHON_PREFIX', str(tmp_path / 'elsewhere'))
    assert not any(original(name) for name in modules)
    compat._patch_builtin_module_check()
    check = utils._is_builtin_module
    assert check is config._is_builtin_module  # the one mmengine's Config calls
    assert {name: check(name) for name in modules} == dict(
        r12_std=True, r12_plat=True, r12_site=False, r12_dist=False, r12_sibling=False)


def test_a_second_apply_wraps_nothing_twice(monkeypatch):
    """``apply`` again (``_APPLIED`` reset) leaves each patched object as it was."""
    from mmcv.utils import ext_loader
    from mmengine.runner import checkpoint

    before = (utils._is_builtin_module, config._is_builtin_module, checkpoint.torch,
              ext_loader.load_ext)
    monkeypatch.setattr(compat, '_APPLIED', False)
    compat.apply()
    assert (utils._is_builtin_module, config._is_builtin_module, checkpoint.torch,
            ext_loader.load_ext) == before
    assert not hasattr(utils._is_builtin_module.__wrapped__, '__mmdiffseg_patched__')


def test_apply_silences_the_stock_warnings_by_their_start_only(monkeypatch):
    """The filters drop the UserWarnings that START with a stock notice; a warning that only
    quotes one, or one of another category, is shown."""
    monkeypatch.setattr(compat, '_APPLIED', False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        compat.apply()  # its filters go in front of 'always'
        for message in compat.STOCK_WARNINGS + ('pkg_resources is deprecated as an API', ):
            warnings.warn(message + ' (stock)', UserWarning)
        warnings.warn('my hook: The draw is False here', UserWarning)
        warnings.warn('torch.meshgrid: in an upcoming release (quoted)', DeprecationWarning)
    assert [str(w.message) for w in caught] == [
        'my hook: The draw is False here', 'torch.meshgrid: in an upcoming release (quoted)']


def test_mmcv_with_loading_compiled_ops_reports_them_without_a_warning(monkeypatch):
    monkeypatch.setattr(mmdiffseg_mmcv_ops, 'compiled_ops_error', lambda: None)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert compat.mmcv_has_compiled_ops() is True


def test_compiled_ops_that_fail_to_load_warn_with_the_error_and_the_fix(monkeypatch):
    """mmcv._ext exists but was built for another torch: False, and a warning naming the import
    error and the rebuild command."""
    error = ImportError('mmcv/_ext.so: undefined symbol: _ZN3c104cuda')
    monkeypatch.setattr(mmdiffseg_mmcv_ops, 'compiled_ops_error', lambda: error)
    real = compat.find_spec
    monkeypatch.setattr(compat, 'find_spec',
                        lambda name: object() if name == 'mmcv._ext' else real(name))
    with pytest.warns(UserWarning, match='undefined symbol') as record:
        assert compat.mmcv_has_compiled_ops() is False
    assert mmdiffseg_mmcv_ops.COMPILED_OPS_FIX in str(record[0].message)


def test_without_mmcv_the_error_names_the_install(monkeypatch):
    monkeypatch.setattr(compat, 'find_spec', lambda name: None)
    with pytest.raises(ImportError, match=r'mmcv is not installed: bash tools/install\.sh'):
        compat.mmcv_has_compiled_ops()
