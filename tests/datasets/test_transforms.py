"""Image-level labels, the label cache and the source-index maps of LoadPseudoLabel."""
import json

import numpy as np
import pytest
import torch
from sample_data import shared_path
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

import mmdiffseg  # noqa: F401
import mmdiffseg.datasets  # noqa: F401
from mmdiffseg.datasets import LabelCache, LoadImageLevelLabels, label_key
from mmdiffseg.datasets import transforms
from mmdiffseg.datasets.transforms import (decode_source_index, encode_source_index,
                                           reduced_zero_label)
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS

init_default_scope('mmseg')


@MASK_GENERATORS.register_module(force=True)
class FixedConfigGenerator(MaskGenerator):
    """Only its config matters here (cache signatures)."""
    method = 'fixed'

    def __init__(self, classes=('background', 'cat'), level=1):
        super().__init__(classes)
        self.level = level

    def config_dict(self):
        return dict(method=self.method, classes=self.classes, level=self.level)


def cache_cfg(tmp_path, level=1):
    return dict(cache_dir=str(tmp_path / 'cache'), model='some/hub-model',
                generator=dict(type='FixedConfigGenerator', level=level))


def voc_sample(name='voc_val_0'):
    root = shared_path('voc2012_val_samples')
    return dict(img_path=str(root / 'JPEGImages' / f'{name}.png'),
                seg_map_path=str(root / 'SegmentationClass' / f'{name}.png'),
                reduce_zero_label=False, label_map=None, seg_fields=[])


# -- source-index maps ----------------------------------------------------------------------------
def test_source_index_round_trip_and_padding():
    enc = encode_source_index(300, 700)
    dec = decode_source_index(enc)
    assert dec[0, 0] == 0 and dec[1, 0] == 700 and dec[-1, -1] == 300 * 700 - 1
    assert np.array_equal(dec.ravel(), np.arange(300 * 700))
    padded = np.full((2, 2, 4), 255, np.uint8)           # mmcv Pad with seg_pad_val=255
    rotated_border = np.array([[[255, 0, 0, 0]]], np.uint8)  # cv2 border of a scalar 255
    assert (decode_source_index(padded) == -1).all()
    assert decode_source_index(rotated_border)[0, 0] == -1


def test_source_index_of_a_large_photo_and_the_limit():
    """A 24 Mpx photo's indices pass 2^24 (the first byte is used); past 2^31 pixels: refused."""
    enc = encode_source_index(4000, 6000)
    dec = decode_source_index(enc[::1999, ::2999])
    assert dec.tolist() == [[0, 2999, 5998], [1999 * 6000, 1999 * 6000 + 2999, 1999 * 6000 + 5998],
                            [3998 * 6000, 3998 * 6000 + 2999, 3998 * 6000 + 5998]]
    assert enc[-1, -1, 0] == (4000 * 6000 - 1) >> 24 == 1
    with pytest.raises(ValueError, match='too large'):
        encode_source_index(50000, 50000)


def test_source_index_limit_is_inclusive_and_its_last_index_decodes(monkeypatch):
    """The size limit is inclusive (checked at a small patched limit); the last index of an image
    at the real limit, 2^31 - 1, has first byte 127 and decodes; any first byte from 128 up is
    invalid, not only 255."""
    last = np.array([[[127, 255, 255, 255]]], np.uint8)
    assert decode_source_index(last)[0, 0] == transforms.MAX_SOURCE_PIXELS - 1
    high = np.array([[[128, 0, 0, 0], [200, 1, 2, 3], [254, 255, 255, 255]]], np.uint8)
    assert decode_source_index(high).tolist() == [[-1, -1, -1]]
    monkeypatch.setattr(transforms, 'MAX_SOURCE_PIXELS', 12)   # the comparison, at a small size
    assert decode_source_index(encode_source_index(3, 4)).max() == 11
    with pytest.raises(ValueError, match='too large'):
        encode_source_index(1, 13)


GEOMETRY = [
    dict(type='RandomResize', scale=(300, 150), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(96, 128)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomRotate', prob=1.0, degree=20, pad_val=0, seg_pad_val=255),
    dict(type='Pad', size=(160, 160), pad_val=dict(img=0, seg=255)),
]


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_index_map_through_augmentation_equals_augmented_label(seed):
    """Gathering the original label through the augmented index map gives exactly the label
    augmented like ground truth (same random draws)."""
    rng = np.random.RandomState(seed)
    label = rng.randint(0, 21, size=(120, 170)).astype(np.uint8)
    image = rng.randint(0, 255, size=(120, 170, 3)).astype(np.uint8)
    pipeline = Compose(GEOMETRY)

    def run(seg):
        np.random.seed(seed)
        return pipeline(dict(img=image.copy(), img_shape=image.shape[:2],
                             ori_shape=image.shape[:2], gt_seg_map=seg,
                             seg_fields=['gt_seg_map']))['gt_seg_map']

    expected = run(label)
    index = decode_source_index(run(encode_source_index(*label.shape)))
    gathered = np.where(index >= 0, label.ravel()[np.clip(index, 0, None)], 255)
    assert gathered.shape == expected.shape
    assert np.array_equal(gathered, expected)
    assert (expected == 255).any()  # the padding / rotation border was exercised


# -- LoadImageLevelLabels -------------------------------------------------------------------------
def test_image_level_labels_from_ground_truth():
    results = LoadImageLevelLabels(classes='voc')(voc_sample('voc_val_0'))
    gt = np.array(Image.open(voc_sample('voc_val_0')['seg_map_path']))  # palette indices
    voc = LoadImageLevelLabels(classes='voc').classes
    expected = [voc[v] for v in np.unique(gt) if v not in (0, 255)]
    assert results['image_labels'] == expected and expected


def test_image_level_labels_ade_reduce_zero_label():
    root = shared_path('ade20k_val_samples')
    sample = dict(img_path=str(root / 'images/ADE_val_00000001.jpg'),
                  seg_map_path=str(root / 'annotations/ADE_val_00000001.png'),
                  reduce_zero_label=True, label_map=None)
    names = LoadImageLevelLabels(classes='ade20k', exclude=())(sample)['image_labels']
    raw = np.unique(np.array(Image.open(sample['seg_map_path'])))
    ade = LoadImageLevelLabels(classes='ade20k').classes
    assert names == [ade[v - 1] for v in raw if v != 0]


def test_reduce_zero_label_keeps_the_ignore_index():
    """mmseg's reduce_zero_label maps 0 to 255 and k to k - 1 but leaves 255 (ignored) at 255:
    turned into 254, ignored pixels would be read as a class."""
    assert reduced_zero_label(np.array([0, 1, 151, 255], np.uint8)).tolist() == [255, 0, 150, 255]


def test_image_level_labels_convention_mix_up_is_an_error():
    root = shared_path('cityscapes_val_sample')
    frame = root / 'gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png'
    sample = dict(img_path='x.png', seg_map_path=str(frame), reduce_zero_label=False)
    with pytest.raises(ValueError, match='outside the 19 classes'):
        LoadImageLevelLabels(classes='cityscapes')(sample)


def test_image_level_labels_from_file_and_errors(tmp_path):
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'voc_val_0': ['cat', 'person'], 'voc_val_1': ['dog']}))
    t = LoadImageLevelLabels(classes='voc', ann_file=str(ann))
    assert t(voc_sample('voc_val_0'))['image_labels'] == ['cat', 'person']
    with pytest.raises(KeyError, match="'voc_val_20'.*has no entry"):
        t(voc_sample('voc_val_20'))
    ann.write_text(json.dumps({'voc_val_0': ['cat', 'kitten']}))
    with pytest.raises(KeyError, match=r"unknown class name\(s\) \['kitten'\]"):
        LoadImageLevelLabels(classes='voc', ann_file=str(ann))(voc_sample('voc_val_0'))
    ann.write_text(json.dumps(['cat']))  # a list, not {image: [names]}: named, no AttributeError
    with pytest.raises(ValueError, match=f'image-level labels {ann} are not a JSON object'):
        LoadImageLevelLabels(classes='voc', ann_file=str(ann))(voc_sample('voc_val_0'))


# -- LabelCache and LoadPseudoLabel ---------------------------------------------------------------
def test_label_cache_round_trip_and_signature(tmp_path):
    cache = LabelCache(**cache_cfg(tmp_path))
    key = label_key(b'image bytes', ['cat'])
    assert cache.load(key) is None
    label = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    cache.save(key, label)
    assert np.array_equal(LabelCache(**cache_cfg(tmp_path)).load(key), label)
    assert not list((tmp_path / 'cache').rglob('*.tmp'))
    other_model = dict(cache_cfg(tmp_path), model='another/model')
    with pytest.raises(ValueError, match='model: cache'):
        LabelCache(**other_model).load(key)


def test_cache_settings_name_missing_and_unknown_keys():
    """LoadPseudoLabel(cache=...) needs cache_dir, model and generator; a misspelt key (here
    wait_timout) is refused, not silently dropped with the default timeout."""
    from mmdiffseg.datasets.cache_settings import canonical_cache_spec
    full = dict(cache_dir='c', model='m', generator=dict(type='FixedConfigGenerator'))
    assert canonical_cache_spec(dict(full, wait_timeout=5))['wait_timeout'] == 5
    # plain JSON values: a config's tuple and a Path compare equal to the stored list and str
    from pathlib import Path
    assert canonical_cache_spec(dict(full, cache_dir=Path('c'), generator=dict(
        type='FixedConfigGenerator', sizes=(1, 2)))) == dict(
        full, generator=dict(type='FixedConfigGenerator', sizes=[1, 2]))
    with pytest.raises(KeyError, match=r"missing \['generator'\], unknown \[\]"):
        canonical_cache_spec(dict(cache_dir='c', model='m'))
    with pytest.raises(KeyError, match=r"missing \[\], unknown \['wait_timout'\]"):
        canonical_cache_spec(dict(full, wait_timout=5))


def test_label_cache_refuses_values_outside_a_byte(tmp_path):
    """Stored labels are uint8 PNGs: -1 or 256 would be written as another class (255, 0), so
    they are refused and nothing is written; 255 (unsure) is stored as it is."""
    cache = LabelCache(**cache_cfg(tmp_path))
    for bad in ([[-1, 0]], [[256, 0]]):
        with pytest.raises(ValueError, match='expected an \\(H, W\\) label in 0..255'):
            cache.save('ab' * 20, np.array(bad))
    assert cache.load('ab' * 20) is None and len(cache) == 0
    cache.save('cd' * 20, np.array([[255, 0]]))
    assert cache.load('cd' * 20).tolist() == [[255, 0]]
    with pytest.raises(ValueError, match=r'expected an \(H, W\) label .*shape \(2, 2, 3\)'):
        cache.save('ef' * 20, np.zeros((2, 2, 3), np.uint8))   # a colour image is no label
    assert not cache.path('ef' * 20).exists()


def test_a_label_of_any_integer_or_bool_dtype_is_stored_as_uint8(tmp_path):
    """A uint16 label comes back uint8 (not a 16-bit PNG), a bool mask as 0/1 (not 0/255)."""
    cache = LabelCache(**cache_cfg(tmp_path))
    for i, label in enumerate([np.array([[3, 255]], np.uint16), np.array([[True, False]])]):
        cache.save(f'{i}' * 40, label)
        back = cache.load(f'{i}' * 40)
        assert back.dtype == np.uint8 and back.tolist() == label.astype(np.uint8).tolist()


def test_unreadable_signature_is_named(tmp_path):
    (tmp_path / 'cache').mkdir()
    (tmp_path / 'cache' / 'cache.json').write_text('{"model": ')
    with pytest.raises(ValueError, match='cache.json is not a label-cache signature'):
        LabelCache(**cache_cfg(tmp_path)).load(label_key(b'x', []))


def refusal_lines(error):
    """The 'key: cache ..., this run ...' lines of a refused cache's message."""
    return [line.strip() for line in str(error.value).splitlines() if ': cache ' in line]


def test_refusal_names_only_the_settings_that_differ(tmp_path):
    LabelCache(**cache_cfg(tmp_path)).sign()
    with pytest.raises(ValueError, match='holds labels made with other settings') as refused:
        LabelCache(**cache_cfg(tmp_path, level=2)).check_signature()
    assert refusal_lines(refused) == ['generator.level: cache 1, this run 2']
    with pytest.raises(ValueError) as refused:
        LabelCache(**dict(cache_cfg(tmp_path), model='another/model')).check_signature()
    [line] = refusal_lines(refused)
    assert line.startswith('model: cache {') and '"another/model"' in line


def test_a_cache_of_an_earlier_label_computation_is_refused_with_the_reason(tmp_path):
    """cache.json records LABELS_VERSION: a folder signed before it (no version) is refused."""
    from mmdiffseg.generators.base import LABELS_VERSION
    LabelCache(**cache_cfg(tmp_path)).sign()
    path = tmp_path / 'cache' / 'cache.json'
    signature = json.loads(path.read_text())
    assert signature.pop('labels_version') == LABELS_VERSION
    path.write_text(json.dumps(signature))
    with pytest.raises(ValueError) as refused:
        LabelCache(**cache_cfg(tmp_path)).check_signature()
    assert refusal_lines(refused) == [f'labels_version: cache <absent>, this run {LABELS_VERSION}']
    assert 'its labels were made by an earlier mmdiffseg' in str(refused.value)


def test_load_pseudo_label_miss_then_hit(tmp_path):
    sample = voc_sample('voc_val_1')
    pipeline = Compose([dict(type='LoadImageFromFile'),
                        dict(type='LoadImageLevelLabels', classes='voc'),
                        dict(type='LoadPseudoLabel', cache=cache_cfg(tmp_path)),
                        dict(type='PackPseudoLabelInputs')])
    packed = pipeline(dict(sample))
    ds = packed['data_samples']
    h, w = packed['inputs'].shape[1:]
    assert ds.metainfo['pseudo_label_cached'] is False
    assert (ds.gt_sem_seg.data == 255).all()
    assert torch.equal(ds.pseudo_label_index.data[0],
                       torch.arange(h * w).reshape(h, w))
    key = ds.metainfo['pseudo_label_key']
    names = ds.metainfo['image_labels']
    assert names and key == label_key(open(sample['img_path'], 'rb').read(), names)

    label = (np.arange(h * w) % 3).reshape(h, w).astype(np.uint8)
    LabelCache(**cache_cfg(tmp_path)).save(key, label)
    ds = pipeline(dict(sample))['data_samples']
    assert ds.metainfo['pseudo_label_cached'] is True
    assert 'pseudo_label_index' not in ds
    assert torch.equal(ds.gt_sem_seg.data[0], torch.from_numpy(label).long())


def test_load_pseudo_label_wrong_size_is_an_error(tmp_path):
    sample = voc_sample('voc_val_1')
    names = LoadImageLevelLabels(classes='voc')(dict(sample))['image_labels']
    key = label_key(open(sample['img_path'], 'rb').read(), names)
    LabelCache(**cache_cfg(tmp_path)).save(key, np.zeros((5, 5), np.uint8))
    pipeline = Compose([dict(type='LoadImageFromFile'),
                        dict(type='LoadImageLevelLabels', classes='voc'),
                        dict(type='LoadPseudoLabel', cache=cache_cfg(tmp_path))])
    with pytest.raises(ValueError, match='is \\(5, 5\\) but the image'):
        pipeline(dict(sample))


def test_a_cached_label_of_a_non_square_image_loads(tmp_path):
    """A cached label's size is checked as (height, width): checked the other way round, the
    label of every non-square image would be refused as the wrong size."""
    img = tmp_path / 'wide.png'
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(img)
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'wide': ['cat']}))
    label = np.ones((30, 40), np.uint8)
    LabelCache(**cache_cfg(tmp_path)).save(label_key(img.read_bytes(), ['cat']), label)
    pipeline = Compose([dict(type='LoadImageFromFile'),
                        dict(type='LoadImageLevelLabels', classes=['background', 'cat'],
                             ann_file=str(ann)),
                        dict(type='LoadPseudoLabel', cache=cache_cfg(tmp_path))])
    out = pipeline(dict(img_path=str(img), seg_fields=[]))
    assert out['pseudo_label_cached'] is True and out['gt_seg_map'].shape == (30, 40)


def test_cocostuff27_classes_follow_the_sample_list():
    names = json.loads(shared_path('coco_val_samples', 'cocostuff27_classes.json').read_text())
    assert list(mmdiffseg.datasets.DATASET_CLASSES['cocostuff27']) == names


def test_a_rotation_after_load_pseudo_label_moves_the_index_map(tmp_path):
    """LoadPseudoLabel lists gt_seg_map in seg_fields, so transforms that go by seg_fields
    (mmseg's RandomRotate) carry the index map with the image: the corners become border
    (-1) and the centre pixel still shows the original centre."""
    sample = voc_sample('voc_val_1')
    pipeline = Compose([dict(type='LoadImageFromFile'),
                        dict(type='LoadImageLevelLabels', classes='voc'),
                        dict(type='LoadPseudoLabel', cache=cache_cfg(tmp_path)),
                        dict(type='RandomRotate', prob=1.0, degree=(30, 30), seg_pad_val=255),
                        dict(type='PackPseudoLabelInputs')])
    ds = pipeline(dict(sample))['data_samples']
    index = ds.pseudo_label_index.data[0]
    h, w = index.shape
    assert index[0, 0] == index[-1, -1] == -1
    assert index[h // 2, w // 2] == (h // 2) * w + w // 2


def test_pack_pseudo_label_inputs_keeps_ground_truth_of_a_test_pipeline():
    """A test pipeline without LoadPseudoLabel (DiffusionSegmentor with image labels) packs its
    ground truth as PackSegInputs does, with the image labels and no index map."""
    sample = voc_sample('voc_val_0')
    pipeline = Compose([dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                        dict(type='LoadImageLevelLabels', classes='voc'),
                        dict(type='PackPseudoLabelInputs')])
    ds = pipeline(dict(sample))['data_samples']
    truth = np.array(Image.open(sample['seg_map_path']))
    assert 'pseudo_label_index' not in ds and ds.metainfo['image_labels']
    assert torch.equal(ds.gt_sem_seg.data[0], torch.from_numpy(truth).long())


def test_the_pipeline_as_logged_names_each_steps_source_of_labels(tmp_path):
    """A pipeline's repr (logged by the runner) names where the image-level labels come from
    and the label cache's folder."""
    cache = dict(cache_dir=str(tmp_path / 'cache'), model='some/model',
                 generator=dict(type='FixedConfigGenerator'))
    logged = repr(Compose([dict(type='LoadImageLevelLabels', classes='voc'),
                           dict(type='LoadImageLevelLabels', classes=['a', 'b'],
                                ann_file='labels.json'),
                           dict(type='LoadPseudoLabel', cache=cache)]))
    assert "LoadImageLevelLabels(source='ground truth', classes=21)" in logged
    assert "LoadImageLevelLabels(source='labels.json', classes=2)" in logged
    assert f"LoadPseudoLabel(cache_dir='{tmp_path / 'cache'}')" in logged
