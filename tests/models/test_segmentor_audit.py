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


def test_without_ground_truth_predictions_are_at_the_size_the_image_was_loaded_at():
    """As mmseg's segmentors predict (``--out`` PNGs, ``--show-dir`` overlays): a 97x131 image
    resized to 47x64 by the test pipeline is labelled at 97x131; with ground truth, at its
    size."""
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    seen = []

    class Labeler:
        def generate(self, images, names, device, sizes):
            seen.append(sizes)
            return [torch.zeros(size).numpy() for size in sizes]
    model = DiffusionSegmentor('tiny', dict(type='ISeg'))
    model.labeler = Labeler()
    meta = dict(img_shape=(47, 64), ori_shape=(97, 131))
    samples = model.predict(torch.zeros(1, 3, 47, 64), [SegDataSample(metainfo=meta)])
    assert seen == [[(97, 131)]] and samples[0].pred_sem_seg.shape == (97, 131)
    scored = SegDataSample(metainfo=meta, gt_sem_seg=PixelData(data=torch.zeros(1, 40, 50)))
    model.predict(torch.zeros(1, 3, 47, 64), [scored])
    assert seen[-1] == [(40, 50)]
