"""The unsupervised-protocol datasets and transforms (``datasets.unsupervised``): their label
maps (Cityscapes-27, human / vehicle, COCO-Stuff-27 from fine labels), Cityscapes' own colours for
its non-train classes, SeeDiff's human / vehicle colours, a COCO-Stuff-27 class subset read through
mmseg's label map, the centre square crop and the label resizing of the evaluation protocol."""
import json

import numpy as np
import pytest
from sample_data import shared_path
from mmengine.registry import init_default_scope
from mmseg.datasets import CityscapesDataset
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from mmdiffseg.datasets import DATASET_CLASSES, Cityscapes27Dataset, COCOStuff27Dataset  # registers

init_default_scope('mmseg')
LOAD = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]


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


def test_cityscapes_27_and_human_vehicle_label_maps():
    root = shared_path('cityscapes_val_sample')
    prefix = dict(img_path=str(root / 'leftImg8bit/val'), seg_map_path=str(root / 'gtFine/val'))
    ids = np.array(Image.open(root / 'gtFine/val/frankfurt/'
                                     'frankfurt_000000_000294_gtFine_labelIds.png'))
    train = np.array(Image.open(root / 'gtFine/val/frankfurt/'
                                       'frankfurt_000000_000294_gtFine_labelTrainIds.png'))
    c27 = DATASETS.build(dict(type='Cityscapes27Dataset', data_prefix=prefix, pipeline=LOAD))[0]
    expected = np.where((ids >= 7) & (ids <= 33), ids.astype(np.int64) - 7, 255)
    assert np.array_equal(c27['gt_seg_map'], expected)
    hv = DATASETS.build(dict(type='CityscapesHumanVehicleDataset', data_prefix=prefix,
                             pipeline=LOAD))[0]['gt_seg_map']
    assert np.array_equal(hv == 1, np.isin(train, [11, 12]))
    assert np.array_equal(hv == 2, np.isin(train, [13, 14, 15, 16, 17, 18]))
    assert np.array_equal(hv == 255, train == 255)


def test_unsupervised_class_sets_are_drawn_in_visible_colours():
    """Cityscapes-27 in Cityscapes' own colours (its train classes as mmseg draws them); no class
    of either 27-class set is black, the colour mmseg's visualizer leaves ignored pixels."""
    from mmseg.datasets import CityscapesDataset
    c27 = DATASETS.get('Cityscapes27Dataset').METAINFO
    train = dict(zip(CityscapesDataset.METAINFO['classes'], CityscapesDataset.METAINFO['palette']))
    colors = dict(zip(c27['classes'], map(tuple, c27['palette'])))
    assert all(colors[name] == tuple(color) for name, color in train.items())
    assert colors['road'] == (128, 64, 128) and colors['caravan'] == (0, 0, 90)
    for meta in (c27, DATASETS.get('COCOStuff27Dataset').METAINFO):
        assert len(meta['palette']) == len(meta['classes']) == 27
        assert [0, 0, 0] not in [list(c) for c in meta['palette']]


def test_cocostuff_fine_ids_follow_the_supercategories():
    """Every fine class in one coarse class; the COCO panoptic categories that keep their
    COCO-Stuff id (every thing, unmerged stuff) agree with their supercategory."""
    from mmdiffseg.datasets.class_names import COCOSTUFF27_CLASSES, COCOSTUFF27_FINE_IDS
    coarse = {i: name for name, ids in COCOSTUFF27_FINE_IDS.items() for i in ids}
    assert list(COCOSTUFF27_FINE_IDS) == list(COCOSTUFF27_CLASSES)
    assert len(coarse) == sum(map(len, COCOSTUFF27_FINE_IDS.values())) == 80 + 91
    assert sorted(coarse) == sorted(set(range(1, 183)) - {12, 26, 29, 30, 45, 66, 68, 69, 71,
                                                          83, 91})
    categories = json.loads(shared_path('coco_val_samples', 'panopticapi',
                                        'panoptic_coco_categories.json').read_text())
    checked = 0
    for cat in categories:
        if cat['id'] <= 182:
            name = cat['supercategory']
            if name in ('food', 'furniture'):
                name += '-things' if cat['isthing'] else '-stuff'
            assert coarse[cat['id']] == name, cat
            checked += 1
    assert checked >= 80 + 10


def test_cocostuff27_reads_fine_labels_and_the_crop_is_square(tmp_path):
    """fine_labels=True maps COCO-Stuff's PNG values (id - 1) to the 27 classes on loading,
    'other' (183) and unlabelled to 255; CenterSquareCrop keeps the centred square."""
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(tmp_path / 'img' / 'a.jpg')
    fine = np.array([[0, 1, 71, 72, 91, 181],      # person, bicycle, tv, laptop, banner, wood
                     [182, 255, 168, 170, 179, 11],  # other, unlabelled, tree, wall, window,
                     #                                 a removed id (12)
                     [0] * 6, [0] * 6], np.uint8)
    Image.fromarray(fine).save(tmp_path / 'ann' / 'a.png')
    prefix = dict(img_path=str(tmp_path / 'img'), seg_map_path=str(tmp_path / 'ann'))
    pipeline = LOAD + [dict(type='CenterSquareCrop')]
    sample = DATASETS.build(dict(type='COCOStuff27Dataset', data_prefix=prefix, fine_labels=True,
                                 pipeline=pipeline))[0]
    classes = DATASET_CLASSES['cocostuff27']
    expected = [[classes.index(n) for n in ('vehicle', 'electronic', 'electronic', 'textile')],
                [255] + [classes.index(n) for n in ('plant', 'wall', 'window')]]
    assert sample['gt_seg_map'][:2].tolist() == expected          # columns 1..4 of 0..5
    assert sample['img'].shape == (4, 4, 3)
    as_is = DATASETS.build(dict(type='COCOStuff27Dataset', data_prefix=prefix, pipeline=LOAD))[0]
    assert np.array_equal(as_is['gt_seg_map'], fine)
    wide = DATASETS.build(dict(type='COCOStuff27Dataset', data_prefix=prefix, fine_labels=True,
                               pipeline=LOAD))[0]['gt_seg_map']
    assert wide[0, 0] == classes.index('person') and wide[1, 5] == wide[1, 0] == 255


def test_center_square_crop_floors_the_offset_and_labels_resize_half_pixel():
    """CenterSquareCrop: offset (h - side) // 2 as DiffSeg's process_image (mmcv's CenterCrop
    rounds 1.5 to 2); ResizeHalfPixelLabels: label pixel d of the output reads source pixel
    floor((d + 0.5) * in / out) (TF's / PIL's nearest), the image is mmseg's bilinear,
    unrounded (``float_image=False``: mmseg's uint8 image)."""
    img = np.arange(5 * 8 * 3, dtype=np.uint8).reshape(5, 8, 3)
    label = np.arange(5 * 8, dtype=np.uint8).reshape(5, 8)
    out = TRANSFORMS.build(dict(type='CenterSquareCrop')).transform(
        dict(img=img, gt_seg_map=label, seg_fields=['gt_seg_map']))
    assert np.array_equal(out['gt_seg_map'], label[:, 1:6])       # (8 - 5) // 2 = 1
    assert np.array_equal(out['img'], img[:, 1:6]) and out['img_shape'] == (5, 5)

    rng = np.random.default_rng(0)
    resize = TRANSFORMS.build(dict(type='ResizeHalfPixelLabels', scale=(4, 3), keep_ratio=False))
    for (h, w) in [(6, 8), (7, 5), (3, 4), (2, 2)]:
        label = rng.integers(0, 27, (h, w), dtype=np.uint8)
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = resize.transform(dict(img=img.copy(), gt_seg_map=label, seg_fields=['gt_seg_map']))
        rows = np.floor((np.arange(3) + 0.5) * h / 3).astype(int)
        cols = np.floor((np.arange(4) + 0.5) * w / 4).astype(int)
        assert np.array_equal(out['gt_seg_map'], label[rows][:, cols]), (h, w)
        plain = TRANSFORMS.build(dict(type='Resize', scale=(4, 3), keep_ratio=False)).transform(
            dict(img=img.copy(), gt_seg_map=label, seg_fields=['gt_seg_map']))
        rounded = TRANSFORMS.build(dict(type='ResizeHalfPixelLabels', scale=(4, 3),
                                        keep_ratio=False, float_image=False)).transform(
            dict(img=img.copy(), gt_seg_map=label, seg_fields=['gt_seg_map']))
        assert np.array_equal(rounded['img'], plain['img']) and plain['img'].dtype == np.uint8
        assert out['img'].dtype == np.float32
        np.testing.assert_allclose(out['img'], plain['img'], atol=0.75)


def test_center_square_crop_of_a_portrait_image_keeps_the_middle_rows():
    """A portrait image (COCO has many) is cropped in height: rows (h - side) // 2 on."""
    img = np.arange(8 * 5 * 3, dtype=np.uint8).reshape(8, 5, 3)
    label = np.arange(8 * 5, dtype=np.uint8).reshape(8, 5)
    out = TRANSFORMS.build(dict(type='CenterSquareCrop')).transform(
        dict(img=img, gt_seg_map=label, seg_fields=['gt_seg_map']))
    assert np.array_equal(out['gt_seg_map'], label[1:6])           # (8 - 5) // 2 = 1
    assert np.array_equal(out['img'], img[1:6]) and out['img_shape'] == (5, 5)


def test_the_protocols_image_resize_keeps_tfs_unrounded_bilinear_values():
    """TF's bilinear resize (half-pixel centres, edges clamped, no antialiasing) returns floats:
    a row [0, 1] doubled in width samples the source at x = -0.25, 0.25, 0.75, 1.25, i.e.
    [0, 0.25, 0.75, 1]; mmseg's uint8 resize rounds that to [0, 0, 1, 1]."""
    img = np.zeros((1, 2, 3), dtype=np.uint8)
    img[:, 1] = 1
    want = np.repeat(np.array([0, 0.25, 0.75, 1], dtype=np.float32)[None, :, None], 3, axis=2)
    kept = TRANSFORMS.build(dict(type='ResizeHalfPixelLabels', scale=(4, 1), keep_ratio=False))
    np.testing.assert_allclose(kept.transform(dict(img=img.copy()))['img'], want, atol=1e-6)
    rounded = TRANSFORMS.build(dict(type='ResizeHalfPixelLabels', scale=(4, 1), keep_ratio=False,
                                    float_image=False))
    assert rounded.transform(dict(img=img.copy()))['img'][0, :, 0].tolist() == [0, 0, 1, 1]


def test_cityscapes_27_label_map_takes_label_ids_7_to_33_only():
    """The 27 classes are labelIds 7..33 (class = labelId - 7); 6 and 34 are no class (255)."""
    label_map = Cityscapes27Dataset.get_label_map()
    assert [label_map[i] for i in (0, 6, 7, 8, 33, 34, 254)] == [255, 255, 0, 1, 26, 255, 255]


def test_protocol_configs_read_a_jpeg_as_stored_whatever_its_exif_orientation(tmp_path):
    """A JPEG tagged "rotate 90" (EXIF orientation 6) is read as stored by the DiffSeg protocol
    pipelines, as the released code's decode_jpeg does, so it keeps its label map's shape; loaded
    rotated (mmcv's default), CenterSquareCrop refuses it, naming both files and the setting."""
    from mmengine.config import Config
    (tmp_path / 'images' / 'val2017').mkdir(parents=True)
    (tmp_path / 'annotations' / 'val2017').mkdir(parents=True)
    (tmp_path / 'curated' / 'val2017').mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((4, 6, 3), 90, np.uint8)).save(
        tmp_path / 'images' / 'val2017' / 'a.jpg', exif=exif)
    Image.fromarray(np.full((4, 6), 170, np.uint8)).save(tmp_path / 'annotations/val2017/a.png')
    (tmp_path / 'curated/val2017/Coco164kFull_Stuff_Coarse_7.txt').write_text('a\n')
    cfg = Config.fromfile('configs/_base_/datasets/cocostuff27_unsupervised.py')
    dataset = dict(cfg.cocostuff27_test_dataloader.dataset, data_root=str(tmp_path))
    dataset.pop('_delete_')
    sample = DATASETS.build(dataset)[0]
    assert sample['data_samples'].gt_sem_seg.data.shape[-2:] == (512, 512)
    assert sample['inputs'].shape[-2:] == (512, 512)
    assert (sample['data_samples'].gt_sem_seg.data == COCOStuff27Dataset.METAINFO['classes']
            .index('wall')).all()                         # fine 170 = wall-concrete
    rotated = dict(dataset, pipeline=LOAD + [dict(type='CenterSquareCrop')])
    with pytest.raises(ValueError, match=r"a.png is 6x4 but its image .*a.jpg is 4x6: .*"
                                         r"color_type='color_ignore_orientation'"):
        DATASETS.build(rotated)[0]


def test_fine_labels_refuse_maps_that_hold_the_27_classes_already(tmp_path):
    """27-class maps (person 9 ... sky 23) read with fine_labels=True would become other classes
    (fine ids 10 and 24 are outdoor and animal things): the dataset refuses them when listing,
    naming the setting, and the preflight shows it; one map with stuff (>= 91) is fine."""
    from mmdiffseg.preflight_data import check_listed_files
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    for name, values in (('a', [9, 10, 255]), ('b', [22, 23, 0])):
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / 'img' / f'{name}.jpg')
        Image.fromarray(np.array([values, values], np.uint8)).save(tmp_path / 'ann' / f'{name}.png')
    prefix = dict(img_path=str(tmp_path / 'img'), seg_map_path=str(tmp_path / 'ann'))
    config = dict(type='COCOStuff27Dataset', data_prefix=prefix, fine_labels=True, pipeline=LOAD)
    with pytest.raises(ValueError, match=r'fine_labels=True\): the 2 label maps read of 2 .* hold '
                                         r'only values 0\.\.26 and 255.*set fine_labels=False'):
        DATASETS.build(config)
    problems = check_listed_files(config, 'test_dataloader.dataset')
    assert len(problems) == 1 and 'set fine_labels=False' in str(problems[0])
    assert len(DATASETS.build(dict(config, fine_labels=False))) == 2
    Image.fromarray(np.array([[9, 91, 255]], np.uint8)).save(tmp_path / 'ann' / 'b.png')
    assert len(DATASETS.build(config)) == 2


#: sha256 (first 16 hex digits) of ``tf.io.decode_jpeg(data, 3)`` (TensorFlow 2.21.0, RGB) of the
#: shared samples: DiffSeg's release decodes COCO so
TF_DECODED = {
    'coco_val_samples/panopticapi/input_images/000000142238.jpg': '4500b5880606f8bf',
    'coco_val_samples/panopticapi/input_images/000000439180.jpg': 'a7179e0656944268',
    'ade20k_val_samples/images/ADE_val_00000001.jpg': '7903e59bc8a62b70',
    'ade20k_val_samples/images/ADE_val_00000002.jpg': '0d20510283265fad',
    'ade20k_val_samples/images/ADE_val_00000003.jpg': '32f03af5be634fea'}


@pytest.mark.parametrize('name', sorted(TF_DECODED))
def test_jpegs_decode_as_tensorflow_decodes_them_and_opencv_does_not(name):
    """LoadImageTFDecode (the COCO-Stuff protocol config's loader) gives TensorFlow's pixels
    (BGR, as mmseg's loaders); OpenCV's accurate IDCT does not."""
    import hashlib

    from mmengine.config import Config
    path = shared_path(*name.split('/'))
    cfg = Config.fromfile('configs/_base_/datasets/cocostuff27_unsupervised.py')
    load = TRANSFORMS.build(cfg.cocostuff27_test_dataloader.dataset.pipeline[0])
    img = load.transform(dict(img_path=str(path)))['img']

    def digest(rgb):
        return hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()[:16]
    assert img.dtype == np.uint8 and digest(img[..., ::-1]) == TF_DECODED[name]
    opencv = TRANSFORMS.build(dict(type='LoadImageFromFile')).transform(
        dict(img_path=str(path)))['img']
    assert opencv.shape == img.shape and digest(opencv[..., ::-1]) != TF_DECODED[name]


def test_other_files_load_as_mmcv_loads_them_without_exif_rotation(tmp_path):
    """A PNG (Cityscapes' images) goes through mmcv's decoding; float32 on request."""
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'a.png')
    out = TRANSFORMS.build(dict(type='LoadImageTFDecode', to_float32=True)).transform(
        dict(img_path=str(tmp_path / 'a.png')))
    assert out['img'].dtype == np.float32 and np.array_equal(out['img'][..., ::-1], rgb)
    assert out['img_shape'] == out['ori_shape'] == (5, 7)
    # a damaged JPEG is named; with ignore_empty it and a missing file give None, as mmcv's
    path = shared_path('coco_val_samples', 'panopticapi', 'input_images', '000000142238.jpg')
    (tmp_path / 'cut.jpg').write_bytes(path.read_bytes()[:5000])
    load = TRANSFORMS.build(dict(type='LoadImageTFDecode'))
    with pytest.raises(ValueError, match=r'LoadImageTFDecode: cannot decode .*cut\.jpg: '):
        load.transform(dict(img_path=str(tmp_path / 'cut.jpg')))
    lenient = TRANSFORMS.build(dict(type='LoadImageTFDecode', ignore_empty=True))
    for name in ('cut.jpg', 'gone.jpg'):
        assert lenient.transform(dict(img_path=str(tmp_path / name))) is None


def test_other_files_are_read_once_and_a_damaged_one_is_named(tmp_path, monkeypatch):
    """A PNG's bytes are fetched once (Cityscapes' images come from the dataset's file backend,
    possibly remote), then decoded by mmcv; bytes no decoder reads are named, or None with
    ignore_empty."""
    from mmdiffseg.datasets import unsupervised
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'a.png')
    (tmp_path / 'b.png').write_bytes(b'\x89PNG not really')
    fetched = []
    real_get = unsupervised.fileio.get
    monkeypatch.setattr(unsupervised.fileio, 'get',
                        lambda path, **kw: fetched.append(path) or real_get(path, **kw))
    load = TRANSFORMS.build(dict(type='LoadImageTFDecode'))
    out = load.transform(dict(img_path=str(tmp_path / 'a.png')))
    assert fetched == [str(tmp_path / 'a.png')] and np.array_equal(out['img'][..., ::-1], rgb)
    (tmp_path / 'empty.png').write_bytes(b'')   # cv2.error, not a ValueError
    for backend in ('cv2', 'pillow'):            # pillow: UnidentifiedImageError
        load = TRANSFORMS.build(dict(type='LoadImageTFDecode', imdecode_backend=backend))
        for name in ('b.png', 'empty.png'):
            with pytest.raises(ValueError, match=rf'LoadImageTFDecode: cannot decode .*{name}: '):
                load.transform(dict(img_path=str(tmp_path / name)))
            lenient = TRANSFORMS.build(dict(type='LoadImageTFDecode', ignore_empty=True,
                                            imdecode_backend=backend))
            assert lenient.transform(dict(img_path=str(tmp_path / name))) is None


def test_the_coarse_maps_check_reads_through_the_datasets_file_backend():
    """Label maps on another storage (mmengine's file backends, as the dataset's backend_args
    name it) are read there, not opened as local files."""
    import io

    from mmengine.fileio import BaseStorageBackend, register_backend

    from mmdiffseg.datasets.unsupervised import coarse_looking_maps

    def png(values):
        buffer = io.BytesIO()
        Image.fromarray(np.array([values], np.uint8)).save(buffer, 'PNG')
        return buffer.getvalue()
    stored = {'mem://a.png': png([9, 23]), 'mem://b.png': png([0, 91])}

    class InMemory(BaseStorageBackend):
        def __init__(self, **kwargs):
            pass

        def get(self, filepath):
            return stored[str(filepath)]

        def get_text(self, filepath, encoding='utf-8'):
            return stored[str(filepath)].decode(encoding)

    register_backend('mmdiffseg_test_memory', InMemory, force=True)
    args = dict(backend='mmdiffseg_test_memory')
    assert 'look like maps of the 27 classes' in coarse_looking_maps(['mem://a.png'],
                                                                     backend_args=args)
    assert coarse_looking_maps(['mem://a.png', 'mem://b.png'], backend_args=args) is None
