"""The mmengine 0.10.7 / mmcv 2.1.0 work-arounds (mmdiffseg.compat) fix what they claim to fix."""
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config, config, utils
from mmengine.logging import HistoryBuffer

import mmdiffseg  # noqa: F401  (applies the work-arounds)
import mmdiffseg_mmcv_ops
from mmdiffseg import compat

REPO = Path(__file__).resolve().parents[1]


def test_mmengine_checkpoint_with_history_buffer_loads(tmp_path):
    """torch>=2.6 defaults to weights_only=True, which rejects the HistoryBuffer that every
    mmengine runner checkpoint carries in its message hub; mmengine's loaders must still read it."""
    from mmengine.runner import checkpoint
    from mmengine.runner.checkpoint import _load_checkpoint

    path = tmp_path / 'iter_1.pth'
    buffer = HistoryBuffer()
    buffer.update(0.5)
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': {'loss': buffer}}, path)

    with pytest.raises(Exception, match='weights_only|Unpickl'):
        torch.load(path)  # torch's own default stays safe
    with pytest.raises(Exception, match='weights_only|Unpickl'):
        checkpoint.torch.load(path, weights_only=True)  # a caller's explicit choice is kept
    ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert ckpt['message_hub']['loss'].current() == 0.5


def test_baseless_config_with_stdlib_import_loads(tmp_path):
    cfg_file = tmp_path / 'plain.py'
    cfg_file.write_text(textwrap.dedent('''
        import json
        import os
        data_root = os.path.join('data', 'VOCdevkit')
        size = json.loads('[512]')
    '''))
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.data_root == 'data/VOCdevkit' and cfg.size == [512]


def test_standard_modules_are_built_in_from_a_virtual_environment(tmp_path, monkeypatch):
    """In a venv mmengine looks for the standard library under the venv's prefix and takes
    ``json`` for a third-party module (its lazy import then raises a bare RuntimeError)."""
    from mmengine.config import utils
    monkeypatch.setattr(utils, 'PYTHON_ROOT_DIR', str(tmp_path / 'venv'))   # as in a venv
    assert utils._is_builtin_module('json') and utils._is_builtin_module('collections.abc')
    assert not utils._is_builtin_module('numpy') and not utils._is_builtin_module('mmseg')
    test_baseless_config_with_stdlib_import_loads(tmp_path)


def test_mmseg_scoped_base_resolves(tmp_path):
    cfg_file = tmp_path / 'child.py'
    cfg_file.write_text("_base_ = ['mmseg::_base_/default_runtime.py']\nfoo = 1\n")
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.default_scope == 'mmseg' and cfg.foo == 1


def test_compat_apply_is_idempotent():
    from mmengine.runner import checkpoint

    patched = checkpoint.torch
    mmdiffseg.compat.apply()
    mmdiffseg.compat._APPLIED = False
    mmdiffseg.compat.apply()
    assert checkpoint.torch is patched  # not wrapped a second time
    assert checkpoint.torch._torch is torch


# --- mmcv without compiled kernels (mmcv-lite, the default install) ----------------------------

LITE_SCRIPT = '''
import json, sys, torch
sys.modules["mmcv._ext"] = None          # as mmcv-lite: no compiled kernels
torch.cuda.is_available = lambda: True   # as on a GPU machine: mmcv would pick its CUDA kernel
import mmdiffseg
from mmcv.ops import MultiScaleDeformableAttention, nms, point_sample
from mmcv.ops import multi_scale_deform_attn as msda
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

torch.manual_seed(0)
attn = MultiScaleDeformableAttention(embed_dims=16, num_heads=2, num_levels=2, num_points=2,
                                     batch_first=True).eval()
shapes = torch.tensor([[4, 4], [2, 2]])
value = torch.rand(1, 20, 16)
query = torch.rand(1, 5, 16)
points = torch.rand(1, 5, 2, 2)
torch.Tensor.is_cuda = property(lambda self: True)   # the forward's device test says "CUDA"
out = attn(query, value=value, reference_points=points, spatial_shapes=shapes,
           level_start_index=torch.tensor([0, 16]))
del torch.Tensor.is_cuda
offsets = attn.sampling_offsets(query).view(1, 5, 2, 2, 2, 2)
weights = attn.attention_weights(query).view(1, 5, 2, 4).softmax(-1).view(1, 5, 2, 2, 2)
normalizer = torch.stack([shapes[..., 1], shapes[..., 0]], -1)
locations = points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
expected = attn.output_proj(multi_scale_deformable_attn_pytorch(
    attn.value_proj(value).view(1, 20, 2, 8), shapes, locations, weights)) + query
try:
    nms(torch.rand(3, 4), torch.rand(3), 0.5)
    error = ''
except RuntimeError as err:
    error = str(err)
sampled = point_sample(torch.full((1, 1, 4, 4), 3.0), torch.full((1, 1, 2), 0.5))  # grid_sample
print(json.dumps(dict(flag=msda.IS_CUDA_AVAILABLE, max_diff=float((out - expected).abs().max()),
                      error=error, sampled=sampled.item())))
'''


def test_mmcv_ops_without_compiled_kernels_import_and_take_pytorch_paths(tmp_path):
    """mmcv-lite: every op module imports; MultiScaleDeformableAttention runs mmcv's PyTorch
    implementation even where mmcv would call its CUDA kernel; a compiled-only op names the fix."""
    env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    done = subprocess.run([sys.executable, '-c', LITE_SCRIPT], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result['flag'] is False
    assert result['max_diff'] < 1e-6
    assert "mmcv op 'nms' needs mmcv's compiled kernels" in result['error']
    assert 'MMCV_OPS=compiled bash tools/install.sh' in result['error']
    assert result['sampled'] == 3.0


ORDER_SCRIPT = '''
import json, site, sys
sys.modules["mmcv._ext"] = None          # as mmcv-lite: no compiled kernels
# as without the .pth file (this environment may have one), then, for "with", this one
sys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != "PatchOnImport"]
if sys.argv[1]:
    site.addsitedir(sys.argv[1])         # runs the .pth file there, as at interpreter start
try:
    from mmseg.apis import init_model    # mmseg first: it imports mmcv.ops
    from mmcv.ops import multi_scale_deform_attn as msda
    result = dict(flag=msda.IS_CUDA_AVAILABLE, mmdiffseg="mmdiffseg" in sys.modules)
except ImportError as err:
    result = dict(error=str(err))
print(json.dumps(result))
'''


def test_mmseg_imported_before_mmdiffseg_works_with_the_pth_file(tmp_path):
    """mmcv-lite: `from mmseg.apis import init_model` before `import mmdiffseg` fails on
    mmcv._ext, unless the .pth file tools/install.sh writes runs mmdiffseg_mmcv_ops at start
    (without importing mmdiffseg, torch or mmcv there)."""
    pth = mmdiffseg_mmcv_ops.write_pth(tmp_path)
    assert pth.read_text().startswith('import ')  # site runs only lines that start so
    env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    results = {}
    for name, folder in (('with', str(tmp_path)), ('without', '')):
        done = subprocess.run([sys.executable, '-c', ORDER_SCRIPT, folder], env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    assert 'mmcv._ext' in results['without']['error']  # mmseg cannot import: the problem
    assert results['with'] == dict(flag=False, mmdiffseg=False)
    mmdiffseg_mmcv_ops.remove_pth(tmp_path)
    assert not pth.exists()


def test_the_pth_file_goes_beside_mmcv(tmp_path, monkeypatch):
    """A user without a venv whose pip fell back to a user install: the .pth was written into
    the system site-packages (PermissionError, the install stopped at step 3); it goes into the
    site folder that holds mmcv, and the removal looks there and in site-packages."""
    import importlib.util
    import sysconfig
    user_site, system_site = tmp_path / 'user', tmp_path / 'system'
    (user_site / 'mmcv').mkdir(parents=True)
    (user_site / 'mmcv' / '__init__.py').write_text('')
    system_site.mkdir()
    real = importlib.util.find_spec
    mmcv = importlib.machinery.ModuleSpec('mmcv', None,
                                          origin=str(user_site / 'mmcv' / '__init__.py'))
    monkeypatch.setattr(importlib.util, 'find_spec',
                        lambda name, *a: mmcv if name == 'mmcv' else real(name, *a))
    monkeypatch.setattr(sysconfig, 'get_paths', lambda *a, **k: {'purelib': str(system_site)})
    assert mmdiffseg_mmcv_ops.write_pth() == user_site / mmdiffseg_mmcv_ops.PTH_NAME
    (system_site / mmdiffseg_mmcv_ops.PTH_NAME).write_text('')   # an older install's
    mmdiffseg_mmcv_ops.remove_pth()
    assert not list(user_site.glob('*.pth')) and not list(system_site.glob('*.pth'))


# --- mmcv with compiled kernels (MMCV_OPS=compiled) ---------------------------------------------

def _compiled_ops() -> bool:
    try:
        import mmcv._ext  # noqa: F401
    except ImportError:
        return False
    return True


needs_compiled = pytest.mark.skipif(not _compiled_ops(), reason='mmcv without compiled ops '
                                    '(mmcv-lite); the compiled build: MMCV_OPS=compiled')


@needs_compiled
def test_compiled_mmcv_ops_are_left_alone():
    from mmcv.ops import multi_scale_deform_attn as msda
    from mmcv.utils import IS_CUDA_AVAILABLE, ext_loader

    assert ext_loader.load_ext is not mmdiffseg_mmcv_ops.kernels_not_built
    assert msda.IS_CUDA_AVAILABLE == IS_CUDA_AVAILABLE
    assert hasattr(msda.ext_module, 'ms_deform_attn_forward')


@needs_compiled
@pytest.mark.skipif(not torch.cuda.is_available(), reason='mmcv has this kernel for CUDA only')
def test_deformable_attention_kernel_equals_pytorch_path():
    """Both paths of MultiScaleDeformableAttention give the same output and gradients."""
    from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                                  multi_scale_deformable_attn_pytorch)
    torch.manual_seed(0)
    shapes = torch.tensor([[16, 16], [8, 8], [4, 4]], device='cuda')
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    value = torch.rand(2, int((shapes[:, 0] * shapes[:, 1]).sum()), 4, 8, device='cuda',
                       dtype=torch.float64, requires_grad=True)
    locations = torch.rand(2, 30, 4, 3, 4, 2, device='cuda', dtype=torch.float64)
    weights = torch.rand(2, 30, 4, 3, 4, device='cuda', dtype=torch.float64).softmax(-1)
    kernel = MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations, weights, 64)
    (grad_kernel,) = torch.autograd.grad(kernel.sum(), value)
    pytorch = multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)
    (grad_pytorch,) = torch.autograd.grad(pytorch.sum(), value)
    torch.testing.assert_close(kernel, pytorch)
    torch.testing.assert_close(grad_kernel, grad_pytorch)


def test_stock_notices_are_kept_out_of_a_runs_output():
    import logging
    import subprocess
    import sys
    from mmengine.logging import MMLogger
    from mmdiffseg import compat
    # in a fresh process: pytest restores the warning filters of its collection phase
    warned = subprocess.run([sys.executable, '-c', (
        'import warnings, mmdiffseg\n'
        'for m in ("The draw is False, it means that the hook for visualization will not take", '
        '"torch.meshgrid: in an upcoming release, it will be required to pass the indexing", '
        '"pkg_resources is deprecated as an API", "a warning of this project"):\n'
        '    warnings.warn(m, UserWarning)\n')], capture_output=True, text=True, timeout=120)
    assert warned.returncode == 0, warned.stderr
    assert 'a warning of this project' in warned.stderr
    assert 'draw is False' not in warned.stderr and 'meshgrid' not in warned.stderr
    assert 'pkg_resources' not in warned.stderr
    logger = MMLogger.get_instance('stock-notices-test')
    compat.quiet_stock_notices(logger)
    compat.quiet_stock_notices(logger)
    assert len(logger.filters) == 1
    kept = []

    class Keep(logging.Handler):
        def emit(self, record):
            kept.append(record.getMessage())
    logger.addHandler(Keep())
    for message in ('The prefix is not set in metric class IoUMetric.',
                    '"FileClient" will be deprecated in future. Please use io functions',
                    '"HardDiskBackend" is the alias of "LocalBackend"',
                    'The prefix of the label cache is wrong'):
        logger.warning(message)
    assert kept == ['The prefix of the label cache is wrong']


def test_mmcv_lite_reports_no_compiled_ops_without_a_warning():
    """mmcv-lite has no mmcv._ext: no compiled ops, and nothing to rebuild (no warning)."""
    import warnings
    if _compiled_ops():
        pytest.skip('mmcv with compiled ops')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert mmdiffseg.compat.mmcv_has_compiled_ops() is False


def test_only_a_missing_pkg_resources_is_reworded(monkeypatch):
    """A config's own missing module is raised as it is; only pkg_resources gets the pin."""
    def missing(name):
        def fromfile(path):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
        return fromfile
    monkeypatch.setattr(Config, 'fromfile', missing('my_plugin'))
    with pytest.raises(ModuleNotFoundError, match='my_plugin'):
        compat.config_fromfile('c.py')
    monkeypatch.setattr(Config, 'fromfile', missing('pkg_resources'))
    with pytest.raises(ImportError, match=r'c\.py: .*setuptools>=77,<82'):
        compat.config_fromfile('c.py')


def test_only_the_standard_library_folders_are_built_in(tmp_path, monkeypatch):
    """A module in ``stdlib`` or ``platstdlib`` is built in; one in their ``site-packages`` /
    ``dist-packages``, or in a folder whose name merely starts like ``stdlib``'s, is not."""
    lib, plat = tmp_path / 'lib', tmp_path / 'plat'
    modules = {'fake_std': lib, 'fake_plat': plat, 'fake_site': lib / 'site-packages',
               'fake_dist': plat / 'dist-packages', 'fake_sibling': tmp_path / 'lib2'}
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
        fake_std=True, fake_plat=True, fake_site=False, fake_dist=False, fake_sibling=False)


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


MISSING_SCRIPT = '''
import sys
sys.modules[sys.argv[1]] = None  # as if not installed (find_spec raises ValueError for None)
import importlib.util
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == sys.argv[1] else real(name, *a)
try:
    import mmdiffseg
except ModuleNotFoundError as err:
    print(err.name, '|', err)
'''


@pytest.mark.parametrize('package', ['mmcv', 'mmseg', 'mmengine'])
def test_importing_without_a_package_of_the_stack_names_the_install(tmp_path, package):
    """A bare "No module named 'mmcv'" came from deep in the imports (and the tools' -h, and
    python -m mmdiffseg.cuda_check), the fix unnamed."""
    env = dict(os.environ, PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    done = subprocess.run([sys.executable, '-c', MISSING_SCRIPT, package], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    name, message = done.stdout.strip().split(' | ')
    assert name == package, done.stderr[-2000:]
    assert message == (f'mmdiffseg needs {package}, not installed for {sys.executable}: run bash '
                       'tools/install.sh in the mmdiffseg checkout with this Python (PYTHON=... '
                       'bash tools/install.sh for another one; docs/install.md)')


def test_every_missing_package_is_named_at_once(monkeypatch):
    """Two packages missing: both named, so one install fixes both (naming the first alone
    meant a rerun stopped at the next)."""
    real = compat.find_spec
    monkeypatch.setattr(compat, 'find_spec',
                        lambda name: None if name in ('mmdet', 'diffusers') else real(name))
    with pytest.raises(ModuleNotFoundError, match=r'^mmdiffseg needs mmdet, diffusers, not '
                                                  r'installed for ') as refused:
        compat.check_stack()
    assert refused.value.name == 'mmdet'
