"""Mutation audit of online_labeler.py: the key check of uncached samples, and class names
passed to the generator as given (None stays None)."""
import copy
import fcntl
import json
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


def test_the_model_loads_before_any_claim_and_the_precision_is_recorded_before_it(
        setup, monkeypatch):
    """A model load (a download, a slow disk) holds no label claim that another process or rank
    would wait on until its wait_timeout; the cache records this run's precision before its
    first claim, so a job in another precision started meanwhile is refused, not this one."""
    from mmdiffseg.attention import DiffusionAttentionEngine
    pipeline, samples, pre, engine, cache = setup
    folder = Path(cache['cache_dir'])
    loads, extract = [], engine.extract

    def load(cls, model, **kwargs):
        for lock in folder.rglob('*.lock'):   # none held while the model loads
            with open(lock) as file:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        loads.append(model)
        return engine

    def signed_extract(*args, **kwargs):
        assert json.loads((folder / 'cache.json').read_text())['made_with'] == dict(
            dtype='float32', variant=None)
        assert list(folder.rglob('*.lock'))   # this batch's claims
        return extract(*args, **kwargs)
    monkeypatch.setattr(DiffusionAttentionEngine, 'from_pretrained', classmethod(load))
    monkeypatch.setattr(engine, 'extract', signed_extract)
    out = pre(pseudo_collate([unaugmented(cache)(copy.deepcopy(s)) for s in samples]),
              training=True)
    assert loads == ['fake/sd'] and engine.calls
    assert all((s.gt_sem_seg.data != 255).any() for s in out['data_samples'])


def test_a_job_whose_model_is_here_records_its_precision_when_it_starts(tmp_path):
    """With the model's files here (a folder, a cached hub model), binding the cache signs it:
    the first job started sets the precision, and a second job in another precision started
    before any label was made is refused at its start (before, whichever saved first won)."""
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.models.online_labeler import OnlineLabeler
    model = tmp_path / 'sd'
    model.mkdir()
    (model / 'model_index.json').write_text('{"_class_name": "StableDiffusionPipeline"}')
    spec = dict(cache_dir=str(tmp_path / 'cache'), model=str(model),
                generator=dict(type='BrightnessGenerator', classes=['background', 'cat']))
    OnlineLabeler(dtype='bfloat16').bind(spec)
    made_with = json.loads((tmp_path / 'cache' / 'cache.json').read_text())['made_with']
    assert made_with == dict(dtype='bfloat16', variant=None)
    with pytest.raises(UserInputError, match='holds labels made in bfloat16, and this run would '
                                             'add labels made in float32'):
        OnlineLabeler(dtype='float32').bind(spec)
    OnlineLabeler(dtype='bfloat16').bind(spec)
