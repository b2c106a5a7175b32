"""Synthetic and pseudo-label folders: loading, ConcatDataset with real data, clear errors."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from sample_data import shared_path
from mmengine.dataset import ConcatDataset
from mmengine.registry import init_default_scope
from mmseg.datasets import ADE20KDataset, PascalVOCDataset
from mmseg.registry import DATASETS
from PIL import Image

import mmdiffseg  # noqa: F401
import mmdiffseg.datasets  # noqa: F401
from mmdiffseg.apis.folders import palette_for
from mmdiffseg.datasets import DATASET_CLASSES

init_default_scope('mmseg')
VOC_NAMES = ('voc_val_0', 'voc_val_1', 'voc_val_20')
LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]


def write_manifest(folder, classes, **extra):
    header = dict(tool='synthesize', classes=list(classes), **extra)
    (folder / 'manifest.jsonl').write_text(json.dumps(header) + '\n'
                                           + json.dumps(dict(id='x', files=[])) + '\n')


def make_synthetic(root, names=VOC_NAMES, classes=DATASET_CLASSES['voc'], labels=None):
    """The layout tools/synthesize.py writes, from the VOC samples (JPEG images)."""
    voc = shared_path('voc2012_val_samples')
    (root / 'JPEGImages').mkdir(parents=True)
    (root / 'SegmentationClass').mkdir()
    (root / 'ImageSets/Segmentation').mkdir(parents=True)
    for name in names:
        image = Image.open(voc / 'JPEGImages' / f'{name}.png').convert('RGB')
        image.save(root / 'JPEGImages' / f'{name}.jpg')
        label = labels(name) if labels else Image.open(voc / 'SegmentationClass' / f'{name}.png')
        # (small label patterns stretched to their image's size, as the tools write labels)
        label.resize(image.size, Image.NEAREST).save(root / 'SegmentationClass' / f'{name}.png')
    (root / 'ImageSets/Segmentation/train.txt').write_text('\n'.join(names) + '\n')
    write_manifest(root, classes)
    return root


def test_synthetic_voc_loads_with_voc_metainfo(tmp_path):
    ds = DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(make_synthetic(tmp_path)),
                             pipeline=LOAD))
    assert len(ds) == 3
    assert ds.metainfo['classes'] == PascalVOCDataset.METAINFO['classes']
    voc_gt = np.array(Image.open(shared_path('voc2012_val_samples', 'SegmentationClass',
                                             'voc_val_0.png')))
    assert np.array_equal(ds[0]['gt_seg_map'], voc_gt)


def test_synthetic_mixes_with_real_voc(tmp_path):
    synthetic = dict(type='SyntheticVOCDataset', data_root=str(make_synthetic(tmp_path / 's')),
                     pipeline=LOAD)
    real = dict(type='PascalVOCDataset', data_root=str(make_real_voc(tmp_path / 'r')),
                img_suffix='.png', data_prefix=dict(img_path='JPEGImages',
                                                    seg_map_path='SegmentationClass'),
                ann_file='train.txt', pipeline=LOAD)
    mixed = ConcatDataset([synthetic, real])
    assert len(mixed) == 5
    assert mixed.metainfo['classes'] == PascalVOCDataset.METAINFO['classes']
    assert mixed[4]['gt_seg_map'].shape == mixed[4]['img'].shape[:2]


def make_real_voc(root):
    voc = shared_path('voc2012_val_samples')
    shutil.copytree(voc, root, ignore=shutil.ignore_patterns('*.md', '*.txt'))
    (root / 'train.txt').write_text('voc_val_0\nvoc_val_1\n')
    return root


def test_label_folder_that_does_not_match_images(tmp_path):
    root = make_synthetic(tmp_path)
    (root / 'SegmentationClass' / 'voc_val_1.png').rename(root / 'SegmentationClass' / 'other.png')
    with pytest.raises(FileNotFoundError, match=r'does not match the images: 1 of 3.*voc_val_1.*'
                       r'1 label\(s\) of other images.*other.png'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))
    (root / 'SegmentationClass' / 'other.png').unlink()
    with pytest.raises(FileNotFoundError) as missing:  # (no 'holds 0 label(s) ..., e.g. []')
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))
    assert str(missing.value).endswith("have no label, e.g. ['voc_val_1.png']")


def test_labels_of_another_size_than_their_images_are_refused(tmp_path):
    """Labels resized (or of other images) passed: RandomCrop cut them against their images,
    then Mask2Former stopped mid-run on a size mismatch. The start-up check names the label,
    both sizes and the folder."""
    root = make_synthetic(tmp_path)
    label = root / 'SegmentationClass' / 'voc_val_20.png'
    Image.open(label).resize((513, 600), Image.NEAREST).save(label)
    with pytest.raises(ValueError, match=rf'^SyntheticVOCDataset: the label {label} is 513x600 '
                       rf'but its image .*voc_val_20.jpg is 513x513 \(as training decodes it\): '
                       rf'the labels in {label.parent} were not made from these images'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))
    DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD,
                        check_files=2))   # (the start-up check reads the first labels only)


def test_labels_the_tool_could_not_make_point_at_the_split_file_it_wrote(tmp_path):
    """A tool leaves an image it could not label out of its label folder and split file (an
    ADE20K image naming more classes than a prompt holds): every image listed without a split
    file, the refusal names the split file as the ann_file to train on, which then builds."""
    root = make_synthetic(tmp_path)
    (root / 'SegmentationClass' / 'voc_val_1.png').unlink()
    split = root / 'ImageSets/Segmentation/train.txt'
    split.write_text('voc_val_0\nvoc_val_20\n')
    cfg = dict(type='PseudoLabelVOCDataset', pipeline=LOAD, data_prefix=dict(
        img_path=str(root / 'JPEGImages'), seg_map_path=str(root / 'SegmentationClass')))
    with pytest.raises(FileNotFoundError, match=r'1 of 3 image\(s\) have no label.*; '
                       + re.escape(f'{split} lists the images the tool labelled (it leaves out '
                                   'those it could not): set ann_file to it')):
        DATASETS.build(cfg)
    assert len(DATASETS.build(dict(cfg, ann_file=str(split)))) == 2


def test_an_empty_split_file_is_named_not_the_full_image_folder(tmp_path):
    root = make_synthetic(tmp_path)
    (root / 'ImageSets/Segmentation/train.txt').write_text('\n')
    with pytest.raises(FileNotFoundError, match=r'SyntheticVOCDataset: the split file '
                       r'.*train.txt lists no images'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))


def test_manifest_with_other_classes(tmp_path):
    root = make_synthetic(tmp_path, classes=['background', 'cat'])
    with pytest.raises(ValueError, match="index the classes \\['background', 'cat'\\].*"
                                         "synthesize.py --classes voc"):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))


def test_missing_manifest(tmp_path):
    root = make_synthetic(tmp_path)
    (root / 'manifest.jsonl').unlink()
    with pytest.raises(FileNotFoundError, match='no manifest'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))
    ds = DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD,
                             require_manifest=False))
    assert len(ds) == 3


def test_cityscapes_label_ids_instead_of_train_ids(tmp_path):
    """Label values outside the classes (here labelId 26 'car' for 3 classes) fail loudly."""
    frame = shared_path('cityscapes_val_sample', 'gtFine/val/frankfurt',
                        'frankfurt_000000_000294_gtFine_labelIds.png')
    root = make_synthetic(tmp_path, names=('voc_val_0',),
                          classes=DATASET_CLASSES['cityscapes_human_vehicle'],
                          labels=lambda name: Image.open(frame).resize((513, 513), Image.NEAREST))
    with pytest.raises(ValueError, match='outside the 3 classes.*wrong label convention'):
        DATASETS.build(dict(type='SyntheticCityscapesDataset', data_root=str(root), pipeline=LOAD))


def ade_pseudo_folder(tmp_path, reduce_zero_label_written=False):
    """Generated labels (0-based) for the ADE20K samples, as tools/pseudo_label.py writes them."""
    ade = shared_path('ade20k_val_samples')
    labels = tmp_path / 'pseudo' / 'SegmentationClass'
    labels.mkdir(parents=True)
    for png in sorted((ade / 'annotations').glob('*.png')):
        raw = np.array(Image.open(png)).astype(np.int64)
        Image.fromarray(np.where(raw == 0, 255, raw - 1).astype(np.uint8)).save(labels / png.name)
    extra = dict(reduce_zero_label=True) if reduce_zero_label_written else {}
    write_manifest(labels.parent, DATASET_CLASSES['ade20k'], **extra)
    return ade, labels


def test_ade_pseudo_labels_equal_ade_ground_truth_and_mix(tmp_path):
    ade, labels = ade_pseudo_folder(tmp_path)
    pseudo = dict(type='PseudoLabelADE20KDataset',
                  data_prefix=dict(img_path=str(ade / 'images'), seg_map_path=str(labels)),
                  pipeline=LOAD)
    real = dict(type='ADE20KDataset', data_prefix=dict(img_path=str(ade / 'images'),
                                                       seg_map_path=str(ade / 'annotations')),
                pipeline=LOAD)
    with pytest.raises(ValueError, match='meta information'):  # reduce_zero_label differs
        ConcatDataset([pseudo, real])
    mixed = ConcatDataset([pseudo, real], ignore_keys=['reduce_zero_label'])
    assert mixed.metainfo['classes'] == ADE20KDataset.METAINFO['classes']
    for i in range(3):   # each sample applies its own convention: identical labels
        assert np.array_equal(mixed[i]['gt_seg_map'], mixed[i + 3]['gt_seg_map'])


def test_ade_convention_mix_ups(tmp_path):
    ade, labels = ade_pseudo_folder(tmp_path, reduce_zero_label_written=True)
    prefix = dict(img_path=str(ade / 'images'), seg_map_path=str(labels))
    with pytest.raises(ValueError, match='written with reduce_zero_label=True but the dataset '
                                         'uses reduce_zero_label=False'):
        DATASETS.build(dict(type='PseudoLabelADE20KDataset', data_prefix=prefix, pipeline=LOAD))
    with pytest.raises(ValueError, match=r'LoadAnnotations\(reduce_zero_label=True\)'):
        DATASETS.build(dict(type='PseudoLabelADE20KDataset', data_prefix=prefix,
                            pipeline=[dict(type='LoadAnnotations', reduce_zero_label=True)]))


def test_a_custom_class_list_is_read_as_the_files_hold_it(tmp_path):
    """Labels written for a custom class list (their manifest records it) are read unmapped,
    by the generic datasets or by a VOC one whose metainfo gives that list: mmseg's label map
    from VOC's classes (person 15 -> 1, others -> 255) would erase them."""
    classes = ['background', 'person', 'horse', 'cat', 'sheep']
    values = {name: index for index, name in enumerate(VOC_NAMES, start=1)}  # 1, 2, 3

    def label(name):
        array = np.zeros((32, 32), dtype=np.uint8)
        array[8:24, 8:24] = values[name]
        array[0, 0] = 255
        return Image.fromarray(array)
    root = make_synthetic(tmp_path, classes=classes, labels=label)
    for kind in ('SyntheticDataset', 'SyntheticVOCDataset'):
        ds = DATASETS.build(dict(type=kind, data_root=str(root), pipeline=LOAD,
                                 metainfo=dict(classes=classes)))
        assert list(ds.metainfo['classes']) == classes and ds.label_map is None
        for index, name in enumerate(VOC_NAMES):
            assert sorted(np.unique(ds[index]['gt_seg_map'])) == [0, values[name], 255]
    own = classes[:3] + ['couch']  # a name VOC lacks: only the generic datasets take it
    write_manifest(root, own)
    images = root / 'JPEGImages'  # a camera's and a converter's names: the tools label them all
    (images / f'{VOC_NAMES[0]}.jpg').rename(images / f'{VOC_NAMES[0]}.JPG')
    Image.open(images / f'{VOC_NAMES[1]}.jpg').save(images / f'{VOC_NAMES[1]}.png')
    (images / f'{VOC_NAMES[1]}.jpg').unlink()
    pseudo = dict(type='PseudoLabelDataset', data_root=str(root), pipeline=LOAD,
                  ann_file='ImageSets/Segmentation/train.txt',
                  data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    ds = DATASETS.build(dict(pseudo, metainfo=dict(classes=own)))
    assert ds.metainfo['palette'] == palette_for(own)  # the colours of the tools' label PNGs
    assert [Path(ds.get_data_info(i)['img_path']).name for i in range(3)] == [
        f'{VOC_NAMES[0]}.JPG', f'{VOC_NAMES[1]}.png', f'{VOC_NAMES[2]}.jpg']
    assert sorted(np.unique(ds[2]['gt_seg_map'])) == [0, 3, 255]
    with pytest.raises(FileNotFoundError, match=f"the images are named '{VOC_NAMES[0]}.JPG': set "
                       r"img_suffix='.JPG', or img_suffix=None for any image suffix"):
        DATASETS.build(dict(pseudo, metainfo=dict(classes=own), img_suffix='.jpg'))
    with pytest.raises(ValueError, match=r'SyntheticDataset needs metainfo=dict\(classes'):
        DATASETS.build(dict(type='SyntheticDataset', data_root=str(root), pipeline=LOAD))
    with pytest.raises(ValueError, match="index the classes \\['background', 'person', 'horse', "
                                         "'couch'\\], but this dataset has"):
        DATASETS.build(dict(pseudo, metainfo=dict(classes=classes[:3] + ['sheep'])))


def test_a_label_value_equal_to_the_class_count_is_refused(tmp_path):
    """Two classes index 0 and 1: a label file holding 2 (one past the last class) is refused at
    start-up, as any value outside the classes is; 255 (unsure) is not."""
    def label(name):
        return Image.fromarray(np.array([[0, 1], [255, 2 if name == VOC_NAMES[0] else 1]],
                                        dtype=np.uint8))
    root = make_synthetic(tmp_path, classes=['background', 'cat'], labels=label)
    with pytest.raises(ValueError, match=r'holds values \[2\] outside the 2 classes'):
        DATASETS.build(dict(type='SyntheticDataset', data_root=str(root), pipeline=LOAD,
                            metainfo=dict(classes=['background', 'cat'])))


def test_a_dataset_reading_reduce_zero_label_refuses_0_based_labels(tmp_path):
    """The convention check works both ways: labels written 0-based (the manifest has no
    reduce_zero_label) are refused by a dataset set to reduce_zero_label=True, and so is a
    pipeline forcing LoadAnnotations(reduce_zero_label=False) on it."""
    root = make_synthetic(tmp_path)
    with pytest.raises(ValueError, match='written with reduce_zero_label=False but the dataset '
                                         'uses reduce_zero_label=True'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD,
                            reduce_zero_label=True))
    with pytest.raises(ValueError, match=r'LoadAnnotations\(reduce_zero_label=False\) but the '
                                         'dataset uses reduce_zero_label=True'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), reduce_zero_label=True,
                            pipeline=[dict(type='LoadAnnotations', reduce_zero_label=False)]))


def test_cityscapes_pseudo_labels_and_synthetic_ade20k_load_as_written(tmp_path):
    """Cityscapes frames in city folders with the flat label folder pseudo_label.py writes
    (``<frame>_leftImg8bit.png``, train ids); synthetic ADE20K pairs keep 0-based labels."""
    city = shared_path('cityscapes_val_sample')
    frame = 'frankfurt_000000_000294'
    labels = tmp_path / 'pseudo' / 'SegmentationClass'
    labels.mkdir(parents=True)
    train_ids = city / 'gtFine/val/frankfurt' / f'{frame}_gtFine_labelTrainIds.png'
    shutil.copy(train_ids, labels / f'{frame}_leftImg8bit.png')
    write_manifest(labels.parent, DATASET_CLASSES['cityscapes'])
    ds = DATASETS.build(dict(type='PseudoLabelCityscapesDataset', data_root=str(city),
                             data_prefix=dict(img_path='leftImg8bit/val', seg_map_path=str(labels)),
                             pipeline=LOAD))
    assert len(ds) == 1 and ds[0]['img_path'].endswith(f'frankfurt/{frame}_leftImg8bit.png')
    assert np.array_equal(ds[0]['gt_seg_map'], np.array(Image.open(train_ids)))
    # the split file the tool writes (file names without extension; the dataset's own hint
    # names it) and mmseg's lines (city/frame) both list the frame: the first was not found
    for line in (f'{frame}_leftImg8bit', f'frankfurt/{frame}'):
        (tmp_path / 'train.txt').write_text(line + '\n')
        listed = DATASETS.build(dict(
            type='PseudoLabelCityscapesDataset', data_root=str(city), pipeline=LOAD,
            ann_file=str(tmp_path / 'train.txt'),
            data_prefix=dict(img_path='leftImg8bit/val', seg_map_path=str(labels))))
        assert len(listed) == 1 and listed.get_data_info(0)['img_path'] == ds[0]['img_path']

    ade = np.arange(513 * 513).reshape(513, 513) % 150
    root = make_synthetic(tmp_path / 'ade', names=VOC_NAMES[:1], classes=DATASET_CLASSES['ade20k'],
                          labels=lambda name: Image.fromarray(ade.astype(np.uint8)))
    ds = DATASETS.build(dict(type='SyntheticADE20KDataset', data_root=str(root), pipeline=LOAD))
    assert ds.metainfo['classes'] == ADE20KDataset.METAINFO['classes']
    assert not ds.reduce_zero_label and np.array_equal(ds[0]['gt_seg_map'], ade)
