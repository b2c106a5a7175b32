"""A label cache knows its model by a hash of its configs and weights, not by path: the same
model from another folder or the Hugging Face cache reuses its labels, another model does not;
its files are written as every other output."""
import json
import os

import numpy as np
import pytest
from sample_data import shared_path

import mmdiffseg  # noqa: F401
from mmdiffseg.datasets import LabelCache
from mmdiffseg.provenance import model_identity


def cache_cfg(tmp_path):
    return dict(cache_dir=str(tmp_path / 'cache'), model='some/hub-model',
                generator=dict(type='DiffSeg'))


def refusal_lines(error):
    """The 'key: cache ..., this run ...' lines of a refused cache's message."""
    return [line.strip() for line in str(error.value).splitlines() if ': cache ' in line]


def sd_folder(root, config='stable-diffusion-2-1-base'):
    """A diffusers folder's configs (all a model's identity is computed from)."""
    source = shared_path('sd_configs', config)
    (root / 'unet').mkdir(parents=True)
    for part in ('model_index.json', 'unet/config.json'):
        (root / part).write_bytes((source / part).read_bytes())
    return str(root)


def test_models_compare_by_config_hash_not_by_path(tmp_path, monkeypatch):
    cached = dict(cache_cfg(tmp_path), model=sd_folder(tmp_path / 'node-a' / 'sd21'))
    LabelCache(**cached).sign()
    moved = sd_folder(tmp_path / 'node-b' / 'stable-diffusion-2-1-base-copy')
    assert LabelCache(**dict(cached, model=moved)).check_signature()
    # a hub id whose configs are in the local Hugging Face cache is that model too
    import huggingface_hub.constants
    snapshot = tmp_path / 'hub' / 'models--org--sd21' / 'snapshots' / 'abc123'
    sd_folder(snapshot)
    (tmp_path / 'hub' / 'models--org--sd21' / 'refs').mkdir()
    (tmp_path / 'hub' / 'models--org--sd21' / 'refs' / 'main').write_text('abc123')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    assert LabelCache(**dict(cached, model='org/sd21')).check_signature()
    with pytest.raises(ValueError) as refused:   # not cached: only its id is known
        LabelCache(**dict(cached, model='org/other-sd')).check_signature()
    assert len(refusal_lines(refused)) == 1
    other = sd_folder(tmp_path / 'sd15', 'stable-diffusion-v1-5')
    with pytest.raises(ValueError, match='model: cache') as refused:
        LabelCache(**dict(cached, model=other)).check_signature()
    assert len(refusal_lines(refused)) == 1


def test_a_hub_model_downloaded_by_the_first_run_is_recorded_with_its_hash(tmp_path,
                                                                           monkeypatch):
    """The README's main job with network: the cache object (and its model's identity) was made
    before the first batch downloaded the model, so cache.json recorded no config hash, and the
    same model in a local folder later (docs/mmseg.md) was refused: every label made again."""
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    cache = LabelCache(**dict(cache_cfg(tmp_path), model='org/sd21'))
    repo = tmp_path / 'hub' / 'models--org--sd21'
    sd_folder(repo / 'snapshots' / 'abc123')   # what the first load downloads
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('abc123')
    cache.save('ab' * 20, np.zeros((4, 4), np.uint8))
    recorded = json.loads((tmp_path / 'cache' / 'cache.json').read_text())['model']
    assert recorded == model_identity('org/sd21') and recorded['id'] == 'org/sd21'
    assert recorded['config_hash'] is not None
    folder = sd_folder(tmp_path / 'models' / 'sd21')
    assert LabelCache(**dict(cache_cfg(tmp_path), model=folder)).check_signature()


def test_cache_files_take_the_umask_mode_as_every_other_output(tmp_path):
    """The label cache wrote through mkstemp (mode 0600): a teammate's run reading a cache
    prefilled by another user stopped at cache.json with a PermissionError."""
    umask = os.umask(0o022)
    try:
        path = LabelCache(**cache_cfg(tmp_path)).save('ab' * 20, np.zeros((4, 4), np.uint8))
    finally:
        os.umask(umask)
    for written in (path, tmp_path / 'cache' / 'cache.json'):
        assert written.stat().st_mode & 0o777 == 0o644, written
    assert not list((tmp_path / 'cache').rglob('*.tmp'))


def test_a_model_folder_that_is_gone_is_named_not_the_labels(tmp_path):
    """The folder a cache's labels were made with, moved away (a warm start on another
    machine): the run is told the folder is not here, never to delete the labels, at start and
    by the pre-flight."""
    import shutil

    from mmdiffseg.preflight_cache import check_cache_settings
    folder = sd_folder(tmp_path / 'models' / 'sd21')
    cached = dict(cache_cfg(tmp_path), model=folder)
    LabelCache(**cached).sign()
    shutil.rmtree(folder)
    with pytest.raises(ValueError) as refused:
        LabelCache(**cached).check_signature()
    assert str(refused.value).startswith(f'the Stable Diffusion folder {folder} is not here, so '
                                         'this run cannot tell whether the labels in ')
    assert 'delete' not in str(refused.value) and 'the labels are kept' in str(refused.value)
    problem, = check_cache_settings(cached, 'train_dataloader.dataset.pipeline.2.cache')
    assert 'is not here' in problem.what and 'delete' not in problem.fix
    assert problem.fix == ('restore the folder, or set '
                           'train_dataloader.dataset.pipeline.2.cache.model to where it is now')
    # a generator of other settings too: those are named, the labels are of other settings
    with pytest.raises(ValueError, match='holds labels made with other settings'):
        LabelCache(**dict(cached, generator=dict(type='DiffSeg', kl_thresholds=(0.5,) * 3))
                   ).check_signature()
    # another model that is here is still refused as other settings
    other = dict(cached, model=sd_folder(tmp_path / 'sd14', 'stable-diffusion-v1-4'))
    with pytest.raises(ValueError, match='holds labels made with other settings'):
        LabelCache(**other).check_signature()
