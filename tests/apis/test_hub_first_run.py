"""A tool's first run on a hub model that the run itself downloads (the default model on a new
machine): its header was made before the download, so the manifest recorded no config hash and
no sampler, and every later run of synthesize.py was refused ('sampler: folder has null'), as
was pseudo_label.py with the same weights in a local folder."""
import importlib
import json
import shutil

import huggingface_hub
import pytest
import torch
from sample_data import shared_path

from mmdiffseg.apis.image_inputs import image_items
from mmdiffseg.apis.manifest import MANIFEST_NAME
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.provenance import model_identity, sampler_settings, setting_differences

synth_api = importlib.import_module('mmdiffseg.apis.synthesize')
label_api = importlib.import_module('mmdiffseg.apis.pseudo_label')
HUB_ID = 'test-org/tiny-sd'
SEEDIFF = dict(type='SeeDiff', num_heads=4, pamr_iter=2, steps=2)


@pytest.fixture
def downloading_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline, that receives the tiny model when a tool loads it
    (what diffusers' from_pretrained does on a first run); its value: the model's folder."""
    folder = cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    hub = tmp_path / 'hub'
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(hub))
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    repo = hub / f'models--{HUB_ID.replace("/", "--")}'

    def download():
        if not repo.exists():
            shutil.copytree(folder, repo / 'snapshots' / 'abc123')
            (repo / 'refs').mkdir()
            (repo / 'refs' / 'main').write_text('abc123')
    for api in (synth_api, label_api):
        load = api.load_engine
        monkeypatch.setattr(api, 'load_engine', lambda *a, _load=load, **k: download() or
                            _load(*a, **k))
    return folder, repo


def header(folder):
    return json.loads((folder / MANIFEST_NAME).read_text().splitlines()[0])


def test_synthesize_records_the_downloaded_models_identity_and_resumes(
        downloading_hub, tmp_path):
    folder, repo = downloading_hub
    out = tmp_path / 'out'
    first = synth_api.synthesize(['cat'], out, HUB_ID, SEEDIFF, images_per_class=1,
                                 batch_size=1, workers=0)
    assert first.made == 1
    recorded = header(out)
    assert recorded['model'] == dict(model_identity(folder), id=HUB_ID)
    assert recorded['sampler'] == sampler_settings(folder) is not None
    more = synth_api.synthesize(['cat'], out, HUB_ID, SEEDIFF, images_per_class=2,
                                batch_size=1, workers=0)
    assert (more.made, more.already_done) == (1, 1)
    # on a new machine (nothing cached): resumed, and the folder's settings checked after the
    # download; another sampler there is still refused
    shutil.rmtree(repo)
    again = synth_api.synthesize(['cat'], out, HUB_ID, SEEDIFF, images_per_class=3,
                                 batch_size=1, workers=0)
    assert (again.made, again.already_done) == (1, 2)
    shutil.rmtree(repo)
    lines = (out / MANIFEST_NAME).read_text().splitlines()
    first_line = json.loads(lines[0])
    first_line['sampler'] = dict(first_line['sampler'], beta_end=0.02)
    (out / MANIFEST_NAME).write_text('\n'.join([json.dumps(first_line)] + lines[1:]) + '\n')
    with pytest.raises(ValueError, match=r'sampler\.beta_end: folder has 0\.02, this run has '):
        synth_api.synthesize(['cat'], out, HUB_ID, SEEDIFF, images_per_class=4, batch_size=1,
                             workers=0)
    assert repo.is_dir() and len((out / MANIFEST_NAME).read_text().splitlines()) == 4


def test_pseudo_labels_of_a_downloaded_model_resume_with_its_local_folder(
        downloading_hub, tmp_path):
    """The same weights in a local folder resume the folder (docs/tools.md); the Python API's
    torch dtype is recorded by name."""
    folder, _ = downloading_hub
    images = tmp_path / 'images'
    images.mkdir()
    for name in ('voc_val_582.png', 'voc_val_0.png'):
        (images / name).symlink_to(shared_path('voc2012_val_samples', 'JPEGImages', name))
    out = tmp_path / 'labels'
    items = image_items(images)
    first = label_api.pseudo_label(items[:1], out, HUB_ID, dict(type='DiffSeg'), None, None,
                                   workers=0, dtype=torch.float32)
    assert first.made == 1 and header(out)['dtype'] == 'float32'
    assert header(out)['model']['config_hash'] == model_identity(folder)['config_hash']
    rest = label_api.pseudo_label(items, out, str(folder), dict(type='DiffSeg'), None, None,
                                  workers=0)
    assert (rest.made, rest.already_done) == (1, 1)


def test_an_unknown_sampler_is_no_difference():
    """A folder recorded before this fix (sampler null) resumes; a known one is compared."""
    sampler = {'_class_name': 'PNDMScheduler', 'beta_end': 0.012}
    assert list(setting_differences({'sampler': None}, {'sampler': sampler})) == []
    assert list(setting_differences({'sampler': sampler}, {'sampler': None})) == []
    assert list(setting_differences({'sampler': sampler}, {'sampler': dict(
        sampler, beta_end=0.02)})) == [('sampler.beta_end', 0.012, 0.02)]


def test_a_rank_that_learns_nothing_keeps_what_the_folder_knows(tmp_path):
    """A rank with nothing to compute (no model load) has an incomplete header where the hub
    model is not downloaded on its node: its rank file and the merged manifest kept it, erasing
    the folder's config hash and sampler, and a later run with another sampler was taken."""
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.apis.manifest import Manifest
    sampler = {'_class_name': 'DDIMScheduler', 'beta_end': 0.012}
    known = dict(tool='synthesize', model={'id': HUB_ID, 'config_hash': 'abc'}, sampler=sampler)
    Manifest(tmp_path, known).start()
    unknown = dict(known, model={'id': HUB_ID, 'config_hash': None}, sampler=None)
    rank = Manifest(tmp_path, unknown, rank=0, world_size=2)
    rank.load()
    rank.start()
    rank.merge_ranks([], [])
    assert header(tmp_path)['model']['config_hash'] == 'abc'
    assert header(tmp_path)['sampler'] == sampler
    with pytest.raises(UserInputError, match=r'sampler\.beta_end: folder has 0\.012'):
        Manifest(tmp_path, dict(known, sampler=dict(sampler, beta_end=0.02))).load()


def test_image_labels_in_a_read_only_mapping_are_taken_and_left_as_given(tmp_path):
    """A MappingProxyType passed the mapping check, then failed where the job wrote the
    spelled names back into it (the caller's dict was changed, too)."""
    import types
    folder = cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    image = tmp_path / 'voc_val_0.png'
    image.symlink_to(shared_path('voc2012_val_samples', 'JPEGImages', 'voc_val_0.png'))
    given = {'voc_val_0': ['cat']}
    made = label_api.pseudo_label(str(image), tmp_path / 'out', str(folder),
                                  dict(type='ISeg', preset='wsss_voc', cross_heads=None,
                                       self_heads=None), 'voc',   # (tiny model: all heads)
                                  types.MappingProxyType(given), workers=0, batch_size=1)
    assert made.made == 1 and given == {'voc_val_0': ['cat']}
