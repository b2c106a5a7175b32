"""label_images: the one path from images to uint8 labels (online labels, tools, segmentor)."""
import numpy as np
import pytest
import torch

import mmdiffseg  # noqa: F401
from mmdiffseg.attention import CaptureRequest, CaptureSpec
from mmdiffseg.attention.testing import tiny_engine
from mmdiffseg.generators import MaskGenerator
from mmdiffseg.models.online_labeler import label_images
from sample_data import shared_path


class QuadrantLabels(MaskGenerator):
    """Labels ``value`` on the top-left quadrant of the working image, 0 elsewhere."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    @property
    def capture_spec(self):
        return CaptureSpec((CaptureRequest('self', 8),))

    def extract_kwargs(self, class_names):
        return {}

    def forward(self, maps, images, class_names):
        b, _, h, w = images.shape
        labels = torch.zeros(b, h, w, dtype=torch.int64)
        labels[:, :h // 2, :w // 2] = self.value
        return labels


@pytest.fixture(scope='module')
def engine():
    return tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))


def test_labels_come_back_at_each_image_size(engine):
    images = [np.zeros((40, 60, 3), np.uint8), np.zeros((100, 50, 3), np.uint8)]
    labels = label_images(engine, QuadrantLabels(7), images, None)
    assert [lab.shape for lab in labels] == [(40, 60), (100, 50)]
    assert all(lab.dtype == np.uint8 for lab in labels)
    expected = np.zeros((100, 50), np.uint8)
    expected[:50, :25] = 7
    np.testing.assert_array_equal(labels[1], expected)
    resized = label_images(engine, QuadrantLabels(7), images, None, out_sizes=[(8, 8), (4, 6)])
    np.testing.assert_array_equal(resized[1], np.pad(np.full((2, 3), 7, np.uint8), ((0, 2), (0, 3))))


def test_labels_beyond_uint8_are_refused_not_wrapped(engine):
    with pytest.raises(ValueError, match='made label 300'):
        label_images(engine, QuadrantLabels(300), [np.zeros((64, 64, 3), np.uint8)], None)
