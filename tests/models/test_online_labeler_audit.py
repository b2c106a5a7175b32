"""Mutation audit of online_labeler.py: the key check of uncached samples, and class names
passed to the generator as given (None stays None)."""
import copy
import fcntl
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import pseudo_collate
from mmseg.structures import SegDataSample
import test_online_labels
from test_online_labels import BrightnessGenerator, FakeEngine, unaugmented

from mmdiffseg.models.online_labeler import label_images

setup = test_online_labels.setup  # the fixture


class NamesSeen(BrightnessGenerator):
    """Label 0 everywhere; records the class names each call of the generator gets."""

    def __init__(self):
        super().__init__(None)
        self.seen = []

    def forward(self, maps, images, class_names):
        self.seen.append(class_names)
        b, _, h, w = images.shape
        return torch.zeros(b, h, w, dtype=torch.int64)


def test_the_generator_gets_no_class_names_as_none_and_given_ones_as_given():
    """Without class names the generator is called with None (unlabelled segment ids; SeeDiff and
    labelled DiffSeg refuse it), not with an empty list per image (which would label every
    image silently as background)."""
    generator = NamesSeen()
    images = [np.zeros((8, 8, 3), np.uint8), np.zeros((6, 4, 3), np.uint8)]
    labels = label_images(FakeEngine(), generator, images, None)
    assert [label.shape for label in labels] == [(8, 8), (6, 4)]
    label_images(FakeEngine(), generator, images, [['cat'], []])
    assert generator.seen == [None, [['cat'], []]]


def test_an_uncached_sample_without_image_labels_is_refused_by_name(setup):
    """A sample packed with a source-index map (and PackPseudoLabelInputs' all-255 (1, H, W)
    label) but without image_labels gets the error naming the pipeline steps, and nothing is
    labelled: its 1-channel label does not pass it as a sample with its own mask."""
    _, samples, pre, engine, cache = setup
    data = pseudo_collate([unaugmented(cache)(copy.deepcopy(samples[0]))])
    packed = data['data_samples'][0]
    assert packed.gt_sem_seg.data.shape[0] == 1 and 'pseudo_label_index' in packed
    stripped = SegDataSample(metainfo={k: v for k, v in packed.metainfo.items()
                                       if k != 'image_labels'})
    stripped.gt_sem_seg = packed.gt_sem_seg
    stripped.pseudo_label_index = packed.pseudo_label_index
    data['data_samples'] = [stripped]
    with pytest.raises(KeyError, match='LoadImageLevelLabels, LoadPseudoLabel and '
                                       'PackPseudoLabelInputs'):
        pre(data, training=True)
    assert engine.calls == []


def test_a_gpu_out_of_memory_names_the_fixes_and_keeps_the_cache_usable(setup, monkeypatch):
    """The labeler shares the GPU with the model being trained: running out of memory while
    labelling names prefill_labels.py and the two preprocessor options to lower (by their config
    keys), stays a CUDA out-of-memory error, and releases its claims, so the rerun labels the
    same images without waiting for a dead claim."""
    pipeline, samples, pre, engine, cache = setup
    extract = engine.extract

    def out_of_memory(*args, **kwargs):
        if len(engine.calls) == 1:  # the batch's second engine call
            raise torch.cuda.OutOfMemoryError(
                'CUDA out of memory. Tried to allocate 2.00 GiB\ndetails')
        return extract(*args, **kwargs)
    monkeypatch.setattr(engine, 'extract', out_of_memory)
    data = pseudo_collate([unaugmented(cache)(copy.deepcopy(s)) for s in samples])
    with pytest.raises(torch.cuda.OutOfMemoryError) as raised:
        pre(copy.deepcopy(data), training=True)
    message = str(raised.value)
    assert 'making online labels (CUDA out of memory. Tried to allocate 2.00 GiB)' in message
    assert 'label_batch_size 2, engine_dtype float32' in message
    assert ('python tools/prefill_labels.py CONFIG (training then loads none), or --cfg-options '
            'model.data_preprocessor.label_batch_size=1 '
            'model.data_preprocessor.engine_dtype=float16;') in message
    assert cache['cache_dir'] in message
    assert isinstance(raised.value.__cause__, torch.cuda.OutOfMemoryError)
    for lock in Path(cache['cache_dir']).rglob('*.lock'):  # released: lockable again
        with open(lock) as file:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    monkeypatch.setattr(engine, 'extract', extract)
    out = pre(data, training=True)
    assert all((s.gt_sem_seg.data != 255).any() for s in out['data_samples'])
