"""AttentionLabeler / OnlineLabeler set-up: precision names, the generator's device, autocast."""
import numpy as np
import pytest
import torch
from mmseg.registry import MODELS

from mmdiffseg.attention import DiffusionAttentionEngine
from mmdiffseg.attention.testing import tiny_engine
from mmdiffseg.models.online_labeler import AttentionLabeler
from sample_data import shared_path
from test_label_images import QuadrantLabels


class Zeros(QuadrantLabels):
    """Label 0 everywhere; records the dtype of a matrix product on the images (what autocast
    would lower) and the devices it is moved to."""

    def __init__(self):
        super().__init__(0)
        self.moved_to, self.product_dtype = [], None

    def forward(self, maps, images, class_names):
        self.product_dtype = torch.mm(images.flatten(1)[:, :4], torch.ones(4, 1)).dtype
        return super().forward(maps, images, class_names)

    def to(self, *args, **kwargs):
        self.moved_to.append(torch.device(args[0]))
        return super().to(*args, **kwargs)


class CudaOnly(Zeros):
    def check_device(self, device):
        if device.type != 'cuda':
            raise ValueError(f'CudaOnly needs CUDA, got {device}')


def test_a_misspelt_precision_is_refused_by_name():
    """Both labelers and the preprocessor (when the config is built, not at the first batch)
    name the three precisions."""
    with pytest.raises(ValueError, match=r"AttentionLabeler: dtype must be one of \['bfloat16', "
                       r"'float16', 'float32'\], got 'half'"):
        AttentionLabeler('m', Zeros(), dtype='half')
    with pytest.raises(ValueError, match="OnlineLabeler: dtype must be one of .*got 'fp16'"):
        MODELS.build(dict(type='DiffusionLabelPreprocessor', engine_dtype='fp16'))


def test_a_generator_that_cannot_run_on_the_device_is_refused_before_the_model_loads(
        monkeypatch):
    def load(cls, model, **kwargs):
        raise AssertionError('the model was loaded')
    monkeypatch.setattr(DiffusionAttentionEngine, 'from_pretrained', classmethod(load))
    with pytest.raises(ValueError, match='CudaOnly needs CUDA, got cpu'):
        AttentionLabeler('m', CudaOnly()).generate([np.zeros((8, 8, 3), np.uint8)], None, 'cpu')


def test_labels_are_made_in_float32_under_autocast_on_the_engines_device():
    """``--amp`` wraps the preprocessor in autocast: the generator still computes in float32,
    and it is moved to the engine's device."""
    generator = Zeros()
    labeler = AttentionLabeler('m', generator)
    labeler.engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        [label] = labeler.generate([np.zeros((8, 8, 3), np.uint8)], None, 'cpu')
        assert torch.mm(torch.ones(1, 4), torch.ones(4, 1)).dtype == torch.bfloat16
    assert label.shape == (8, 8) and generator.product_dtype == torch.float32
    assert generator.moved_to == [labeler.engine.device]
