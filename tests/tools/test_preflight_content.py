"""What pre-flight reads inside the files and settings (mmdiffseg.preflight / preflight_data): the
image-level label file, generator options, and the fix it gives for each missing data path."""
import json
import re

import pytest
from e2e_helpers import REPO, VOC_IMAGES, load_tool, make_voc_root
from mmengine.config import Config
from sample_data import png_header, shared_path

import mmdiffseg  # noqa: F401
from mmdiffseg import preflight
from mmdiffseg.datasets.transforms import LoadImageLevelLabels
from mmdiffseg.registry import MASK_GENERATORS

VOC_PSEUDO = 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-pseudo-512x512.py'
ADE_PSEUDO = 'configs/mask2former/mask2former_r50_8xb2-160k_ade20k-iseg-pseudo-512x512.py'
LABELS_STEP = 'train_dataloader.dataset.pipeline.1'


@pytest.fixture(autouse=True)
def no_network_probes(monkeypatch):
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    preflight.reachable.cache_clear()


def voc_config(root, labels=None, generator=None) -> Config:
    """A training config of the VOC sample folder ``root``: its aug split, the image-level labels
    ``labels`` (a JSON file) and, given one, a label cache with ``generator``."""
    pipeline = [dict(type='LoadImageFromFile'),
                dict(type='LoadImageLevelLabels', classes='voc', ann_file=labels)]
    if generator is not None:
        pipeline.append(dict(type='LoadPseudoLabel', cache=dict(
            cache_dir='c', model='org/sd', generator=generator)))
    return Config(dict(train_dataloader=dict(dataset=dict(
        type='PascalVOCDataset', data_root=str(root), ann_file='ImageSets/Segmentation/aug.txt',
        img_suffix='.png', data_prefix=dict(img_path='JPEGImages',
                                            seg_map_path='SegmentationClassAug'),
        pipeline=pipeline))))


@pytest.fixture
def voc_root(tmp_path):
    return make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'VOCdevkit' / 'VOC2012')


def items(cfg, mode='train', **kwargs):
    return {item.what: item for item in preflight.check(cfg, mode, **kwargs)}


def transform_error(labels, image):
    """What LoadImageLevelLabels (the training run) raises for ``image``, or None."""
    try:
        LoadImageLevelLabels('voc', str(labels)).transform(dict(img_path=f'x/{image}.png'))
    except KeyError as err:
        return err
    return None


# -- image-level labels ------------------------------------------------------------------------
def test_images_without_an_entry_and_unknown_names_are_found_with_their_fix(tmp_path, voc_root):
    """Both problems the training run meets only when it reaches the image (a KeyError) are in one
    report, with the nearest class name; applying the fix leaves nothing to report."""
    labels = tmp_path / 'labels.json'
    entries = {name: ['aeroplane'] for name in VOC_IMAGES[1:]}   # VOC_IMAGES[0] has no entry
    entries[VOC_IMAGES[1]] = ['aeroplan', 'person']
    entries['not_in_the_split'] = ['Sheep']
    labels.write_text(json.dumps(entries))
    assert transform_error(labels, VOC_IMAGES[1]) is not None       # what training would meet
    found = list(items(voc_config(voc_root, str(labels)), 'prefill').values())
    assert len(found) == 2 and all(item.where == [LABELS_STEP] for item in found)
    names, absent = found
    assert "'aeroplan' (1 image(s), e.g. 'voc_val_1') (did you mean 'aeroplane'?)" in names.what
    assert "'Sheep' (1 image(s), e.g. 'not_in_the_split') (did you mean 'sheep'?)" in names.what
    assert (f'1 of the {len(VOC_IMAGES)} images of the split '
            f'({voc_root}/ImageSets/Segmentation/aug.txt) have no entry') in absent.what
    assert repr(VOC_IMAGES[0]) in absent.what and 'aeroplan' not in absent.what
    assert 'voc_aug.py' in absent.fix and f'{LABELS_STEP}.ann_file=None' in absent.fix

    for wrong, right in re.findall(r"'(\w+)' -> '(\w+)'", names.fix):   # the renames it names
        for image, listed in entries.items():
            entries[image] = [right if n == wrong else n for n in listed]
    entries[VOC_IMAGES[0]] = ['bird']
    labels.write_text(json.dumps(entries))
    assert items(voc_config(voc_root, str(labels)), 'train') == {}
    assert all(transform_error(labels, name) is None for name in VOC_IMAGES)


def test_labels_keyed_by_file_names_are_named_with_that_fix(tmp_path, voc_root):
    """Entries keyed 'voc_val_0.png': the fix is to key them by the image name (it was to remake
    the file from ground truth, which a user of their own images does not have)."""
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({f'{name}.png': ['aeroplane'] for name in VOC_IMAGES}))
    (absent,) = items(voc_config(voc_root, str(labels)), 'prefill').values()
    assert absent.fix == (f"the labels are keyed by file names (e.g. '{VOC_IMAGES[0]}.png'): key "
                          f"them by the image name without its extension ('{VOC_IMAGES[0]}')")


def test_an_image_listed_with_no_class_is_covered(tmp_path, voc_root):
    """``[]`` (background only) is an entry, as the transform reads it: not a missing one."""
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({name: [] if name == VOC_IMAGES[0] else ['person']
                                  for name in VOC_IMAGES}))
    assert items(voc_config(voc_root, str(labels)), 'train') == {}
    step = LoadImageLevelLabels('voc', str(labels))
    assert step.transform(dict(img_path=f'x/{VOC_IMAGES[0]}.png'))['image_labels'] == []


def test_malformed_label_files_are_reported(tmp_path, voc_root):
    labels = tmp_path / 'labels.json'
    for text, problem in (('{"voc_val_0": ["aeroplane"],}', 'are not valid JSON (Expecting'),
                          ('["aeroplane"]', 'are not a JSON object'),
                          ('{"voc_val_0": "aeroplane"}',
                           "list 'aeroplane' for image 'voc_val_0': each image lists the names"),
                          ('{"voc_val_0": [1, 15]}',  # indices
                           "list [1, 15] for image 'voc_val_0': each image lists the names of its "
                           'classes (not indices)')):
        labels.write_text(text)
        (item,) = preflight.check(voc_config(voc_root, str(labels)), 'train')
        assert problem in item.what and item.where == [LABELS_STEP] and 'voc_aug.py' in item.fix


def test_an_empty_label_file_setting_is_not_read_as_none(voc_root):
    """``ann_file=''`` (e.g. ``--cfg-options ...ann_file=``) is a file that is not there, as
    the transform finds at the first image, not the ground truth that ``None`` selects."""
    (item,) = preflight.check(voc_config(voc_root, ''), 'train')
    assert item.what == "image-level labels '' (an empty ann_file) not found"
    assert item.where == [LABELS_STEP]
    assert f'set {LABELS_STEP}.ann_file=None to take them from the ground truth' in item.fix


def test_coverage_is_checked_against_a_large_split_by_headers_only(tmp_path, monkeypatch):
    """VOC aug's 10,582 images: the split is listed by the dataset class, and only the images'
    headers are read, none decoded (counted, not timed: a full decode of each would take
    minutes)."""
    import os

    from PIL import Image, ImageFile
    root = tmp_path / 'VOC2012'
    names = [f'2008_{i:06d}' for i in range(10582)]
    (root / 'JPEGImages').mkdir(parents=True)
    (root / 'ImageSets/Segmentation').mkdir(parents=True)
    (root / 'ImageSets/Segmentation/aug.txt').write_text('\n'.join(names) + '\n')
    image = tmp_path / 'image.png'
    Image.new('RGB', (500, 375)).save(image)
    for name in names:     # every listed image is there (pre-flight checks that too)
        os.link(image, root / 'JPEGImages' / f'{name}.png')
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({name: ['cat'] for name in names[:-5]}))
    decoded, load = [], ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, 'load',
                        lambda img: decoded.append(img.filename) or load(img))
    (item,) = preflight.check(voc_config(root, str(labels)), 'prefill')
    assert decoded == []
    assert "5 of the 10582 images" in item.what and "'2008_010577', '2008_010578', " \
        "'2008_010579', ..." in item.what


# -- generator options ---------------------------------------------------------------------------
GENERATOR = f'{LABELS_STEP[:-1]}2.cache.generator'


def generator_items(tmp_path, voc_root, generator):
    found = preflight.check(voc_config(voc_root, generator=generator), 'train')
    return [item for item in found if item.where and
            all(where.startswith(GENERATOR) for where in item.where)]


def test_an_unknown_generator_option_names_the_key_and_the_nearest_option(tmp_path, voc_root):
    generator = dict(type='ISeg', vocabulary='voc', iterz=3)
    with pytest.raises(TypeError, match='iterz'):      # what the first batch would meet
        MASK_GENERATORS.build(generator)
    (item,) = generator_items(tmp_path, voc_root, generator)
    assert item.what == f"{GENERATOR}: ISeg has no option 'iterz' (did you mean 'iters'?)"
    assert item.fix.startswith(f'set {GENERATOR}.iters instead of {GENERATOR}.iterz')
    generator['iters'] = generator.pop('iterz')
    assert generator_items(tmp_path, voc_root, generator) == []


def test_the_generators_own_refusal_and_an_unknown_type_are_reported(tmp_path, voc_root):
    (item,) = generator_items(tmp_path, voc_root, dict(type='ISeg', iters=-3))
    assert item.what == f'{GENERATOR}.iters=-3: ISeg: iters must be a whole number >= 0, got -3'
    assert item.fix == (f'correct {GENERATOR}.iters in the config or with --cfg-options (its '
                        'default: 10)')
    (item,) = generator_items(tmp_path, voc_root, dict(type='ISeg', iters='abc'))  # a typed value
    assert item.what == \
        f"{GENERATOR}.iters='abc': ISeg: iters must be a whole number >= 0, got 'abc'"
    (item,) = generator_items(tmp_path, voc_root, dict(type='Iseg'))
    assert item.what == f"{GENERATOR}.type: unknown generator 'Iseg' (did you mean 'ISeg'?)"
    assert f'--cfg-options {GENERATOR}.type=ISeg' in item.fix


# -- the fix for each missing data path ----------------------------------------------------------
def test_pseudo_label_configs_send_real_data_to_its_download(tmp_path, monkeypatch):
    """Only the pseudo-label folder and its split file come from tools/pseudo_label.py; VOC's
    and ADE20K's images are real data."""
    monkeypatch.chdir(tmp_path)            # nothing of the data is here
    fixes = {}
    for config in (VOC_PSEUDO, ADE_PSEUDO):
        for item in preflight.check(Config.fromfile(str(REPO / config)), 'train'):
            fixes[item.what] = item.fix
    pseudo = {what: fix for what, fix in fixes.items() if 'pseudo_label.py' in fix}
    assert set(pseudo) == {
        'PseudoLabelVOCDataset folder data/pseudo_labels/voc12_iseg/SegmentationClass not found',
        'PseudoLabelADE20KDataset folder data/pseudo_labels/ade20k_iseg/SegmentationClass '
        'not found',
        'PseudoLabelVOCDataset split file data/pseudo_labels/voc12_iseg/ImageSets/Segmentation/'
        'train.txt not found',   # the images the tool labelled
        'PseudoLabelADE20KDataset split file data/pseudo_labels/ade20k_iseg/ImageSets/'
        'Segmentation/train.txt not found'}
    for what, fix in pseudo.items():
        out = 'data/pseudo_labels/' + ('voc12_iseg' if 'VOC' in what else 'ade20k_iseg')
        assert f'--out {out} ' in fix, (what, fix)
    voc = 'PseudoLabelVOCDataset folder data/VOCdevkit/VOC2012/JPEGImages not found'
    assert 'voc_aug.py data/VOCdevkit --sbd data/benchmark_RELEASE' in fixes[voc]
    ade = 'PseudoLabelADE20KDataset folder data/ade/ADEChallengeData2016/images/training not found'
    assert 'unzip ADEChallengeData2016.zip -d data/ade' in fixes[ade]


def test_a_data_root_one_folder_off_is_named_with_the_right_one(tmp_path, voc_root):
    cfg = voc_config(voc_root)
    for wrong in (voc_root.parent, voc_root / 'JPEGImages'):     # too high, too low
        cfg.train_dataloader.dataset.data_root = str(wrong)
        (item,) = preflight.check(cfg, 'train')
        assert 'looks one folder off' in item.what and 'voc_aug.py' not in item.fix
        assert item.fix == f'--cfg-options train_dataloader.dataset.data_root={voc_root}'
    cfg.merge_from_dict({'train_dataloader.dataset.data_root': str(voc_root)})
    assert preflight.check(cfg, 'train') == []

    empty = tmp_path / 'other' / 'VOC2012'                       # named like a dataset root
    empty.mkdir(parents=True)
    cfg.train_dataloader.dataset.data_root = str(empty.parent)
    (item,) = preflight.check(cfg, 'train')
    assert 'it holds VOC2012/ but not ImageSets/Segmentation/aug.txt' in item.what
    assert item.fix.endswith(f'data_root={empty}')


def test_labels_left_behind_by_a_moved_data_root_point_to_the_data_roots_file(tmp_path, voc_root):
    """data_root set to where the data moved, ann_file still at the config's default: the fix
    names the data root's own image_labels.json (not a rebuild elsewhere)."""
    (voc_root / 'image_labels.json').write_text(json.dumps({VOC_IMAGES[0]: ['person']}))
    cfg = voc_config(voc_root, 'data/VOCdevkit/VOC2012/image_labels.json')
    (item,) = preflight.check(cfg, 'train')
    assert item.what == 'image-level labels data/VOCdevkit/VOC2012/image_labels.json not found'
    assert item.fix.startswith(f'--cfg-options {LABELS_STEP}.ann_file='
                               f'{voc_root}/image_labels.json')
    assert f'voc_aug.py {voc_root.parent}' in item.fix  # a rebuild goes where the data is
    (voc_root / 'image_labels.json').unlink()
    (item,) = preflight.check(cfg, 'train')
    assert item.fix.startswith(f'python tools/dataset_converters/voc_aug.py {voc_root.parent}')
    assert f', then set {LABELS_STEP}.ann_file={voc_root}/image_labels.json' in item.fix
    cfg = voc_config(voc_root, str(voc_root / 'image_labels.json'))  # where the rebuild writes
    (item,) = preflight.check(cfg, 'train')
    assert item.fix.startswith(f'python tools/dataset_converters/voc_aug.py {voc_root.parent}')
    assert ', then set' not in item.fix


def test_a_label_file_in_the_working_folder_is_not_offered_for_a_missing_data_root(
        tmp_path, monkeypatch):
    """With the data root absent, the file of that name in the working folder is no evidence
    that the data moved: the fix is the rebuild, not that file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'image_labels.json').write_text(json.dumps({VOC_IMAGES[0]: ['person']}))
    cfg = voc_config(tmp_path / 'absent' / 'VOC2012', 'data/VOCdevkit/VOC2012/image_labels.json')
    labels = items(cfg)['image-level labels data/VOCdevkit/VOC2012/image_labels.json not found']
    assert labels.fix.startswith('python tools/dataset_converters/voc_aug.py')


@pytest.mark.parametrize('classes', [['person'], ['person', 'dog']])
def test_the_command_that_remakes_labels_of_a_class_list_reads_back_that_list(
        tmp_path, voc_root, classes):
    """``LoadImageLevelLabels(classes=[...])`` with its file absent: the fix's ``--classes``
    value is read by the converter as the same list (one class keeps its trailing comma, or
    the tool would look for a class set named ``person``)."""
    from mmdiffseg.apis.cli import resolve_class_arg
    cfg = voc_config(voc_root, str(tmp_path / 'labels.json'))
    cfg.train_dataloader.dataset.pipeline[1].classes = classes
    cfg.train_dataloader.dataset.metainfo = dict(classes=classes)
    (item,) = preflight.check(cfg, 'train')
    assert 'tools/dataset_converters/image_labels.py LABEL_DIR --classes ' in item.fix
    value = re.search(r'--classes (\S+)', item.fix).group(1)
    assert resolve_class_arg(value) == classes


# -- one message from the tool -------------------------------------------------------------------
def test_prefill_tool_stops_with_one_message_for_labels_and_generator(tmp_path, voc_root, capsys):
    labels = tmp_path / 'labels.json'
    labels.write_text(json.dumps({VOC_IMAGES[1]: ['aeroplan']}))
    cfg = voc_config(voc_root, str(labels), dict(type='ISeg', iterz=3))
    cfg.dump(str(tmp_path / 'cfg.py'))
    with pytest.raises(SystemExit) as exit_info:
        load_tool('prefill_labels').main([str(tmp_path / 'cfg.py'), '--device', 'cpu'])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and 'Traceback' not in err and err.count('Pre-flight') == 1
    assert "did you mean 'aeroplane'?" in err and f'3 of the {len(VOC_IMAGES)} images' in err
    assert "ISeg has no option 'iterz' (did you mean 'iters'?)" in err


def test_a_label_cache_made_with_other_settings_is_named_before_training(tmp_path, voc_root):
    """Another generator option, or labels of an earlier label computation (a cache.json
    without LABELS_VERSION): named by pre-flight with the fix, not at the first batch."""
    from mmdiffseg.datasets import LabelCache
    cfg = voc_config(voc_root, generator=dict(type='ISeg', vocabulary='voc'))
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    where = 'train_dataloader.dataset.pipeline.2.cache'

    def named():
        return [i for i in preflight.check(cfg, 'train') if 'other settings' in i.what]

    assert not named()
    LabelCache(cache.cache_dir, cache.model, dict(type='ISeg', vocabulary='voc', iters=3)).sign()
    (item,) = named()
    assert item.what == (f'label cache {cache.cache_dir} holds labels made with other settings: '
                         'generator.iters: cache 3, this run 10')
    assert item.where == [f'{where}.cache_dir']
    assert item.fix == (f'--cfg-options {where}.cache_dir=<another folder>, or delete '
                        f'{cache.cache_dir}')
    signature = tmp_path / 'cache' / 'cache.json'
    signature.unlink()
    LabelCache(cache.cache_dir, cache.model, cache.generator.to_dict()).sign()
    assert not named()
    signature.write_text(json.dumps({k: v for k, v in json.loads(signature.read_text()).items()
                                     if k != 'labels_version'}))
    (item,) = named()
    from mmdiffseg.generators.base import LABELS_VERSION
    assert (f'labels_version: cache <absent>, this run {LABELS_VERSION}; labels_version: its '
            'labels were made by an earlier mmdiffseg') in item.what
    signature.write_text('{"model": ')              # unreadable: named as the cache says it
    (item,) = [i for i in preflight.check(cfg, 'train') if 'label-cache signature' in i.what]
    assert item.what.startswith(f'{signature} is not a label-cache signature')
    cache.generator.iterz = 3                        # bad options: named by the generator check
    whats = [i.what for i in preflight.check(cfg, 'train')]
    assert any("ISeg has no option 'iterz'" in w for w in whats)
    assert not [w for w in whats if 'label-cache signature' in w or 'other settings' in w]


def test_a_pseudo_label_folder_the_dataset_refuses_is_reported(tmp_path, voc_root):
    """A generated-label folder that does not match the split (half made, another dataset's) was
    passed by pre-flight, then the dataset refused it when the run built it."""
    cfg = Config.fromfile(str(REPO / VOC_PSEUDO))
    labels = tmp_path / 'pl' / 'SegmentationClass'
    labels.mkdir(parents=True)
    (labels / f'{VOC_IMAGES[0]}.png').write_bytes(b'')
    cfg.train_dataloader.dataset.update(
        data_root='', ann_file=str(voc_root / 'ImageSets/Segmentation/aug.txt'), img_suffix='.png',
        data_prefix=dict(img_path=str(voc_root / 'JPEGImages'), seg_map_path=str(labels)))
    found = [item for item in preflight.check(cfg, 'train') if 'does not match' in item.what]
    assert len(found) == 1 and found[0].what.startswith(
        f'PseudoLabelVOCDataset: the label folder {labels} does not match the images')
    assert 'train_dataloader.dataset.data_prefix (img_path, seg_map_path)' in found[0].fix


def test_listed_files_that_are_no_image_are_named_before_training(voc_root):
    """A split file naming a text file (a failed download saved as .png) passed pre-flight, then
    stopped training with a traceback when it reached it."""
    image = voc_root / 'JPEGImages' / f'{VOC_IMAGES[1]}.png'
    image.unlink()  # a link to the sample
    image.write_text('<html>404 not found</html>')
    found = [item for what, item in items(voc_config(voc_root)).items() if 'OpenCV reads' in what]
    assert len(found) == 1
    assert found[0].what.startswith(f'PascalVOCDataset: 1 of the {len(VOC_IMAGES)} images of the '
                                    'split')
    assert f"(e.g. '{image}': not an image (UnidentifiedImageError))" in found[0].what
    assert found[0].fix.startswith('replace them with the images, or remove them (their names '
                                   'from the split file')
    image.write_bytes(png_header(40000, 30000))  # 1.2 Gpx: past what OpenCV reads
    [found] = [item for what, item in items(voc_config(voc_root)).items() if 'OpenCV reads' in what]
    assert f"(e.g. '{image}': more than the 1073741824 pixels OpenCV" in found.what


def test_images_of_another_suffix_get_the_img_suffix_to_set(voc_root):
    """Listed x.jpg, found x.png (or a camera's x.JPG): the fix is img_suffix, not 'put the
    missing files there'."""
    cfg = voc_config(voc_root)
    cfg.train_dataloader.dataset.img_suffix = '.jpg'
    [found] = [item for what, item in items(cfg).items() if 'images of the split' in what]
    assert found.fix == (f"the images are named '{VOC_IMAGES[0]}.png': set "
                         "train_dataloader.dataset.img_suffix='.png'")
