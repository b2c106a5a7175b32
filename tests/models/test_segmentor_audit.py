"""Mutation audit of segmentor.py: DiffusionSegmentor's engine settings reach its labeler."""
import pytest
import torch

from mmdiffseg.models import DiffusionSegmentor


def test_the_engine_settings_reach_the_labeler_and_default_to_float32_batches_of_4():
    """engine_dtype, batch_size and engine_kwargs are the AttentionLabeler's (the model is not
    loaded here); without them the engine runs in float32, 4 images per call."""
    given = DiffusionSegmentor('tiny', dict(type='ISeg'), engine_dtype='bfloat16', batch_size=3,
                               engine_kwargs=dict(attention_slicing=True)).labeler
    assert (given.model, given.dtype, given.batch_size, given.engine_kwargs) == (
        'tiny', torch.bfloat16, 3, dict(attention_slicing=True))
    assert given.engine is None
    default = DiffusionSegmentor('tiny', dict(type='ISeg')).labeler
    assert (default.dtype, default.batch_size, default.engine_kwargs) == (torch.float32, 4, {})


def test_the_training_and_tensor_modes_refuse_with_what_to_use_instead():
    """A training-free, whole-image model: loss, the tensor mode, features and encode_decode
    each raise a RuntimeError naming what to use instead (the model is not loaded)."""
    model = DiffusionSegmentor('tiny', dict(type='ISeg'))
    image = torch.zeros(1, 3, 8, 8)
    for call, fix in ((lambda: model.loss(image, []),
                       r'training-free: evaluate it with tools/test\.py'),
                      (lambda: model._forward(image), 'no tensor mode; use predict'),
                      (lambda: model.extract_feat(image), 'no features; use predict'),
                      (lambda: model.encode_decode(image, [{}]), 'whole images; use predict')):
        with pytest.raises(RuntimeError, match=f'^DiffusionSegmentor (is|has|works on) .*{fix}$'):
            call()
