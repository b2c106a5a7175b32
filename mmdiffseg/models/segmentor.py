"""``DiffusionSegmentor``: a training-free segmentor (engine + generator) for ``tools/test.py``.

Runs a mask generator on the test images, e.g. DiffSeg's unsupervised protocol (segment ids,
scored with :class:`~mmdiffseg.evaluation.HungarianMatchedIoU`) or iSeg / DiffSeg with class names
from ``LoadImageLevelLabels`` (scored with ``IoUMetric`` / ``PseudoLabelMetric``).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from mmengine.structures import PixelData
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from ..apis.visualize import label_meta
from ..datasets.unsupervised import center_square
from ..generators.base import IGNORE_INDEX
from .online_labeler import AttentionLabeler, unsure_label


#: the data preprocessor that gives the generator what it labels: RGB 0..255, unnormalised
RGB_PREPROCESSOR = "dict(type='SegDataPreProcessor', bgr_to_rgb=True)"


@MODELS.register_module()
class DiffusionSegmentor(BaseSegmentor):
    """Segment images with Stable Diffusion attention and a mask generator; nothing to train.

    Args:
        sd_model: Stable Diffusion hub id or diffusers folder.
        generator: generator config (``MASK_GENERATORS``).
        use_image_labels: give each image's ``image_labels`` (``LoadImageLevelLabels``) to the
            generator; False for unsupervised segment ids.
        engine_dtype, batch_size, engine_kwargs: :class:`AttentionLabeler` arguments.
        data_preprocessor: must turn ``LoadImageFromFile``'s BGR into RGB and keep 0..255
            (``SegDataPreProcessor`` with ``bgr_to_rgb=True``, no mean / std: the default); any
            other is refused (the generator would label BGR or normalised images).
        pretrained, train_cfg: None (mmseg's ``init_model`` sets both); nothing else: the
            weights are ``sd_model``'s and nothing trains.
    """

    def __init__(self, sd_model: str, generator: Dict, use_image_labels: bool = False,
                 engine_dtype: str = 'float32', batch_size: int = 4,
                 engine_kwargs: Optional[Dict] = None, data_preprocessor: Optional[Dict] = None,
                 init_cfg=None, pretrained: Optional[str] = None,
                 train_cfg: Optional[Dict] = None):
        if pretrained is not None or train_cfg is not None:
            raise ValueError(
                f'DiffusionSegmentor: pretrained={pretrained!r}, train_cfg={train_cfg!r}: it is '
                f'training-free and its weights are sd_model\'s ({sd_model}); leave both out')
        super().__init__(data_preprocessor=data_preprocessor or dict(
            type=SegDataPreProcessor, bgr_to_rgb=True), init_cfg=init_cfg)
        given = self.data_preprocessor
        if not getattr(given, 'channel_conversion', False) or \
                getattr(given, '_enable_normalize', False):
            raise ValueError(
                f'DiffusionSegmentor: model.data_preprocessor={data_preprocessor} would give the '
                'generator BGR or normalised images; it labels RGB 0..255: use '
                f"{RGB_PREPROCESSOR} (no mean / std), or leave data_preprocessor out")
        self.labeler = AttentionLabeler(sd_model, generator, dtype=engine_dtype,
                                        batch_size=batch_size, engine_kwargs=engine_kwargs)
        self.use_image_labels = use_image_labels
        # what mmseg's show_result_pyplot / inferencer draw with (a checkpoint's, elsewhere)
        self.dataset_meta = label_meta(self.labeler.generator.classes)

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        """Refuse trained weights (``init_model(config, checkpoint)``): nothing here takes
        them, and mmseg would then name the labels with the checkpoint's classes."""
        given = [key for key in state_dict if key.startswith(prefix)]
        if given:
            raise ValueError(f'{type(self).__name__} is training-free: a checkpoint of '
                             f'{len(given)} weights (e.g. {given[0]!r}) has nothing to load into '
                             f'it (its weights are sd_model\'s); build it without a checkpoint, '
                             'or give the config the checkpoint was trained with')
        super()._load_from_state_dict(state_dict, prefix, *args)

    def test_step(self, data: dict) -> List:
        """Each image through the data preprocessor alone, then the whole batch to
        :meth:`predict`: mmseg's ``SegDataPreProcessor`` refuses a test batch of images of
        different sizes (``test_dataloader.batch_size`` > 1 on VOC), the generator takes them."""
        batch = [self.data_preprocessor(dict(inputs=[image], data_samples=[sample]), False)
                 for image, sample in zip(data['inputs'], data['data_samples'])]
        # the preprocessor casts to float: a uint8 image goes back to uint8 (its values are
        # whole, no mean / std here), to be resized as every other route resizes it
        return self.predict([one['inputs'][0].to(image.dtype) for image, one in
                             zip(data['inputs'], batch)],
                            [one['data_samples'][0] for one in batch])

    def val_step(self, data: dict) -> List:
        """As :meth:`test_step`."""
        return self.test_step(data)

    def predict(self, inputs: Union[torch.Tensor, List[torch.Tensor]],
                data_samples: Optional[List] = None) -> List:
        """Each ``(3, H, W)`` image (a batch tensor or a list of any sizes) as the pipeline made
        it: padding of the data preprocessor (its ``test_cfg``) is cut off before the generator
        sees it, so a prediction does not depend on the other images of its batch. The values
        are passed as they are: a uint8 image as uint8, resized to the model's size as the
        tools, the online labels and the Python API resize it (OpenCV, as iSeg's release); a
        float one (a pipeline that resized in float: DiffSeg's evaluation,
        ``ResizeHalfPixelLabels(float_image=True)``, as TF's resize) as float32 0..255,
        unrounded. Each prediction comes at its ground truth's size, else at the size the
        image had before the pipeline resized it (:func:`_prediction_size`). Without
        ``data_samples`` each image gets a ``SegDataSample`` of its own (a model with
        ``use_image_labels`` needs theirs)."""
        data_samples = self._samples_for(inputs, data_samples)
        images = []
        for img, sample in zip(inputs, data_samples):
            height, width = sample.metainfo.get('img_shape', img.shape[-2:])[:2]
            img = img[:, :height, :width]
            img = img if img.dtype == torch.uint8 else img.float().clamp(0, 255)
            images.append(img.permute(1, 2, 0).cpu().numpy())
        names = None
        if self.use_image_labels:
            names = [list(s.metainfo['image_labels']) for s in data_samples]
        sizes = [_prediction_size(s, image) for s, image in zip(data_samples, images)]
        labels = self.labeler.generate(images, names, inputs[0].device, sizes)
        for sample, label, size in zip(data_samples, labels, sizes):
            if not isinstance(label, np.ndarray):
                label = unsure_label(label, size, sample.metainfo.get('img_path', 'an image'))
            if 'gt_sem_seg' not in sample:
                label = _in_frame(label, sample.metainfo.get('ori_shape'))
            sample.pred_sem_seg = PixelData(data=torch.from_numpy(label.astype(np.int64))[None])
        return data_samples

    def _samples_for(self, inputs, data_samples: Optional[List]) -> List:
        """``data_samples`` checked against the ``inputs`` (one each, with ``image_labels`` when
        the generator reads them), or new ones when None."""
        if data_samples is None:
            if self.use_image_labels:
                raise ValueError('DiffusionSegmentor(use_image_labels=True).predict needs '
                                 "data_samples whose metainfo holds each image's image_labels "
                                 '(LoadImageLevelLabels, then PackPseudoLabelInputs)')
            return [SegDataSample(metainfo=dict(img_shape=tuple(img.shape[-2:])))
                    for img in inputs]
        if len(data_samples) != len(inputs):
            raise ValueError(f'DiffusionSegmentor.predict: {len(data_samples)} data_samples for '
                             f'{len(inputs)} images (one each)')
        unlabelled = [i for i, s in enumerate(data_samples) if 'image_labels' not in s.metainfo]
        if self.use_image_labels and unlabelled:
            raise ValueError(f'DiffusionSegmentor(use_image_labels=True): data_samples '
                             f'{unlabelled} have no image_labels in their metainfo: end the '
                             'test pipeline with LoadImageLevelLabels and PackPseudoLabelInputs '
                             "(PackSegInputs drops them): the test dataloader's, and the "
                             "config's test_pipeline, which mmseg's inference_model reads")
        return data_samples

    def loss(self, inputs, data_samples):
        raise RuntimeError('DiffusionSegmentor is training-free: evaluate it with tools/test.py')

    def _forward(self, inputs, data_samples=None):
        raise RuntimeError('DiffusionSegmentor has no tensor mode; use predict')

    def extract_feat(self, inputs):
        raise RuntimeError('DiffusionSegmentor has no features; use predict')

    def encode_decode(self, inputs, batch_img_metas):
        raise RuntimeError('DiffusionSegmentor works on whole images; use predict')


def _prediction_size(sample, image: np.ndarray) -> Tuple[int, int]:
    """The ground truth's size, else the image's before the pipeline's last resize
    (``img_shape / scale_factor``): ``ori_shape`` where the pipeline only resizes, as mmseg's
    segmentors predict (``inference_model``, the visualizer), and the crop's own size where it
    crops first (``CenterSquareCrop``), never the crop stretched over the frame."""
    if 'gt_sem_seg' in sample:
        return tuple(sample.gt_sem_seg.shape)
    return size_before_resize(sample.metainfo, image.shape[:2])


def size_before_resize(metainfo: dict, shape) -> Tuple[int, int]:
    """The ``(H, W)`` an image of ``shape`` had before the pipeline's resize
    (``shape / scale_factor``; ``shape`` without one)."""
    height, width = shape[:2]
    scale = metainfo.get('scale_factor')
    if scale is None:
        return height, width
    return round(height / scale[1]), round(width / scale[0])


def _in_frame(label: np.ndarray, frame) -> np.ndarray:
    """A prediction of the centre square (``CenterSquareCrop``: a square of the frame's shorter
    side) put in place in its whole frame (``ori_shape``), 255 around it, so mmseg's
    ``show_result_pyplot`` and ``MMSegInferencer`` draw it on the image they were given; any
    other prediction as it is."""
    if frame is None:
        return label
    height, width = frame[:2]
    side = min(height, width)
    if (height, width) == label.shape or label.shape != (side, side):
        return label
    framed = np.full((height, width), IGNORE_INDEX, dtype=label.dtype)
    center_square(framed)[...] = label  # a view: the crop's place in the frame
    return framed
