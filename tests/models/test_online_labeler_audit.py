"""Mutation audit of online_labeler.py: the key check of uncached samples, and class names
passed to the generator as given (None stays None)."""
import copy

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
