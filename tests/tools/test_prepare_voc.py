"""tools/dataset_converters: a VOCdevkit + SBD release built here from the VOC samples becomes
what the VOC configs read (aug split, SegmentationClassAug, image_labels.json)."""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from e2e_helpers import REPO
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS
from PIL import Image
from sample_data import shared_path
from scipy.io import savemat
from tool_modules import load_converter

import mmdiffseg  # noqa: F401
from mmdiffseg.apis.io import OutputWriteError, UserInputError
from mmdiffseg.datasets import DATASET_CLASSES

CONVERTERS = REPO / 'tools' / 'dataset_converters'
MAIN_CONFIG = REPO / 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'
PSEUDO_CONFIG = REPO / 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-pseudo-512x512.py'
VOC = DATASET_CLASSES['voc']
IDS = ['voc_val_0', 'voc_val_1', 'voc_val_114', 'voc_val_166', 'voc_val_20', 'voc_val_23',
       'voc_val_293', 'voc_val_417', 'voc_val_582', 'voc_val_60']
VOC_TRAIN, VOC_VAL = IDS[0:4], IDS[4:7]
SBD_TRAIN, SBD_VAL = [IDS[2], IDS[3], IDS[7]], [IDS[5], IDS[8]]
AUG = sorted({IDS[0], IDS[1], IDS[2], IDS[3], IDS[7], IDS[8]})  # (SBD + VOC train) - VOC val
DIFFICULT = IDS[0]   # gets an extra difficult 'person' object


def gt(image_id) -> np.ndarray:
    return np.asarray(Image.open(shared_path('voc2012_val_samples', 'SegmentationClass',
                                             f'{image_id}.png')))


def sbd_version(image_id) -> np.ndarray:
    """SBD masks have no 255 border; here they also differ from VOC's, to tell them apart."""
    mask = gt(image_id).copy()
    mask[mask == 255] = 0
    return mask


def write_xml(path, names, difficult=()):
    root = ET.Element('annotation')
    for name in names:
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = f'\n\t\t{name}\n\t'   # whitespace as in some VOC files
        ET.SubElement(obj, 'difficult').text = '1' if name in difficult else '0'
        part = ET.SubElement(obj, 'part')
        ET.SubElement(part, 'name').text = 'head'                # part names are no classes
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path)


def xml_names(image_id):
    present = [VOC[v] for v in np.unique(gt(image_id)) if 0 < v < 255]
    return present + (['person'] if image_id == DIFFICULT and 'person' not in present else [])


def build_release(tmp_path):
    """data/VOCdevkit/VOC2012 (JPEG images, masks, XML, train/val) and data/benchmark_RELEASE."""
    voc = tmp_path / 'data/VOCdevkit/VOC2012'
    sbd = tmp_path / 'data/benchmark_RELEASE/dataset'
    for sub in ('JPEGImages', 'SegmentationClass', 'ImageSets/Segmentation'):
        (voc / sub).mkdir(parents=True)
    (sbd / 'cls').mkdir(parents=True)
    samples = shared_path('voc2012_val_samples')
    for image_id in IDS:
        Image.open(samples / 'JPEGImages' / f'{image_id}.png').convert('RGB').save(
            voc / 'JPEGImages' / f'{image_id}.jpg')
        (voc / 'SegmentationClass' / f'{image_id}.png').write_bytes(
            (samples / 'SegmentationClass' / f'{image_id}.png').read_bytes())
        write_xml(voc / 'Annotations' / f'{image_id}.xml', xml_names(image_id),
                  difficult=['person'] if image_id == DIFFICULT else [])
    for image_id in SBD_TRAIN + SBD_VAL:
        savemat(sbd / 'cls' / f'{image_id}.mat',
                {'GTcls': {'Segmentation': sbd_version(image_id), 'CategoriesPresent': []}})
    for name, ids in (('train', VOC_TRAIN), ('val', VOC_VAL)):
        (voc / f'ImageSets/Segmentation/{name}.txt').write_text('\n'.join(ids) + '\n')
    for name, ids in (('train', SBD_TRAIN), ('val', SBD_VAL)):
        (sbd / f'{name}.txt').write_text('\n'.join(ids) + '\n')
    return voc


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    voc = build_release(tmp_path)
    load_converter('voc_aug').main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE'])
    return voc


def test_aug_split_masks_and_xml_labels(prepared):
    voc = prepared
    assert (voc / 'ImageSets/Segmentation/aug.txt').read_text().split() == AUG
    for image_id in AUG:
        with Image.open(voc / 'SegmentationClassAug' / f'{image_id}.png') as png:
            assert png.mode == 'P' and png.getpalette()[3:6] == [128, 0, 0]
            expected = sbd_version(image_id) if image_id in SBD_TRAIN + SBD_VAL else gt(image_id)
            np.testing.assert_array_equal(np.asarray(png), expected)
    labels = json.loads((voc / 'image_labels.json').read_text())
    assert sorted(labels) == sorted(set(AUG) | set(VOC_TRAIN) | set(VOC_VAL))
    for image_id, names in labels.items():
        assert names == [c for c in VOC if c in xml_names(image_id)]
    assert 'person' in labels[DIFFICULT]      # difficult objects count (the WSSS convention)


def test_main_config_loads_the_prepared_data(prepared):
    """The real main config, unchanged (its relative data root), reads the written files through
    its pipeline up to LoadImageLevelLabels; val reads the real masks."""
    labels = json.loads((prepared / 'image_labels.json').read_text())
    cfg = Config.fromfile(str(MAIN_CONFIG))
    init_default_scope('mmseg')
    train = cfg.train_dataloader.dataset
    steps = [s.type for s in train.pipeline]
    train.pipeline = train.pipeline[:steps.index('LoadImageLevelLabels') + 1]
    dataset = DATASETS.build(train)
    assert len(dataset) == len(AUG)
    for index in range(len(dataset)):
        item = dataset[index]
        image_id = item['img_path'].split('/')[-1][:-4]
        assert item['image_labels'] == labels[image_id] and item['img'].shape[2] == 3
    val = cfg.val_dataloader.dataset
    val.pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]
    item = DATASETS.build(val)[0]
    np.testing.assert_array_equal(item['gt_seg_map'], gt(VOC_VAL[0]))


def test_labels_from_masks_and_without_difficult(prepared):
    voc_aug = load_converter('voc_aug')
    voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE', '--exclude-difficult'])
    labels = json.loads((prepared / 'image_labels.json').read_text())
    assert 'person' not in labels[DIFFICULT]
    voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE', '--labels-from', 'gt'])
    labels = json.loads((prepared / 'image_labels.json').read_text())
    for image_id in AUG:
        mask = sbd_version(image_id) if image_id in SBD_TRAIN + SBD_VAL else gt(image_id)
        assert labels[image_id] == [VOC[v] for v in np.unique(mask) if 0 < v < 255]


def test_pseudo_label_config_reads_a_pseudo_label_folder(prepared):
    """The VOC config trained on offline labels lists the images of the tool's split file (the
    aug images it labelled) and reads their labels."""
    folder = prepared.parents[1] / 'pseudo_labels/voc12_iseg'
    (folder / 'SegmentationClass').mkdir(parents=True)
    for image_id in AUG:
        (folder / 'SegmentationClass' / f'{image_id}.png').write_bytes(
            (prepared / 'SegmentationClassAug' / f'{image_id}.png').read_bytes())
    (folder / 'ImageSets/Segmentation').mkdir(parents=True)
    (folder / 'ImageSets/Segmentation/train.txt').write_text('\n'.join(AUG) + '\n')
    (folder / 'manifest.jsonl').write_text(json.dumps(dict(tool='pseudo_label',
                                                           classes=list(VOC))) + '\n')
    cfg = Config.fromfile(str(PSEUDO_CONFIG))
    init_default_scope('mmseg')
    dataset = cfg.train_dataloader.dataset
    pipeline = Compose(dataset.pipeline[:2])
    dataset = DATASETS.build(dataset)
    assert len(dataset) == len(AUG)
    item = pipeline(dataset.get_data_info(0))
    assert item['gt_seg_map'].shape == item['img'].shape[:2]


def test_sbd_masks_replace_voc_ones_and_a_rerun_without_is_refused(tmp_path, monkeypatch):
    """SBD's mask wins where both exist: a rerun with --sbd replaces the VOC masks a run without
    it wrote; a rerun without --sbd after that is refused, naming the fix, and changes nothing
    (it rewrote aug.txt as VOC train alone: 10,582 -> 1,464 images with the full data, exit 0);
    a rerun with --sbd rewrites nothing."""
    monkeypatch.chdir(tmp_path)
    voc = build_release(tmp_path)
    voc_aug = load_converter('voc_aug')
    both = [i for i in VOC_TRAIN if i in SBD_TRAIN + SBD_VAL]
    assert both
    masks = {i: voc / 'SegmentationClassAug' / f'{i}.png' for i in VOC_TRAIN}

    def check(sbd_ids):
        for image_id, path in masks.items():
            expected = sbd_version(image_id) if image_id in sbd_ids else gt(image_id)
            np.testing.assert_array_equal(np.asarray(Image.open(path)), expected, image_id)
    voc_aug.main(['data/VOCdevkit'])
    check([])
    voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE'])
    check(both)
    written = {i: p.stat().st_mtime_ns for i, p in masks.items()}
    split = voc / 'ImageSets/Segmentation/aug.txt'
    made = split.read_text()
    dropped = sorted(set(SBD_TRAIN + SBD_VAL) - set(VOC_TRAIN) - set(VOC_VAL))
    with pytest.raises(UserInputError, match=rf"aug.txt lists {len(dropped)} images this run "
                                             r'would drop from the aug split \(SBD.s, e.g. '
                                             rf'{dropped[0]}\): rerun with --sbd as the run'):
        voc_aug.main(['data/VOCdevkit', '--labels-from', 'gt'])
    assert split.read_text() == made
    voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE'])
    check(both)
    assert {i: p.stat().st_mtime_ns for i, p in masks.items()} == written


def test_missing_release_files_are_named(tmp_path, monkeypatch):
    """No release, the VOC2012 folder given for the devkit, an SBD folder without cls/, an SBD
    mask cut short (named, not scipy's traceback; a rerun keeps the masks made)."""
    with pytest.raises(UserInputError, match=r'split file .*train.txt not found \(VOC 2012: http'):
        load_converter('voc_aug').main([str(tmp_path / 'VOCdevkit')])
    monkeypatch.chdir(tmp_path)
    voc = build_release(tmp_path)
    voc_aug = load_converter('voc_aug')
    with pytest.raises(UserInputError, match=rf'^{voc} is the VOC2012 folder itself: give the '
                                             rf'VOCdevkit folder that holds it \({voc.parent}\)'):
        voc_aug.main([str(voc)])
    sbd = tmp_path / 'data/benchmark_RELEASE/dataset'
    (sbd / 'cls').rename(sbd / 'masks')
    with pytest.raises(UserInputError, match=r'dataset has no cls/ \(the SBD class masks\)'):
        voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE'])
    (sbd / 'masks').rename(sbd / 'cls')
    cut = sbd / 'cls' / f'{SBD_TRAIN[-1]}.mat'
    whole = cut.read_bytes()
    cut.write_bytes(whole[:300])
    with pytest.raises(UserInputError, match=rf'^{cut.relative_to(tmp_path)} is no readable SBD '
                                             r'mask \(.*re-extract '
                                             r'benchmark.tgz, then rerun'):
        voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE'])
    cut.write_bytes(whole)
    voc_aug.main(['data/VOCdevkit', '--sbd', 'data/benchmark_RELEASE'])


def test_sample_folder_becomes_a_devkit_and_refuses_another(tmp_path):
    voc_aug = load_converter('voc_aug')
    samples = shared_path('voc2012_val_samples')
    voc_aug.main([str(tmp_path / 'devkit'), '--from-samples', str(samples)])
    voc = tmp_path / 'devkit/VOC2012'
    ids = sorted(p.stem for p in (samples / 'SegmentationClass').glob('*.png'))
    for split in ('train', 'val', 'aug'):
        assert (voc / f'ImageSets/Segmentation/{split}.txt').read_text().split() == ids
    assert sorted(p.name for p in (voc / 'JPEGImages').iterdir()) == [f'{i}.jpg' for i in ids]
    labels = json.loads((voc / 'image_labels.json').read_text())
    assert labels['voc_val_582'] == ['motorbike', 'person']
    (voc / 'ImageSets/Segmentation/train.txt').write_text('2007_000032\n')
    with pytest.raises(UserInputError, match='already holds another dataset'):
        voc_aug.main([str(tmp_path / 'devkit'), '--from-samples', str(samples)])
    # the VOC2012 folder given as the devkit: VOC2012/VOC2012 was made without a word
    with pytest.raises(UserInputError, match=rf'^{voc} is the VOC2012 folder itself: give the '
                                             rf'VOCdevkit folder that holds it'):
        voc_aug.main([str(voc), '--from-samples', str(samples)])
    assert not (voc / 'VOC2012').exists()
    # the release's options, ignored with --from-samples (a --sbd that does not exist passed)
    with pytest.raises(SystemExit) as stop:
        voc_aug.main([str(tmp_path / 'other'), '--from-samples', str(samples), '--sbd', 'none',
                      '--exclude-difficult'])
    assert stop.value.code == 2 and not (tmp_path / 'other').exists()
    for alone in (['--labels-from', 'gt'], ['--exclude-difficult']):  # each refused on its own
        with pytest.raises(SystemExit) as stop:
            voc_aug.main([str(tmp_path / 'other'), '--from-samples', str(samples), *alone])
        assert stop.value.code == 2 and not (tmp_path / 'other').exists()


def test_a_split_that_cannot_be_made_writes_nothing(tmp_path, monkeypatch):
    """Rerun on a --from-samples devkit (train = val): the aug split would be empty, which the
    VOC configs would read as a dataset of no image; missing XML annotations are found before
    the aug split is rewritten. Both leave every file as it was."""
    monkeypatch.chdir(tmp_path)
    voc_aug = load_converter('voc_aug')
    voc_aug.main(['devkit', '--from-samples', str(shared_path('voc2012_val_samples'))])
    splits = tmp_path / 'devkit/VOC2012/ImageSets/Segmentation'
    before = {p.name: p.read_bytes() for p in splits.iterdir()}
    with pytest.raises(UserInputError, match='aug split would be empty: every image of .*train.txt'
                                             ' is in val.txt and no --sbd was given'):
        voc_aug.main(['devkit', '--labels-from', 'gt'])
    (splits / 'val.txt').write_text('voc_val_0\n')
    before['val.txt'] = (splits / 'val.txt').read_bytes()
    with pytest.raises(UserInputError, match=r'images have no .*Annotations/<id>.xml .*nothing was'):
        voc_aug.main(['devkit'])
    assert {p.name: p.read_bytes() for p in splits.iterdir()} == before


def test_ade20k_image_labels_from_annotations(tmp_path):
    """ADE20K annotations (0 = other) give the same classes as LoadImageLevelLabels reads off
    the ground truth with reduce_zero_label."""
    from mmdiffseg.datasets.transforms import LoadImageLevelLabels
    annotations = shared_path('ade20k_val_samples', 'annotations')
    out = tmp_path / 'image_labels.json'
    load_converter('image_labels').main([str(annotations), '--classes', 'ade20k',
                                         '--reduce-zero-label', '--out', str(out)])
    labels = json.loads(out.read_text())
    transform = LoadImageLevelLabels(classes='ade20k')
    for path in sorted(annotations.glob('*.png')):
        expected = transform(dict(seg_map_path=str(path), reduce_zero_label=True))['image_labels']
        assert labels[path.stem] == expected and expected


def test_image_labels_read_a_class_set_as_its_dataset_does(tmp_path):
    """ADE20K's reduce_zero_label is the default of --classes ade20k (as in the offline tools):
    without it, 0 ("other") would be read as 'wall' and every class shifted. A misspelt class
    set and an unwritable output are named, not turned into a one-class list or a traceback."""
    image_labels = load_converter('image_labels')
    annotations = str(shared_path('ade20k_val_samples', 'annotations'))
    outs = {}
    for flag in ([], ['--reduce-zero-label'], ['--no-reduce-zero-label']):
        outs[tuple(flag)] = out = tmp_path / f'labels{len(outs)}.json'
        image_labels.main([annotations, '--classes', 'ade20k', *flag, '--out', str(out)])
    assert outs[()].read_bytes() == outs[('--reduce-zero-label',)].read_bytes()
    assert outs[()].read_bytes() != outs[('--no-reduce-zero-label',)].read_bytes()
    with pytest.raises(UserInputError, match="'vocc' is not a class set; did you mean 'voc'"):
        image_labels.main([annotations, '--classes', 'vocc', '--out', str(tmp_path / 'x.json')])
    with pytest.raises(OutputWriteError):
        image_labels.main([annotations, '--classes', 'ade20k', '--out', str(tmp_path)])
    run = subprocess.run([sys.executable, str(CONVERTERS / 'image_labels.py'), annotations,
                          '--classes', 'vocc', '--out', str(tmp_path / 'x.json')],
                         capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.startswith('error: --classes') and \
        'Traceback' not in run.stderr


def test_cityscapes_image_labels_are_keyed_by_the_image_stems(tmp_path):
    """image_labels.py on Cityscapes' gtFine/<split>: it found nothing in the city sub-folders,
    read instanceIds with its .png default, and keyed frames without _leftImg8bit, which
    LoadImageLevelLabels and pseudo_label.py look up."""
    from mmdiffseg.datasets.transforms import LoadImageLevelLabels
    sample = shared_path('cityscapes_val_sample')
    out = tmp_path / 'image_labels.json'
    load_converter('image_labels').main([str(sample / 'gtFine' / 'val'), '--classes',
                                         'cityscapes', '--out', str(out)])
    image = sample / 'leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png'
    from_file = LoadImageLevelLabels(classes='cityscapes', ann_file=str(out))(
        dict(img_path=str(image)))['image_labels']
    from_gt = LoadImageLevelLabels(classes='cityscapes')(dict(seg_map_path=str(
        sample / 'gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelTrainIds.png')))
    assert list(json.loads(out.read_text())) == [image.stem]
    assert from_file == from_gt['image_labels'] and 'road' in from_file


def test_a_release_missing_images_or_masks_and_an_empty_sample_folder_are_named(tmp_path):
    """An aug-split image missing from JPEGImages (not VOC 2012), an image without SBD's or VOC's
    mask, and a sample folder without image-mask pairs: each refused naming what is missing and
    where, and no aug split or label file is written."""
    voc_aug = load_converter('voc_aug')
    voc = build_release(tmp_path)
    release = ['--sbd', str(tmp_path / 'data/benchmark_RELEASE')]
    (voc / 'JPEGImages' / f'{SBD_TRAIN[0]}.jpg').unlink()
    with pytest.raises(UserInputError, match=rf"1 images of the aug split are not in {voc}/"
                                             rf"JPEGImages \(e.g. \['{SBD_TRAIN[0]}'\]\); is it "
                                             'VOC 2012?'):
        voc_aug.main([str(tmp_path / 'data/VOCdevkit'), *release])
    voc = build_release(tmp_path / 'second')
    (tmp_path / 'second/data/benchmark_RELEASE/dataset/cls' / f'{IDS[7]}.mat').unlink()
    (voc / 'SegmentationClass' / f'{IDS[7]}.png').unlink()   # an SBD-only image: no VOC mask
    with pytest.raises(UserInputError, match=rf"no mask for {IDS[7]} \(neither SBD nor "
                                             rf"{voc}/SegmentationClass/{IDS[7]}.png\)"):
        voc_aug.main([str(tmp_path / 'second/data/VOCdevkit'), '--sbd',
                      str(tmp_path / 'second/data/benchmark_RELEASE')])
    for root in (tmp_path, tmp_path / 'second'):
        assert not (root / 'data/VOCdevkit/VOC2012/ImageSets/Segmentation/aug.txt').exists()
        assert not (root / 'data/VOCdevkit/VOC2012/image_labels.json').exists()
    (tmp_path / 'samples/JPEGImages').mkdir(parents=True)
    with pytest.raises(UserInputError, match=rf'no image with a mask in {tmp_path}/samples '):
        voc_aug.main([str(tmp_path / 'devkit'), '--from-samples', str(tmp_path / 'samples')])


def test_sample_folder_with_colour_masks_writes_nothing(tmp_path):
    """A sample folder whose masks are RGB renderings (not VOC's indexed PNGs) is refused naming
    the mask before any image, mask or split is written into the devkit."""
    voc_aug = load_converter('voc_aug')
    source = shared_path('voc2012_val_samples')
    samples = tmp_path / 'samples'
    (samples / 'SegmentationClass').mkdir(parents=True)
    (samples / 'JPEGImages').mkdir()
    ids = sorted(p.stem for p in (source / 'SegmentationClass').glob('*.png'))[:3]
    for image_id in ids:
        image = next((source / 'JPEGImages').glob(f'{image_id}.*'))
        (samples / 'JPEGImages' / image.name).write_bytes(image.read_bytes())
        mask = Image.open(source / 'SegmentationClass' / f'{image_id}.png')
        target = samples / 'SegmentationClass' / f'{image_id}.png'
        (mask.convert('RGB') if image_id == ids[-1] else mask).save(target)
    with pytest.raises(UserInputError, match=ids[-1]):
        voc_aug.main([str(tmp_path / 'devkit'), '--from-samples', str(samples)])
    assert not (tmp_path / 'devkit').exists()
