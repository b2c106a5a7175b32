"""Mutation audit of segmentor.py: DiffusionSegmentor's engine settings reach its labeler."""
import numpy as np
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


def test_a_preprocessor_that_would_pass_bgr_or_normalised_images_is_refused():
    """The generator labels RGB 0..255: mmseg's default SegDataPreProcessor (BGR, as
    LoadImageFromFile loads) and one with mean / std are refused at build time, naming
    model.data_preprocessor and the fix; without one the model gets the RGB one."""
    from mmengine.registry import init_default_scope
    from mmseg.structures import SegDataSample
    init_default_scope('mmseg')
    mean_std = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)
    for given in (dict(type='SegDataPreProcessor'), dict(type='SegDataPreProcessor', **mean_std)):
        with pytest.raises(ValueError, match=r"model\.data_preprocessor=.*BGR or normalised.* "
                           r"use dict\(type='SegDataPreProcessor', bgr_to_rgb=True\)"):
            DiffusionSegmentor('tiny', dict(type='ISeg'), data_preprocessor=given)
    bgr = torch.arange(3 * 2 * 2, dtype=torch.uint8).reshape(3, 2, 2)
    sample = SegDataSample(metainfo=dict(img_shape=(2, 2)))
    for model in (DiffusionSegmentor('tiny', dict(type='ISeg')),
                  DiffusionSegmentor('tiny', dict(type='ISeg'), data_preprocessor=dict(
                      type='SegDataPreProcessor', bgr_to_rgb=True))):
        seen = model.data_preprocessor(dict(inputs=[bgr], data_samples=[sample]), False)
        torch.testing.assert_close(seen['inputs'][0], bgr.flip(0).float())


SEGMENTOR_CONFIGS = ('diffseg-sd14_cityscapes27-unsupervised-512x512',
                     'diffseg-sd14_cocostuff27-unsupervised-512x512',
                     'iseg-sd21base_voc12-train-pseudo-masks')


@pytest.mark.parametrize('name', SEGMENTOR_CONFIGS)
def test_the_evaluation_configs_give_inference_their_test_pipeline(name):
    """mmseg's inference_model reads the config's test_pipeline, which these configs inherited
    from the stock Cityscapes / ADE20K configs (a resize to 2048x1024: DiffSeg segmented a COCO
    image upscaled whole, not its centre square; iSeg lacked its image-level labels): it is the
    test loader's pipeline, as in mmseg's configs."""
    from mmengine.config import Config
    from sample_data import REPO
    cfg = Config.fromfile(str(REPO / 'configs' / 'mask2former' / f'{name}.py'))
    assert cfg.model.type == 'DiffusionSegmentor'
    assert cfg.test_pipeline == cfg.test_dataloader.dataset.pipeline


def test_inference_with_the_diffseg_config_predicts_the_centre_square(tmp_path):
    """The shipped DiffSeg protocol through mmseg's init_model / inference_model: the
    prediction is the centre square of the image (the crop it segments), not the image
    upscaled into the Cityscapes frame, in place in the image with 255 around; an iSeg
    pipeline without a label file says so."""
    from mmengine.config import Config
    from mmseg.apis import inference_model, init_model
    from sample_data import REPO, shared_path

    from mmdiffseg.attention.testing import tiny_engine
    from mmdiffseg.datasets import LoadImageLevelLabels
    cfg = Config.fromfile(str(REPO / 'configs/mask2former/'
                              'diffseg-sd14_cocostuff27-unsupervised-512x512.py'))
    model = init_model(cfg, device='cpu')
    model.labeler.engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-v1-4'))
    result = inference_model(model, np.zeros((30, 60, 3), np.uint8))
    prediction = result.pred_sem_seg.data[0]
    assert prediction.shape == (30, 60) and (prediction[:, 15:45] != 255).all()
    assert (prediction[:, :15] == 255).all() and (prediction[:, 45:] == 255).all()
    with pytest.raises(ValueError) as refused:
        LoadImageLevelLabels(classes='voc')(dict(img_path='photo.jpg'))
    assert str(refused.value) == (
        'LoadImageLevelLabels(ann_file=None) takes the classes from the ground truth, and '
        'photo.jpg has none (an image given for inference): set ann_file to a JSON file '
        '{image name: [class names]}')


def test_a_checkpoint_given_to_init_model_is_refused(tmp_path):
    """init_model(<DiffSeg config>, <a Mask2Former checkpoint>) loaded nothing (a warning of
    mmengine's) and took the checkpoint's VOC class names for DiffSeg's segment ids."""
    import torch
    from mmseg.apis import init_model
    from sample_data import REPO
    checkpoint = tmp_path / 'iter_4.pth'
    torch.save(dict(state_dict={'decode_head.conv_seg.weight': torch.zeros(2, 1)},
                    meta=dict(dataset_meta=dict(classes=('background', 'aeroplane')))),
               checkpoint)
    config = str(REPO / 'configs/mask2former/diffseg-sd14_cocostuff27-unsupervised-512x512.py')
    with pytest.raises(ValueError, match=r"^DiffusionSegmentor is training-free: a checkpoint of "
                                         r"1 weights \(e.g. 'decode_head.conv_seg.weight'\) has "
                                         r"nothing to load into it"):
        init_model(config, str(checkpoint), device='cpu')
    assert init_model(config, device='cpu').dataset_meta['classes'][0] == '0'


def test_the_models_dataset_meta_names_and_colours_the_generators_classes():
    """show_result_pyplot and the inferencer draw with the model's dataset_meta: iSeg / SeeDiff
    class labels in the label PNGs' colours under their names (segment-id colours named '0',
    '1', ... otherwise), 255 as unsure."""
    from mmdiffseg.apis.folders import palette_for
    from mmdiffseg.datasets.class_names import DATASET_CLASSES
    voc = list(DATASET_CLASSES['voc'])
    meta = DiffusionSegmentor('tiny', dict(type='SeeDiff', classes=voc)).dataset_meta
    assert meta['classes'][:21] == voc and meta['palette'][:21] == palette_for(voc)
    assert meta['classes'][255] == 'unsure'


def test_a_prediction_with_ground_truth_comes_at_its_size_after_a_crop():
    """With ground truth (cropped with the image: DiffSeg's protocol without a resize) the
    prediction is the ground truth's size; only without one is it put back in the frame."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    from mmdiffseg.attention.testing import tiny_engine
    from sample_data import shared_path
    from test_label_images import QuadrantLabels
    init_default_scope('mmseg')
    pipeline = Compose([dict(type='LoadImageFromNDArray'), dict(type='CenterSquareCrop'),
                        dict(type='PackSegInputs')])
    packed = pipeline(dict(img=np.zeros((30, 60, 3), np.uint8), seg_fields=['gt_seg_map'],
                           gt_seg_map=np.zeros((30, 60), np.uint8)))
    model = DiffusionSegmentor('tiny', dict(type='DiffSeg'))
    model.labeler.engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    model.labeler.generator = QuadrantLabels(7)
    [predicted] = model.predict([packed['inputs'].float()], [packed['data_samples']])
    assert predicted.gt_sem_seg.data.shape == predicted.pred_sem_seg.data.shape == (1, 30, 30)


def test_an_image_whose_classes_overflow_the_prompt_is_predicted_unsure_and_named(monkeypatch):
    """tools/test.py with an iSeg config stopped at the first image whose classes do not fit
    the 77-token prompt (ADE20K's, read off the ground truth), with a traceback naming no
    image; pseudo_label.py counts such an image failed. Its prediction is all unsure (255),
    with a warning naming it; the others are labelled."""
    from mmseg.structures import SegDataSample
    from mmdiffseg.attention.testing import tiny_engine
    from mmdiffseg.datasets.class_names import DATASET_CLASSES
    from mmdiffseg.models import online_labeler
    from sample_data import shared_path
    ade = [name.strip() for name in DATASET_CLASSES['ade20k']]
    model = DiffusionSegmentor('tiny', dict(type='ISeg', classes=ade, vocabulary=None,
                                            cross_heads=None, self_heads=None, iters=1,
                                            cluster_iters=1), use_image_labels=True)
    model.labeler.engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    warned = []
    monkeypatch.setattr(online_labeler, 'print_log',
                        lambda message, **kwargs: warned.append(message))
    samples = [SegDataSample(metainfo=dict(img_shape=(32, 48), ori_shape=(32, 48),
                                           img_path=f'/data/{name}.jpg', image_labels=labels))
               for name, labels in (('many', ade[:40]), ('few', ['wall', 'floor']))]
    images = [torch.full((3, 32, 48), 90, dtype=torch.uint8)] * 2
    many, few = model.predict(images, samples)
    assert (many.pred_sem_seg.data == 255).all() and many.pred_sem_seg.shape == (32, 48)
    assert (few.pred_sem_seg.data != 255).any()
    assert len(warned) == 1 and warned[0].startswith('/data/many.jpg: class ') and \
        'lies beyond the first 77 tokens' in warned[0]
