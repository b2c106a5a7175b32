"""DiffusionLabelPreprocessor with an injected engine and generator: labels of the original image,
gathered through the augmentation, cached once, equal to the warm-cache (LoadPseudoLabel) path."""
import copy
from typing import Optional

import mmcv
import numpy as np
import pytest
import torch
from sample_data import shared_path
from mmengine.dataset import Compose, pseudo_collate
from mmengine.logging import MessageHub
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmdiffseg  # noqa: F401
import mmdiffseg.datasets  # noqa: F401
import mmdiffseg.models  # noqa: F401
from mmdiffseg.attention import AttentionMaps, CaptureSpec, DiffusionAttentionEngine
from mmdiffseg.datasets import LabelCache
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS

init_default_scope('mmseg')
NAMES = ('voc_val_0', 'voc_val_1', 'voc_val_20')


@MASK_GENERATORS.register_module(force=True)
class BrightnessGenerator(MaskGenerator):
    """Known answer: the first named class where red > threshold, background elsewhere."""
    method = 'brightness'

    def __init__(self, classes, threshold=128):
        super().__init__(classes)
        self.threshold = threshold

    @property
    def capture_spec(self):
        return CaptureSpec()

    def extract_kwargs(self, class_names):
        return dict(class_names=class_names)

    def forward(self, maps, images, class_names):
        fg = torch.tensor([self.class_indices(n[:1])[0] if n else 0 for n in class_names])
        bright = images[:, 0] > self.threshold
        return torch.where(bright, fg[:, None, None], torch.zeros_like(fg)[:, None, None])

    def config_dict(self):
        return dict(method=self.method, classes=self.classes, threshold=self.threshold)


class FakeEngine:
    model_id = 'fake/sd'
    device = torch.device('cpu')
    tokenizer = None   # (its generator's prompts are empty: no class names to place)

    def __init__(self):
        self.calls = []

    def extract(self, images, capture, class_names):
        self.calls.append(len(images))
        return AttentionMaps(maps={'none': torch.zeros(len(images), 1, 1)}, image_size=(64, 64))


def expected_label(image_rgb, name_index, threshold=128):
    """The generator's answer at 64x64 (the image at the working size as the tools' loaders
    resize it, then bilinear to the fake engine's 64), back at full size (nearest centre)."""
    from mmdiffseg.attention.images import resize_rgb
    small = torch.nn.functional.interpolate(
        torch.from_numpy(resize_rgb(image_rgb)).permute(2, 0, 1)[None].float(), size=(64, 64),
        mode='bilinear', align_corners=False)[0, 0] > threshold
    full = torch.nn.functional.interpolate(small[None, None].float(), size=image_rgb.shape[:2],
                                           mode='nearest-exact')[0, 0]
    return (full * name_index).to(torch.uint8).numpy()


def unaugmented(cache: dict, pack: Optional[dict] = None) -> Compose:
    """The online pipeline without augmentation: load, image-level labels, ``cache``, ``pack``
    (default ``PackPseudoLabelInputs``)."""
    return Compose([dict(type='LoadImageFromFile'),
                    dict(type='LoadImageLevelLabels', classes='voc'),
                    dict(type='LoadPseudoLabel', cache=cache),
                    pack or dict(type='PackPseudoLabelInputs')])


@pytest.fixture
def setup(tmp_path, monkeypatch):
    root = shared_path('voc2012_val_samples')
    cache = dict(cache_dir=str(tmp_path / 'cache'), model='fake/sd',
                 generator=dict(type='BrightnessGenerator', classes=list(
                     mmdiffseg.datasets.DATASET_CLASSES['voc'])))
    pipeline = Compose([
        dict(type='LoadImageFromFile'),
        dict(type='LoadImageLevelLabels', classes='voc'),
        dict(type='LoadPseudoLabel', cache=cache),
        dict(type='RandomResize', scale=(200, 100), ratio_range=(0.5, 1.5), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(96, 96)),
        dict(type='RandomFlip', prob=0.5),
        dict(type='PackPseudoLabelInputs'),
    ])
    samples = [dict(img_path=str(root / 'JPEGImages' / f'{n}.png'),
                    seg_map_path=str(root / 'SegmentationClass' / f'{n}.png'),
                    reduce_zero_label=False, label_map=None, seg_fields=[]) for n in NAMES]
    pre = MODELS.build(dict(type='DiffusionLabelPreprocessor', label_batch_size=2,
                            mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True, size=(96, 96)))
    engine = FakeEngine()
    monkeypatch.setattr(DiffusionAttentionEngine, 'from_pretrained',
                        classmethod(lambda cls, model, **kwargs: engine))
    return pipeline, samples, pre, engine, cache


def batch(pipeline, samples, seed):
    np.random.seed(seed)
    return pseudo_collate([pipeline(copy.deepcopy(s)) for s in samples])


def test_cold_batch_labels_original_images_and_matches_warm_batch(setup):
    pipeline, samples, pre, engine, cache = setup
    cold = batch(pipeline, samples, seed=3)
    assert all(s.metainfo['pseudo_label_cached'] is False for s in cold['data_samples'])
    cold_out = pre(cold, training=True)
    assert engine.calls == [2, 1]          # 3 images in batches of 2, once each

    store = LabelCache(**cache)
    for s in samples:
        rgb = mmcv.imread(s['img_path'], channel_order='rgb')
        names = mmdiffseg.datasets.LoadImageLevelLabels(classes='voc')(dict(s))['image_labels']
        voc = list(mmdiffseg.datasets.DATASET_CLASSES['voc'])
        key = mmdiffseg.datasets.label_key(open(s['img_path'], 'rb').read(), names)
        assert np.array_equal(store.load(key), expected_label(rgb, voc.index(names[0])))

    warm = batch(pipeline, samples, seed=3)   # same augmentation draws, labels from the cache
    assert all(s.metainfo['pseudo_label_cached'] is True for s in warm['data_samples'])
    warm_out = pre(warm, training=True)
    assert engine.calls == [2, 1]          # nothing generated
    for c, w in zip(cold_out['data_samples'], warm_out['data_samples']):
        assert torch.equal(c.gt_sem_seg.data, w.gt_sem_seg.data)
        assert 'pseudo_label_index' not in c
    assert torch.equal(cold_out['inputs'], warm_out['inputs'])
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/label_generated').current() == 0
    coverage = hub.get_scalar('train/label_coverage').current()
    assert 0 < coverage <= 1


def test_a_warm_run_names_its_label_cache_once(setup, monkeypatch):
    """A run whose labels are all cached (prefilled, resumed) makes none: the log still names the
    cache its targets come from, once; a run that makes labels also says with what, once."""
    import importlib
    online_labeler = importlib.import_module('mmdiffseg.models.online_labeler')
    pipeline, samples, pre, engine, cache = setup
    pre(batch(pipeline, samples, seed=3), training=True)      # fills the cache
    logged = []
    monkeypatch.setattr(online_labeler, 'print_log', lambda message, **_: logged.append(message))
    warm_pre = MODELS.build(dict(type='DiffusionLabelPreprocessor', label_batch_size=2,
                                 mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True, size=(96, 96)))
    for seed in (4, 5):
        warm_pre(batch(pipeline, samples, seed=seed), training=True)
    assert logged == [f"online labels: cache {cache['cache_dir']} (model fake/sd, "
                      'BrightnessGenerator); labels not cached yet are made on first use']
    logged.clear()
    cold_pre = MODELS.build(dict(type='DiffusionLabelPreprocessor', label_batch_size=2,
                                 mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True, size=(96, 96)))
    LabelCache(**cache).path(batch(pipeline, samples[:1], seed=0)['data_samples'][0]
                             .metainfo['pseudo_label_key']).unlink()
    for seed in (6, 7):
        cold_pre(batch(pipeline, samples, seed=seed), training=True)
    assert len(logged) == 2 and logged[0].startswith('online labels: cache ')
    assert logged[1].startswith('online labels: making labels with fake/sd (')


def test_same_image_twice_in_a_batch_is_generated_once(setup):
    pipeline, samples, pre, engine, _ = setup
    pre(batch(pipeline, [samples[0], samples[0]], seed=0), training=True)
    assert engine.calls == [1]


def test_missing_image_level_labels_is_an_error(setup):
    _, samples, pre, _, cache = setup
    no_labels = Compose([dict(type='LoadImageFromFile'),
                         dict(type='LoadPseudoLabel', cache=cache),
                         dict(type='PackPseudoLabelInputs')])
    with pytest.raises(KeyError, match='LoadImageLevelLabels'):
        pre(pseudo_collate([no_labels(dict(samples[0]))]), training=True)


def test_the_label_cache_is_set_once_in_the_pipeline(setup, tmp_path):
    pipeline, samples, pre, engine, cache = setup
    with pytest.raises(TypeError, match=r'set once, in LoadPseudoLabel\(cache=...\)'):
        MODELS.build(dict(type='DiffusionLabelPreprocessor', label_cache=cache))
    pre(batch(pipeline, samples[:1], seed=0), training=True)
    assert pre.labeler.cache.cache_dir == tmp_path / 'cache' and engine.calls == [1]
    other = unaugmented(dict(cache, cache_dir=str(tmp_path / 'x')))
    with pytest.raises(ValueError, match='serves one label cache'):
        pre(pseudo_collate([other(copy.deepcopy(samples[1]))]), training=True)


def test_checkpoint_holds_no_engine_or_generator(setup):
    pre = setup[2]
    assert list(pre.state_dict()) == list(
        MODELS.build(dict(type='SegDataPreProcessor', mean=[0, 0, 0], std=[1, 1, 1])).state_dict())


def test_images_the_labeler_decodes_otherwise_than_the_pipeline_are_named(setup, tmp_path):
    """A photo with EXIF orientation 6 loaded with color_type='color_ignore_orientation' is not
    the picture the labeler decodes (OpenCV's default applies the orientation): refused, not
    labelled rotated. A file OpenCV cannot decode is named."""
    from PIL import Image

    from mmdiffseg.attention.images import decode_rgb
    _, samples, pre, _, cache = setup
    photo = tmp_path / 'photo.jpg'
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees to display
    Image.open(samples[0]['img_path']).convert('RGB').crop((0, 0, 400, 300)).save(photo, exif=exif)
    for color_type, refused in (('color_ignore_orientation', True), ('color', False)):
        pipeline = Compose([dict(type='LoadImageFromFile', color_type=color_type),
                            dict(type='LoadImageLevelLabels', classes='voc', ann_file=None),
                            dict(type='LoadPseudoLabel', cache=cache),
                            dict(type='PackPseudoLabelInputs')])
        data = pseudo_collate([pipeline(dict(samples[0], img_path=str(photo)))])
        if refused:
            with pytest.raises(ValueError, match=r'photo.jpg was loaded as \(400, 300\) \(WxH\) '
                               r'but the labeler decodes it as \(300, 400\)'):
                pre(data, training=True)
        else:
            label = pre(data, training=True)['data_samples'][0].gt_sem_seg.data
            assert label.shape[-2:] == (400, 300)  # portrait, as displayed
    with pytest.raises(ValueError, match='cannot read image x/notes.jpg: OpenCV cannot decode it'):
        decode_rgb(b'plain text', 'x/notes.jpg')


def test_samples_with_their_own_masks_pass_through_a_mixed_batch(setup):
    """A ConcatDataset of online-labelled images and images with masks (synthetic pairs, real
    ground truth): the masks are kept, the others labelled; a source-index map that
    PackSegInputs packed as a label is still refused."""
    pipeline, samples, pre, engine, _ = setup
    stock = Compose([dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                     dict(type='RandomCrop', crop_size=(96, 96)), dict(type='PackSegInputs')])
    np.random.seed(0)
    with_mask = stock(copy.deepcopy(samples[1]))
    truth = with_mask['data_samples'].gt_sem_seg.data.clone()
    out = pre(pseudo_collate([pipeline(copy.deepcopy(samples[0])), with_mask]), training=True)
    assert engine.calls == [1] and torch.equal(out['data_samples'][1].gt_sem_seg.data, truth)
    packed_as_label = unaugmented(setup[4], dict(type='PackSegInputs'))
    with pytest.raises(KeyError, match='PackPseudoLabelInputs'):
        pre(pseudo_collate([packed_as_label(copy.deepcopy(samples[2]))]), training=True)


def test_an_index_map_one_past_its_label_is_named(setup):
    """Indices run 0..H*W-1: an index of H*W (an image changed after loading) is refused by name,
    not an IndexError."""
    _, samples, pre, _, cache = setup
    plain = unaugmented(cache)
    data = pseudo_collate([plain(copy.deepcopy(samples[0]))])
    index = data['data_samples'][0].pseudo_label_index.data
    index[0, -1, -1] = index.numel()
    with pytest.raises(ValueError, match='voc_val_0.png points outside its label'):
        pre(data, training=True)


def test_a_label_another_process_makes_is_waited_for_and_counted(setup, monkeypatch):
    """A key claimed elsewhere is not made here: the batch waits for its label, gathers it and
    logs it as waited for (label_waited 1, label_generated 0)."""
    import threading
    pipeline, samples, pre, engine, cache = setup
    data = batch(pipeline, samples[:1], seed=0)
    key = data['data_samples'][0].metainfo['pseudo_label_key']
    other = LabelCache(**cache)
    fd = other._try_claim(key)          # the claim of another rank
    height, width = mmcv.imread(samples[0]['img_path']).shape[:2]
    waiting, check_wait = threading.Event(), LabelCache._check_wait
    monkeypatch.setattr(LabelCache, '_check_wait',
                        lambda self, *args: waiting.set() or check_wait(self, *args))

    def finish():                       # the other rank stores its label once we wait
        waiting.wait(60)
        other.save(key, np.full((height, width), 4, np.uint8))
        other._release(key, fd)

    owner = threading.Thread(target=finish)
    owner.start()
    out = pre(data, training=True)
    owner.join()
    assert waiting.is_set() and engine.calls == []
    target = out['data_samples'][0].gt_sem_seg.data
    assert set(target.unique().tolist()) <= {4, 255} and (target == 4).any()
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/label_waited').current() == 1
    assert hub.get_scalar('train/label_generated').current() == 0
    pre(batch(pipeline, samples[:1], seed=1), training=True)   # cached now: nothing waited
    assert hub.get_scalar('train/label_waited').current() == 0


def test_the_labelers_precision_is_recorded_and_another_is_refused(setup):
    """Online labels record the engine precision that made them in the cache; a run at another
    precision may read them but not add to them."""
    import json
    pipeline, samples, _, engine, cache = setup
    half = MODELS.build(dict(type='DiffusionLabelPreprocessor', engine_dtype='float16',
                             mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True, size=(96, 96)))
    half(batch(pipeline, samples[:1], seed=0), training=True)
    record = json.loads((LabelCache(**cache).cache_dir / 'cache.json').read_text())
    assert record['made_with'] == {'dtype': 'float16', 'variant': None}
    full = MODELS.build(dict(type='DiffusionLabelPreprocessor', engine_dtype='float32',
                             mean=[0, 0, 0], std=[1, 1, 1], bgr_to_rgb=True, size=(96, 96)))
    with pytest.raises(ValueError, match='set the engine precision to float16'):
        full(batch(pipeline, samples[1:2], seed=0), training=True)
    variant = MODELS.build(dict(type='DiffusionLabelPreprocessor', engine_dtype='float16',
                                engine_kwargs=dict(variant='non_ema'), mean=[0, 0, 0],
                                std=[1, 1, 1], bgr_to_rgb=True, size=(96, 96)))
    with pytest.raises(ValueError, match=r"from the 'non_ema' weights variant: load the weights"):
        variant(batch(pipeline, samples[1:2], seed=0), training=True)
    assert engine.calls == [1]


def test_a_sample_with_only_some_of_the_keys_is_refused(setup):
    """PackSegInputs told to keep image_labels still drops the pseudo-label keys and packs the
    index map as a label: refused, not trained on as classes."""
    _, samples, pre, _, cache = setup
    partial = unaugmented(cache, dict(type='PackSegInputs', meta_keys=(
        'img_path', 'ori_shape', 'img_shape', 'image_labels')))
    data = pseudo_collate([partial(copy.deepcopy(samples[0]))])
    assert 'image_labels' in data['data_samples'][0].metainfo
    with pytest.raises(KeyError, match='PackPseudoLabelInputs'):
        pre(data, training=True)


def test_padding_is_unsure_and_the_logged_coverage_counts_it(setup):
    """Pixels of the index map at -1 (padding) get 255; the others the label at their index.
    The logged coverage is the share of pixels that are not 255 (label 0 is covered)."""
    _, samples, pre, _, cache = setup
    plain = unaugmented(cache)
    data = pseudo_collate([plain(copy.deepcopy(samples[0]))])
    index = data['data_samples'][0].pseudo_label_index.data
    index[0, :3] = -1                  # three padded rows
    height = index.shape[1]
    target = pre(data, training=True)['data_samples'][0].gt_sem_seg.data[0]
    label = LabelCache(**cache).load(data['data_samples'][0].metainfo['pseudo_label_key'])
    assert (target[:3] == 255).all()
    assert torch.equal(target[3:], torch.from_numpy(label[3:]).long())
    assert (target[3:] == 0).any() and (target[3:] != 0).any()
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/label_coverage').current() == pytest.approx(1 - 3 / height)
    assert hub.get_scalar('train/label_seconds').current() > 0


def test_validation_batches_are_not_labelled(setup):
    """Only training batches are labelled: a validation batch of images without labels passes."""
    _, samples, pre, engine, _ = setup
    images_only = Compose([dict(type='LoadImageFromFile'), dict(type='PackSegInputs')])
    out = pre(pseudo_collate([images_only(copy.deepcopy(samples[0]))]), training=False)
    assert engine.calls == [] and 'gt_sem_seg' not in out['data_samples'][0]


def test_an_overflowing_image_trains_unsure_in_its_batch_and_is_made_again_later(
        setup, monkeypatch):
    """Its maps overflow (NaN): the sample's target is all 255 in this batch, with a warning
    naming the image (a repeated warning is dropped by mmengine, so each names its own); its
    label is not cached, so the next batch makes it when the maps are finite. It was cached
    as all 255, read for the rest of training and every later run, without a word."""
    import importlib
    online_labeler = importlib.import_module('mmdiffseg.models.online_labeler')
    pipeline, samples, pre, engine, cache = setup
    extract, nan_for = engine.extract, {1}

    def overflowing(images, capture, class_names):
        maps = extract(images, capture, class_names)
        for i, image in enumerate(images):
            if int(image[0, 0, 0]) in nan_for:
                maps.maps['none'][i] = float('nan')
        return maps
    marks = []
    for sample in samples[:2]:   # mark the second image by its first pixel: red 1
        rgb = mmcv.imread(sample['img_path'], channel_order='rgb')
        marks.append(int(rgb[0, 0, 0]))
    nan_for = {marks[1]} - {marks[0]}
    assert nan_for, 'the two images share their first pixel'
    monkeypatch.setattr(engine, 'extract', overflowing)
    monkeypatch.setattr(BrightnessGenerator, 'forward',
                        lambda self, maps, images, names, forward=BrightnessGenerator.forward: (
                            maps.check_finite(), forward(self, maps, images, names))[1])
    warned = []
    monkeypatch.setattr(online_labeler, 'print_log',
                        lambda message, **kwargs: warned.append(message)
                        if kwargs.get('level') else None)
    out = pre(batch(pipeline, samples[:2], seed=0), training=True)
    first, second = (s.gt_sem_seg.data for s in out['data_samples'])
    assert (second == 255).all() and (first != 255).any()
    assert len(warned) == 1 and warned[0].startswith(
        f"{samples[1]['img_path']}: AttentionMaps['none'] contains NaN or inf") and \
        warned[0].endswith('it gets an all-unsure label (255) in this batch (not cached)')
    hub = MessageHub.get_current_instance()
    assert hub.get_scalar('train/label_generated').current() == 1
    assert len(LabelCache(**cache)) == 1
    nan_for = set()
    out = pre(batch(pipeline, samples[:2], seed=0), training=True)
    assert (out['data_samples'][1].gt_sem_seg.data != 255).any()
    assert hub.get_scalar('train/label_generated').current() == 1 and len(LabelCache(**cache)) == 2
