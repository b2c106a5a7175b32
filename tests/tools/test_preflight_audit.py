"""Pre-flight behaviours a mutation audit of mmdiffseg.preflight* found unpinned, each on a small
hand-made case (no model, no network: HF_HUB_OFFLINE=1)."""
import json

import torch
from mmengine.config import Config

import test_preflight_lookups
from mmdiffseg import preflight


no_network_probes = test_preflight_lookups.no_network_probes  # the same autouse fixture


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
    from PIL import Image
    Image.new('RGB', (2, 2)).save(tmp_path / 'img' / 'a.jpg')  # a split of one image
    (tmp_path / 'labels.json').write_text(json.dumps({'a': ['person']}))
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path),
                   data_prefix=dict(img_path='img'), metainfo=dict(classes=['cat', 'person']),
                   pipeline=[dict(type='LoadImageLevelLabels', classes=['cat', 'dog'],
                                  ann_file=str(tmp_path / 'labels.json'))])
    (item,) = preflight.check(Config(dict(train_dataloader=dict(dataset=dataset))), 'train')
    assert item.where == ['train_dataloader.dataset.pipeline.0.classes']
    assert "index 1 is 'dog' there but 'person' in the dataset" in item.what


def test_a_cache_is_refused_only_for_a_recorded_other_precision(tmp_path):
    """A signature with no writer dtype (or the run's) passes; one made in float16 is named
    for a float32 run, with the settings that make float16 labels."""
    from mmdiffseg.preflight_cache import check_cache_precision
    signature = tmp_path / 'cache.json'
    for made in ({}, {'dtype': 'float32'}):
        signature.write_text(json.dumps({'made_with': made}))
        assert check_cache_precision(str(tmp_path), 'x.cache', ('float32', None)) == []
    signature.write_text(json.dumps({'made_with': {'dtype': 'float16'}}))
    (item,) = check_cache_precision(str(tmp_path), 'x.cache', ('float32', None))
    assert item.what == (f'label cache {tmp_path} holds labels made in float16, and this run '
                         'would add labels made in float32')
    assert 'engine_dtype=float16' in item.fix and '--dtype float16' in item.fix
    assert item.where == ['x.cache.cache_dir']


def test_a_file_in_place_of_the_cache_or_above_it_is_named(tmp_path):
    """A file where the cache folder (or a folder above it) should be cannot hold the cache."""
    from mmdiffseg.preflight_cache import check_cache_writable
    (tmp_path / 'f').write_text('')
    for cache_dir in (tmp_path / 'f', tmp_path / 'f' / 'sub'):
        (item,) = check_cache_writable(str(cache_dir), 'x.cache')
        assert item.what == f'label cache folder {cache_dir}: {tmp_path / "f"} is a file'
        assert item.where == ['x.cache.cache_dir']


def test_image_level_labels_from_the_ground_truth_need_the_label_folder(tmp_path):
    """``LoadImageLevelLabels`` without a label file reads the label maps: their folder is then
    needed as by ``LoadAnnotations``; with a label file it is not."""
    from mmdiffseg.preflight_data import check_dataset
    (tmp_path / 'img').mkdir()
    step = dict(type='LoadImageLevelLabels', ann_file=None)
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path),
                   data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[step])
    (item,) = check_dataset(dataset, 'd')
    assert item.what == f'BaseSegDataset folder {tmp_path / "ann"} not found'
    step['ann_file'] = 'labels.json'
    assert check_dataset(dataset, 'd') == []


def test_a_cache_signed_with_the_runs_own_settings_passes(tmp_path):
    """The settings check names a cache only where a setting differs."""
    from mmdiffseg.datasets import LabelCache
    from mmdiffseg.preflight_cache import check_cache_settings
    generator = dict(type='ISeg', vocabulary='voc')
    LabelCache(str(tmp_path), 'org/sd', generator).sign()
    cache = dict(cache_dir=str(tmp_path), model='org/sd', generator=generator)
    assert check_cache_settings(cache, 'x.cache') == []
    (item,) = check_cache_settings(dict(cache, model='org/other'), 'x.cache')
    assert item.what.startswith(f'label cache {tmp_path} holds labels made with other settings: ')


def test_a_generators_resolutions_are_checked_at_the_size_it_runs_at(sd_config_dir):
    """A config's generator runs at 512 pixels (the labeller and DiffusionSegmentor extract
    there): DiffSeg's resolutions 32..4 are refused on SD 2.1-base, naming the ones it has; the
    tools check at their own --size, where 256 pixels serve them."""
    from mmdiffseg.preflight_options import capture_fit_error, check_head_layout
    from mmdiffseg.registry import MASK_GENERATORS
    folder = str(sd_config_dir('stable-diffusion-2-1-base'))
    generator = dict(type='DiffSeg', resolutions=(32, 16, 8, 4), num_points=4)
    (item,) = check_head_layout(generator, folder, 'model.generator')
    assert item.what.endswith('valid resolutions: [64, 32, 16, 8]')
    spec = MASK_GENERATORS.build(generator).capture_spec
    assert capture_fit_error(folder, spec, 256) is None


def test_a_scoped_label_preprocessor_type_makes_online_labels_and_has_its_values_checked():
    """``mmseg.DiffusionLabelPreprocessor`` (the registry resolves the scope) makes the online
    labels: not named as a stock preprocessor; its own values are still checked."""
    from mmdiffseg.preflight_classes import check_model_classes
    online = [('train_dataloader.dataset', dict(pipeline=[dict(type='LoadPseudoLabel')]))]
    model = dict(data_preprocessor=dict(type='mmseg.DiffusionLabelPreprocessor',
                                        engine_dtype='float64'))
    (item,) = check_model_classes(model, online)
    assert item.where == ['model.data_preprocessor.engine_dtype']


def test_cityscapes27_data_needs_no_label_converter(tmp_path):
    """Cityscapes27Dataset reads the ``*_labelIds.png`` as shipped: its missing data is fixed by
    the download alone; mmseg's CityscapesDataset (``*_labelTrainIds``) also needs the
    converter."""
    from mmdiffseg.preflight_data import check_dataset
    root = str(tmp_path / 'cityscapes')
    (item,) = check_dataset(dict(type='Cityscapes27Dataset', data_root=root), 'd')
    assert f'unzip them into {root}' in item.fix and 'converter' not in item.fix
    (item,) = check_dataset(dict(type='CityscapesDataset', data_root=root), 'd')
    assert f"unzip them into {root} and run mmseg's cityscapes.py converter" in item.fix


def test_a_label_file_that_is_not_utf8_text_is_named_not_raised(tmp_path):
    """An image-level label file of other bytes (not UTF-8) is a problem to report, as invalid
    JSON is, not a traceback of the check."""
    from mmdiffseg.preflight_data import check_image_level_labels
    labels = tmp_path / 'labels.json'
    labels.write_bytes(b'\xff\xfe{\x00}\x00')
    step = dict(type='LoadImageLevelLabels', ann_file=str(labels), classes=['cat'])
    (item,) = check_image_level_labels(step, 'p.1')
    assert item.what.startswith(f'image-level labels {labels} are not valid JSON (')
    assert item.where == ['p.1'] and item.fix.startswith('correct the file there, or remake it: ')


def test_a_checkpoint_url_that_answers_is_downloadable(tmp_path, monkeypatch):
    """Online, a URL whose HEAD request succeeds is reachable: the checkpoint is not missing."""
    import urllib.request
    monkeypatch.delenv('HF_HUB_OFFLINE')
    test_preflight_lookups.hub_checkpoints(tmp_path, monkeypatch)
    monkeypatch.setattr(urllib.request, 'urlopen', lambda request, timeout: object())
    assert preflight.reachable('https://example.org/w.pth') is True
    assert preflight.check_checkpoint('https://example.org/w.pth', 'load_from') == []


def test_a_torchvision_that_is_absent_or_does_not_import_is_named_with_the_fix(monkeypatch):
    """``torchvision://`` weights need torchvision: one not installed, or built for another torch
    (its import fails), is named with the install command rather than failing in mmengine."""
    import builtins
    key = 'model.backbone.init_cfg.checkpoint'
    fix = ('bash tools/install.sh (torch with its torchvision), or pip install the torchvision '
           f'built for torch {torch.__version__}')
    real_import = builtins.__import__

    def broken_import(name, *args, **kwargs):
        if name == 'torchvision':
            raise RuntimeError('operator torchvision::nms does not exist')
        return real_import(name, *args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(builtins, '__import__', broken_import)
        (item,) = preflight.check_checkpoint('torchvision://resnet50', key)
    assert item.what == ('torchvision, needed to load torchvision://resnet50, does not import '
                         '(RuntimeError: operator torchvision::nms does not exist)')
    assert item.fix == fix and item.where == [key]
    monkeypatch.setattr(preflight, 'find_spec', lambda name: None)
    (item,) = preflight.check_checkpoint('modelzoo://resnet50', key)
    assert item.what == 'torchvision, needed to load modelzoo://resnet50, is not installed'
    assert item.fix == fix


def test_a_models_pretrained_weights_are_checked_unless_a_test_loads_a_checkpoint(tmp_path):
    """``model.pretrained`` (mmseg's older key of backbone weights) is looked for as
    ``init_cfg.checkpoint`` is; tools/test.py's checkpoint (``load_from``) replaces it."""
    weights = tmp_path / 'r50.pth'
    cfg = Config(dict(model=dict(type='EncoderDecoder', pretrained=str(weights))))
    (item,) = [m for m in preflight.check(cfg, 'train') if m.where == ['model.pretrained']]
    assert item.what == f'checkpoint {weights} not found'
    assert item.fix.endswith('or set model.pretrained=/path/to/file.pth')
    cfg.load_from = str(tmp_path / 'iter_4.pth')
    assert not [m for m in preflight.check(cfg, 'test') if 'model.pretrained' in m.where]
    weights.write_bytes(b'')
    assert not [m for m in preflight.check(cfg, 'train') if 'model.pretrained' in m.where]
