"""The unsupervised-protocol datasets and transforms (``datasets.unsupervised``): Cityscapes'
own colours for its non-train classes, SeeDiff's human / vehicle colours, a COCO-Stuff-27 class
subset read through mmseg's label map, and label resizing that passes over an absent map."""
import numpy as np
import pytest
from mmengine.registry import init_default_scope
from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from mmdiffseg.datasets import COCOStuff27Dataset  # registers the datasets and transforms

init_default_scope('mmseg')


def test_cityscapes27_draws_the_non_train_classes_in_cityscapes_colours():
    """Colours of the labelIds that are no train class, as Cityscapes' ``labels.py`` lists them
    (polegroup shares pole's grey)."""
    meta = DATASETS.get('Cityscapes27Dataset').METAINFO
    colors = dict(zip(meta['classes'], map(tuple, meta['palette'])))
    assert {name: colors[name] for name in (
        'parking', 'rail track', 'guard rail', 'bridge', 'tunnel', 'polegroup', 'caravan',
        'trailer')} == {'parking': (250, 170, 160), 'rail track': (230, 150, 140),
                        'guard rail': (180, 165, 180), 'bridge': (150, 100, 100),
                        'tunnel': (150, 120, 90), 'polegroup': (153, 153, 153),
                        'caravan': (0, 0, 90), 'trailer': (0, 0, 110)}
    assert colors['polegroup'] == colors['pole']


def test_human_vehicle_classes_take_the_person_and_car_colours_on_black():
    meta = DATASETS.get('CityscapesHumanVehicleDataset').METAINFO
    train = dict(zip(CityscapesDataset.METAINFO['classes'], CityscapesDataset.METAINFO['palette']))
    assert list(meta['classes']) == ['background', 'human', 'vehicle']
    assert [list(c) for c in meta['palette']] == [[0, 0, 0], list(train['person']),
                                                  list(train['car'])]


def test_cocostuff27_with_a_class_subset_maps_its_labels_as_mmseg_does(tmp_path):
    """Without fine labels a class subset in ``metainfo`` takes mmseg's label map: the kept
    classes renumbered in the subset's order, the others ignored (255)."""
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / 'img' / 'a.jpg')
    classes = COCOStuff27Dataset.METAINFO['classes']
    sky, wall, vehicle = (classes.index(n) for n in ('sky', 'wall', 'vehicle'))
    Image.fromarray(np.array([[sky, wall, vehicle], [255, wall, sky]], np.uint8)).save(
        tmp_path / 'ann' / 'a.png')
    prefix = dict(img_path=str(tmp_path / 'img'), seg_map_path=str(tmp_path / 'ann'))
    dataset = DATASETS.build(dict(type='COCOStuff27Dataset', data_prefix=prefix,
                                  metainfo=dict(classes=('wall', 'sky')),
                                  pipeline=[dict(type='LoadAnnotations')]))
    assert dataset[0]['gt_seg_map'].tolist() == [[1, 0, 255], [255, 0, 1]]


def test_label_resize_passes_over_a_label_field_that_is_absent():
    resize = TRANSFORMS.build(dict(type='ResizeHalfPixelLabels', scale=(4, 2), keep_ratio=False))
    out = resize.transform(dict(img=np.zeros((1, 2, 3), np.uint8), gt_seg_map=None,
                                seg_fields=['gt_seg_map']))
    assert out['gt_seg_map'] is None and out['img'].shape == (2, 4, 3)


def _one_label_folder(root, image_name, label_name, label):
    """``img/<image_name>`` (a black 2x2 image) and ``ann/<label_name>`` holding ``label``."""
    (root / 'img').mkdir()
    (root / 'ann').mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / 'img' / image_name)
    Image.fromarray(np.array(label, np.uint8)).save(root / 'ann' / label_name)
    return dict(img_path=str(root / 'img'), seg_map_path=str(root / 'ann'))


@pytest.mark.parametrize('dataset, files, label, classes, expected', [
    # labelIds road 7, sky 23, car 26, unlabeled 0 -> the 27 classes -> ('sky', 'road')
    ('Cityscapes27Dataset', ('a_leftImg8bit.png', 'a_gtFine_labelIds.png'), [[7, 23], [26, 0]],
     ('sky', 'road'), [[1, 0], [255, 255]]),
    # COCO-Stuff's own ids - 1: person 0, sky-other 156, car 2, unlabelled 255
    ('COCOStuff27Dataset', ('a.jpg', 'a.png'), [[0, 156], [2, 255]], ('sky', 'person'),
     [[1, 0], [255, 255]]),
    # train ids road 0, person 11, car 13 -> background / human / vehicle -> ('vehicle', ...)
    ('CityscapesHumanVehicleDataset', ('a_leftImg8bit.png', 'a_gtFine_labelTrainIds.png'),
     [[0, 11], [13, 255]], ('vehicle', 'background'), [[1, 255], [0, 255]])])
def test_a_class_subset_follows_the_protocols_label_map(tmp_path, dataset, files, label, classes,
                                                        expected):
    """A ``metainfo`` class subset (in another order) renumbers the protocol's classes as mmseg
    renumbers a plain dataset's, and each class keeps its colour (mmseg's palette lookup by
    label-map key raised an IndexError, or gave full-set indices with a palette given)."""
    prefix = _one_label_folder(tmp_path, *files, label)
    extra = dict(fine_labels=True) if dataset == 'COCOStuff27Dataset' else {}
    built = DATASETS.build(dict(type=dataset, data_prefix=prefix, metainfo=dict(classes=classes),
                                pipeline=[dict(type='LoadAnnotations')], **extra))
    assert built[0]['gt_seg_map'].tolist() == expected
    colours = dict(zip(DATASETS.get(dataset).METAINFO['classes'],
                       DATASETS.get(dataset).METAINFO['palette']))
    assert [list(c) for c in built.metainfo['palette']] == [list(colours[c]) for c in classes]
    mine = [[1, 2, 3], [4, 5, 6]]
    built = DATASETS.build(dict(type=dataset, data_prefix=prefix, pipeline=[],
                                metainfo=dict(classes=classes, palette=mine), **extra))
    assert built.metainfo['palette'] == mine
