"""Pre-flight behaviours a mutation audit of mmdiffseg.preflight* found unpinned, each on a small
hand-made case (no model, no network: HF_HUB_OFFLINE=1)."""
import json

import pytest
from mmengine.config import Config

from mmdiffseg import preflight


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()
    yield
    preflight.reachable.cache_clear()


def test_a_checkpoint_path_under_home_is_found(tmp_path, monkeypatch):
    """``~/...`` is expanded as mmengine's loader expands it: a file there is no problem."""
    monkeypatch.setenv('HOME', str(tmp_path))
    (tmp_path / 'w.pth').write_bytes(b'')
    assert preflight.check_checkpoint('~/w.pth', 'load_from') == []
    (item,) = preflight.check_checkpoint('~/none.pth', 'load_from')
    assert item.what == 'checkpoint ~/none.pth not found' and item.where == ['load_from']


def test_sd_2_1_base_itself_gets_the_tiny_cpu_hint():
    """SD 2.1-base is what the tiny-cpu configs read: its hint is theirs (with the note on the
    full configs' head counts), not a per-model --cfg-options."""
    hint = preflight.smoke_run_hint('stabilityai/stable-diffusion-2-1-base', ['model.sd_model'])
    assert hint.startswith('random weights for a smoke run of the tiny-cpu configs: ')
    assert "2.1-base's head counts" in hint and '--cfg-options' not in hint


def test_label_names_are_not_checked_against_classes_the_fix_replaces(tmp_path):
    """``LoadImageLevelLabels.classes`` that disagree with the dataset's are the one problem
    named: the label file's names (the dataset's) are not also called unknown."""
    (tmp_path / 'img').mkdir()
    (tmp_path / 'labels.json').write_text(json.dumps({'a': ['person']}))
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path),
                   data_prefix=dict(img_path='img'), metainfo=dict(classes=['cat', 'person']),
                   pipeline=[dict(type='LoadImageLevelLabels', classes=['cat', 'dog'],
                                  ann_file=str(tmp_path / 'labels.json'))])
    (item,) = preflight.check(Config(dict(train_dataloader=dict(dataset=dataset))), 'train')
    assert item.where == ['train_dataloader.dataset.pipeline.0.classes']
    assert "index 1 is 'dog' there but 'person' in the dataset" in item.what
