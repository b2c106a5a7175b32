"""Where LoadPseudoLabel sits in a train pipeline, and the dataset wrappers around it: mistakes
that trained on ground truth silently, or stopped at a random batch, are named before training;
a MultiImageMixDataset (the RandomMosaic route) and its ground-truth twin are no longer refused."""
import copy

import numpy as np
import pytest
from e2e_helpers import make_voc_root
from sample_data import shared_path
from test_preflight_content import voc_config

from mmdiffseg import preflight
from mmdiffseg.datasets import LabelCache
from mmdiffseg.models.prefill import training_label_keys

GENERATOR = dict(type='ISeg', vocabulary='voc')


@pytest.fixture
def online(tmp_path):
    """A VOC sample training config with online labels, its cache holding every label."""
    root = make_voc_root(shared_path('voc2012_val_samples'), tmp_path / 'VOCdevkit' / 'VOC2012')
    cfg = voc_config(root, generator=GENERATOR)
    cache = cfg.train_dataloader.dataset.pipeline[2].cache
    cache.cache_dir, cache.model = str(tmp_path / 'cache'), str(tmp_path / 'sd')
    cfg.model = dict(data_preprocessor=dict(type='DiffusionLabelPreprocessor'))
    store = LabelCache(cache.cache_dir, cache.model, GENERATOR, writer_dtype='float32')
    store.sign()
    for _, key, _ in training_label_keys(cfg, cache.cache_dir):
        store.save(key, np.zeros((4, 4), np.uint8))
    return cfg


def pipeline_items(cfg, mode='train'):
    return [(item.what, item.fix) for item in preflight.check(cfg, mode)
            if 'LoadPseudoLabel' in item.what or 'label caches' in item.what
            or 'cannot list' in item.what]


def test_the_stock_order_passes(online):
    assert pipeline_items(online) == []
    online.train_dataloader.dataset.pipeline[0] = dict(type='LoadSingleRSImageFromFile')
    assert not [what for what, _ in pipeline_items(online) if 'no image loader' in what]


@pytest.mark.parametrize('edit, what, fix', [
    (lambda p: p.append(dict(type='LoadAnnotations')),
     "has LoadAnnotations after LoadPseudoLabel: it replaces the generated label by the "
     "dataset's ground truth (a weakly supervised run trained fully supervised)",
     'leave LoadAnnotations out of this pipeline'),
    (lambda p: p.insert(0, p.pop(2)),
     'has no image loader before LoadPseudoLabel: the label is made from the loaded image',
     'put LoadPseudoLabel right after LoadImageFromFile and LoadImageLevelLabels'),
    (lambda p: p.extend([dict(type='RandomFlip', prob=0.5), copy.deepcopy(p[2])]),
     'has LoadPseudoLabel twice: the second would make the label of an image already '
     'transformed', 'keep the first; put LoadPseudoLabel right after LoadImageFromFile'),
])
def test_a_misplaced_label_step_is_named(online, edit, what, fix):
    """LoadAnnotations after it trained on the ground truth with the cache full (label_generated
    0, nothing said) and crashed in mmseg's packing on an empty one; before the image loader a
    bare KeyError 'img'; twice around a RandomFlip, a ValueError at whichever batch first drew
    a flip."""
    edit(online.train_dataloader.dataset.pipeline)
    ((got_what, got_fix),) = pipeline_items(online)
    assert got_what == f'train_dataloader.dataset.pipeline {what}'
    assert got_fix.startswith(fix)


def test_a_multi_image_mix_wrapper_is_checked_through_its_dataset(online):
    """MultiImageMixDataset holds a pipeline and a dataset: the pre-flight took it for a dataset
    and refused every such config ('cannot list its images'), the RandomMosaic route the docs
    give (prefill, then train) included; its dataset is checked as any other."""
    online.train_dataloader.dataset = dict(
        type='MultiImageMixDataset', dataset=online.train_dataloader.dataset,
        pipeline=[dict(type='RandomMosaic', prob=1.0, img_scale=(64, 64))])
    for mode in ('train', 'prefill'):
        assert pipeline_items(online, mode) == []
    online.train_dataloader.dataset.dataset.pipeline.append(dict(type='LoadAnnotations'))
    ((what, _),) = pipeline_items(online)
    assert what.startswith('train_dataloader.dataset.dataset.pipeline has LoadAnnotations after')


def test_datasets_with_two_label_caches_are_named_before_training(online, tmp_path):
    """One preprocessor serves one label cache: a ConcatDataset whose parts name two passed the
    pre-flight and stopped at the first batch mixing them."""
    first = online.train_dataloader.dataset
    second = copy.deepcopy(first)
    second.pipeline[2].cache.cache_dir = str(tmp_path / 'other')
    online.train_dataloader.dataset = dict(type='ConcatDataset', datasets=[first, second])
    ((what, fix),) = pipeline_items(online)
    assert what == (f"training: the train datasets use several label caches "
                    f"['{first.pipeline[2].cache.cache_dir}', '{tmp_path / 'other'}'] (or one "
                    "with other settings); the preprocessor serves one")
    assert fix.startswith('give every LoadPseudoLabel of the train datasets the same cache')
    second.pipeline[2].cache.cache_dir = first.pipeline[2].cache.cache_dir
    assert pipeline_items(online) == []
