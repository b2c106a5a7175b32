"""The mmengine 0.10.7 work-arounds (mmdiffseg.compat) fix what they claim to fix."""
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer

import mmdiffseg  # noqa: F401  (applies the work-arounds)


def test_mmengine_checkpoint_with_history_buffer_loads(tmp_path):
    """torch>=2.6 defaults to weights_only=True, which rejects the HistoryBuffer that every
    mmengine runner checkpoint carries in its message hub; mmengine's loaders must still read it."""
    from mmengine.runner.checkpoint import _load_checkpoint

    path = tmp_path / 'iter_1.pth'
    buffer = HistoryBuffer()
    buffer.update(0.5)
    torch.save({'state_dict': {'w': torch.ones(2)}, 'message_hub': {'loss': buffer}}, path)

    with pytest.raises(Exception, match='weights_only|Unpickl'):
        torch.load(path)  # torch's own default stays safe
    ckpt = _load_checkpoint(str(path), map_location='cpu')
    assert torch.equal(ckpt['state_dict']['w'], torch.ones(2))
    assert ckpt['message_hub']['loss'].current() == 0.5


def test_baseless_config_with_stdlib_import_loads(tmp_path):
    cfg_file = tmp_path / 'plain.py'
    cfg_file.write_text(textwrap.dedent('''
        import os
        data_root = os.path.join('data', 'VOCdevkit')
    '''))
    cfg = Config.fromfile(str(cfg_file))
    assert cfg.data_root == 'data/VOCdevkit'


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
