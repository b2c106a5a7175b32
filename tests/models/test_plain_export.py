"""docs/mmseg.md's plain copy of a trained model's config and checkpoint, run as written: plain
mmseg (mmdiffseg hidden) loads the copy and predicts with the checkpoint's classes, where the
originals need mmdiffseg (its preprocessor type, and a message hub torch's weights_only refuses)."""
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import HistoryBuffer
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS
from sample_data import REPO, shared_path

import mmdiffseg  # noqa: F401
from mmdiffseg.datasets.class_names import DATASET_CLASSES

TINY = REPO / 'configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py'


def documented_snippet() -> str:
    text = (REPO / 'docs/mmseg.md').read_text()
    block = re.search(r'a plain copy of both,\s+made once where mmdiffseg is installed:\n\n'
                      r' *```python\n(.*?)\n *```', text, re.S)
    return textwrap.dedent(block[1])


@pytest.mark.parametrize('head', ['Mask2FormerHead', 'UnsurePixelsIgnoredMask2FormerHead'])
def test_the_documented_plain_copy_loads_in_plain_mmseg(tmp_path, head):
    """(The ADE20K configs' head is mmdiffseg's: the copy names mmseg's.)"""
    image = shared_path('voc2012_val_samples', 'JPEGImages', 'voc_val_0.png')
    cfg = Config.fromfile(str(TINY))
    cfg.model.decode_head.type = head
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model)
    run = tmp_path / 'work_dirs' / 'RUN'
    run.mkdir(parents=True)
    cfg.dump(str(run / 'CONFIG.py'))
    voc = tuple(DATASET_CLASSES['voc'])
    losses = HistoryBuffer()
    losses.update(1.0)   # what a run's message hub holds: mmengine objects, pickled
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dict(classes=voc)),
                    message_hub=dict(log_scalars={'loss': losses})), run / 'iter_20000.pth')
    plain = '\n'.join([
        'import sys',
        "sys.modules['mmdiffseg'] = None   # a plain mmseg install",
        'from mmseg.apis import inference_model, init_model',
        "model = init_model('plain_config.py', 'plain.pth', device='cpu')",
        f'result = inference_model(model, {str(image)!r})',
        "print(model.dataset_meta['classes'][1], tuple(result.pred_sem_seg.data.shape))"])
    original = plain.replace('plain_config.py', str(run / 'CONFIG.py'))
    refused = subprocess.run([sys.executable, '-c', original], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
    assert refused.returncode != 0 and 'mmdiffseg' in refused.stderr   # the original config
    subprocess.run([sys.executable, '-c', documented_snippet()], cwd=tmp_path, check=True,
                   timeout=300)
    done = subprocess.run([sys.executable, '-c', plain], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith('aeroplane (1, 513, 513)'), done.stdout
