"""Pre-flight checks that depend on whether the label cache holds every training image's label:
a cache made in another precision than the run's (named where the run would add a label, read
where it is full), and transforms a label made during training cannot pass (RandomRotFlip,
RandomMosaic: refused until the cache is full)."""
import numpy as np
import pytest
from e2e_helpers import VOC_IMAGES, make_voc_root
from sample_data import shared_path
from test_preflight_content import voc_config

from mmdiffseg import preflight
from mmdiffseg.datasets import LabelCache
from mmdiffseg.models.prefill import training_label_keys


@pytest.fixture
def voc_root(tmp_path):
    return make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'VOCdevkit' / 'VOC2012')


def test_a_label_cache_made_in_another_precision_is_named_before_training(tmp_path, voc_root):
    generator = dict(type='ISeg', vocabulary='voc')
    cfg = voc_config(voc_root, generator=generator)
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    assert not [i for i in preflight.check(cfg, 'train') if 'holds labels made in' in i.what]
    LabelCache(cache.cache_dir, cache.model, generator, writer_dtype='float16').sign()
    for mode, dtype, engine_dtype in [('train', None, 'float32'), ('prefill', 'float32', None)]:
        cfg.model = dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor',
                                                engine_dtype=engine_dtype or 'float16'))
        (item,) = [i for i in preflight.check(cfg, mode, dtype=dtype)
                   if 'holds labels made in' in i.what]
        # training and a prefill name an image they would label (the first of the split)
        example = f' (for {voc_root}/JPEGImages/{VOC_IMAGES[0]}.png, which has no label there)'
        assert item.what.endswith('holds labels made in float16, and this run would add labels '
                                  'made in float32' + example)
        assert 'engine_dtype=float16' in item.fix and 'cache_dir=<another folder>' in item.fix
        # signed by a run stopped before its first label: deleting the folder loses nothing
        assert item.fix.endswith(f'It holds no label yet (signed by a run stopped before its '
                                 f'first): deleting it (rm -r {cache.cache_dir}) loses nothing, '
                                 'once no run is starting into it.')
    cfg.model.data_preprocessor.engine_dtype = 'float16'
    assert not [i for i in preflight.check(cfg, 'train') if 'holds labels made in' in i.what]


def test_a_full_label_cache_made_in_another_precision_is_read(tmp_path, voc_root):
    """Training (or a prefill) on a cache that holds every training image's label adds none,
    so it reads labels of any precision (docs/mmseg.md; the prefill was refused as one that
    "would add" labels); one missing label and it would add one: refused."""
    generator = dict(type='ISeg', vocabulary='voc')
    cfg = voc_config(voc_root, generator=generator)
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    cfg.model = dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor',
                                            engine_dtype='float32'))
    store = LabelCache(cache.cache_dir, cache.model, generator, writer_dtype='bfloat16')
    store.sign()
    keys = [(path, key) for path, key, cached in training_label_keys(cfg, cache.cache_dir)]
    assert len(keys) == len(VOC_IMAGES)
    for path, key in keys[:-1]:
        store.save(key, np.zeros((4, 4), np.uint8))

    def refusals(mode='train', **kwargs):
        return [i.what for i in preflight.check(cfg, mode, **kwargs)
                if 'holds labels made in' in i.what]
    assert refusals() == [f'label cache {cache.cache_dir} holds labels made in bfloat16, and this '
                          f'run would add labels made in float32 (for {keys[-1][0]}, which has '
                          'no label there)']
    assert len(refusals('prefill', dtype='float32')) == 1
    store.save(keys[-1][1], np.zeros((4, 4), np.uint8))
    assert refusals() == []
    assert refusals('prefill', dtype='float32') == []   # nothing left to add


def test_transforms_that_mix_labels_need_every_label_cached(tmp_path, voc_root):
    """RandomRotFlip blends a cold cache's source-index map (89-93% of the targets wrong, or an
    error mid-run), RandomMosaic mixes four images: refused, naming the fix, until every training
    image's label is cached; a RandomMosaic of a wrapper over the online dataset counts too."""
    generator = dict(type='ISeg', vocabulary='voc')
    cfg = voc_config(voc_root, generator=generator)
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    cfg.model = dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor'))
    rotate = dict(type='RandomRotFlip', rotate_prob=1.0, flip_prob=0.0, degree=20)
    cfg.train_dataloader.dataset.pipeline.append(rotate)

    def refusals():
        return [(i.what, i.fix) for i in preflight.check(cfg, 'train') if 'cannot pass' in i.what]
    ((what, fix),) = refusals()
    assert what == ('train_dataloader.dataset.pipeline has RandomRotFlip, which rotates the seg '
                    'maps bilinearly: a label made during training cannot pass it (the label of '
                    f'{voc_root}/JPEGImages/{VOC_IMAGES[0]}.png, for one, is not in '
                    f'{cache.cache_dir} yet)')
    assert fix.startswith('label every training image first: python tools/prefill_labels.py')
    store = LabelCache(cache.cache_dir, cache.model, generator, writer_dtype='float32')
    store.sign()
    for _, key, _ in training_label_keys(cfg, cache.cache_dir):
        store.save(key, np.zeros((4, 4), np.uint8))
    assert refusals() == []
    cfg.train_dataloader.dataset.pipeline.pop()
    cfg.train_dataloader.dataset = dict(type='MultiImageMixDataset',
                                        dataset=cfg.train_dataloader.dataset,
                                        pipeline=[dict(type='RandomMosaic', prob=1.0)])
    assert refusals() == []  # every label cached
    store.path(next(training_label_keys(cfg, cache.cache_dir))[1]).unlink()
    ((what, _),) = refusals()
    assert what.startswith('train_dataloader.dataset.pipeline has RandomMosaic, which mixes four '
                           'images: a label made during training cannot pass it')


def test_a_flip_before_the_labels_is_refused_by_the_check_and_the_transform(tmp_path, voc_root):
    """The label is made from the image file: a RandomFlip before LoadPseudoLabel trained on
    mirrored labels, silently (same size: nothing else tells). The pre-flight names the step and
    where LoadPseudoLabel goes; LoadPseudoLabel refuses a flipped image too."""
    from mmseg.registry import TRANSFORMS
    cfg = voc_config(voc_root, generator=dict(type='ISeg', vocabulary='voc'))
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    cfg.model = dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor'))
    assert not [i for i in preflight.check(cfg, 'train') if 'before LoadPseudoLabel' in i.what]
    cfg.train_dataloader.dataset.pipeline.insert(1, dict(type='RandomFlip', prob=1.0))
    (item,) = [i for i in preflight.check(cfg, 'train') if 'before LoadPseudoLabel' in i.what]
    assert item.what == ('train_dataloader.dataset.pipeline has RandomFlip before LoadPseudoLabel: '
                         'the label is made from the image file, so the image would be '
                         'transformed and its label not')
    assert item.fix.startswith('put LoadPseudoLabel right after LoadImageFromFile')
    load = TRANSFORMS.build(cfg.train_dataloader.dataset.pipeline[3])
    with pytest.raises(ValueError, match=r'was flipped before it: put LoadPseudoLabel right '):
        load.transform(dict(img=np.zeros((4, 6, 3), np.uint8), img_path='x.png', flip=True,
                            image_labels=['cat'], ori_shape=(4, 6)))


def test_the_training_images_are_read_once_for_both_checks(tmp_path, voc_root, monkeypatch):
    """A cache of another precision and a RandomRotFlip both ask whether a label is missing:
    both are named, from one look through the training images (each read and hashed)."""
    from mmdiffseg.models import prefill
    generator = dict(type='ISeg', vocabulary='voc')
    cfg = voc_config(voc_root, generator=generator)
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    cfg.model = dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor'))
    cfg.train_dataloader.dataset.pipeline.append(dict(type='RandomRotFlip'))
    LabelCache(cache.cache_dir, cache.model, generator, writer_dtype='float16').sign()
    looks = []
    first = prefill.first_unlabelled_image
    monkeypatch.setattr(prefill, 'first_unlabelled_image',
                        lambda *args: looks.append(args[1]) or first(*args))
    named = [i.what for i in preflight.check(cfg, 'train')
             if 'holds labels made in' in i.what or 'cannot pass' in i.what]
    assert len(named) == 2 and looks == [cache.cache_dir]
