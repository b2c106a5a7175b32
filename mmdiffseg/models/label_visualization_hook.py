"""Pictures drawn on the image the model sees (after the pipeline), by the runner's visualizer.

``OnlineLabelVisualizationHook``: the labels a training run learns from.

Every ``interval`` training iterations, the first ``max_images`` images of the batch are drawn
with their training labels (made online by :class:`~.preprocessor.DiffusionLabelPreprocessor` or
read from its cache, after the pipeline's augmentations: what the model is fitted to) by the
runner's visualizer (mmseg's ``SegLocalVisualizer``), so they land wherever its ``vis_backends``
write: ``<work_dir>/<timestamp>/vis_data/vis_image/online_label_<image file name>_<iter>.png``
with ``LocalVisBackend`` (``online_label_<i>`` for a sample without ``img_path``), TensorBoard or
W&B with theirs. Rank 0 only. Unsure pixels (255) are drawn in the colour the tools' label PNGs
and overlays give them, named ``'unsure'`` (mmseg's visualizer leaves them undrawn, like black
classes such as VOC's background).

``ModelInputVisualizationHook``: test / validation predictions of a model that predicts at the
pipeline's size (:class:`~.segmentor.DiffusionSegmentor`: DiffSeg's protocol crops and resizes
image and label together), where mmseg's ``SegVisualizationHook`` draws on the image file at its
own size. ``tools/test.py --show / --show-dir`` puts it in place of mmseg's hook for such models.
"""
from __future__ import annotations

import os.path as osp
from contextlib import contextmanager, nullcontext
from typing import Optional

import cv2
import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.structures import PixelData
from mmseg.registry import HOOKS

from ..apis.visualize import with_unsure
from ..generators.base import IGNORE_INDEX
from ..datasets.unsupervised import center_square
from .segmentor import size_before_resize
from ..evaluation.unsupervised_metric import HungarianMatchedIoU, matched_classes


@contextmanager
def unsure_drawn(visualizer):
    """The visualizer draws 255 (unsure) in its colour, named (:func:`with_unsure`), for the
    ``with`` block; mmseg's leaves it undrawn, which looks like VOC's black background."""
    meta = visualizer.dataset_meta
    visualizer.dataset_meta = with_unsure(meta)
    try:
        yield
    finally:
        visualizer.dataset_meta = meta


def _on_input(sample, image: torch.Tensor):
    """``sample`` with a prediction that matches the model's input: a centre square's (the
    input, before its resize, is the square of the frame's shorter side), put in its whole frame
    without ground truth (``DiffusionSegmentor``, for mmseg's drawing on the image file), cut
    back to that square."""
    pred = sample.pred_sem_seg.data[0]
    before = size_before_resize(sample.metainfo, image.shape[-2:])
    if 'gt_sem_seg' in sample or before == tuple(pred.shape) or \
            before != (min(pred.shape),) * 2:
        return sample
    sample = sample.clone()
    sample.pred_sem_seg = PixelData(data=torch.from_numpy(center_square(pred.numpy()).copy())[None])
    return sample


def _rgb(packed: torch.Tensor) -> np.ndarray:
    """``(H, W, 3)`` RGB uint8 of a packed ``(3, H, W)`` BGR image (``PackSegInputs``)."""
    return np.ascontiguousarray(packed.cpu().flip(0).permute(1, 2, 0).numpy())


def _at_size(rgb: np.ndarray, size) -> np.ndarray:
    """The model's input resized to the prediction's ``(H, W)`` where they differ (a pipeline
    that resizes before ``LoadAnnotations``: DiffusionSegmentor predicts at the ground truth's
    size, the image's own)."""
    if rgb.shape[:2] == tuple(size):
        return rgb
    return cv2.resize(rgb, tuple(size)[::-1], interpolation=cv2.INTER_LINEAR)


@HOOKS.register_module()
class OnlineLabelVisualizationHook(Hook):
    """Draw training images with their (online) labels every ``interval`` iterations.

    Args:
        interval: iterations between pictures (the first one after ``interval`` iterations).
        max_images: images drawn from each drawn batch.
        draw: ``False`` turns the hook off (as mmseg's ``SegVisualizationHook``).
    """

    priority = 'LOW'

    def __init__(self, interval: int = 500, max_images: int = 2, draw: bool = True):
        if interval < 1 or max_images < 1:
            raise ValueError('OnlineLabelVisualizationHook: interval and max_images must be >= 1, '
                             f'got {interval} and {max_images}')
        self.interval, self.max_images, self.draw = int(interval), int(max_images), bool(draw)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs=None) -> None:
        if (not self.draw or data_batch is None or not is_main_process()
                or not self.every_n_train_iters(runner, self.interval)):
            return
        for i, (image, sample) in enumerate(zip(data_batch['inputs'], data_batch['data_samples'])):
            if i == self.max_images:
                break
            if 'gt_sem_seg' not in sample:
                continue
            name = osp.basename(sample.img_path) if 'img_path' in sample else i
            with unsure_drawn(runner.visualizer):
                runner.visualizer.add_datasample(
                    f'online_label_{name}', _rgb(image), sample.cpu(), draw_gt=True,
                    draw_pred=False, step=runner.iter + 1)


@HOOKS.register_module()
class ModelInputVisualizationHook(Hook):
    """Draw test / validation predictions (beside the ground truth, where the sample has one) on
    the image the model was given (resized to the prediction where the pipeline resized it).

    Unsupervised segment ids (a ``HungarianMatchedIoU`` evaluator) are drawn in the colour of the
    class each segment is matched to in its image, as the metric scores it; segments matched to no
    class are left undrawn. Without ground truth, segment ``s`` takes the colour of class
    ``s mod classes``, without names. Files: ``<mode>_<image file name>_<n>.png`` (``n``: the
    picture's number in the run, from 1) with ``LocalVisBackend``; rank 0 draws its share.

    Args:
        draw: ``False`` turns the hook off (as mmseg's ``SegVisualizationHook``).
        interval: draw the images of every ``interval``-th batch.
        show: also show each picture in a window, for ``wait_time`` seconds.
    """

    priority = 'NORMAL'

    def __init__(self, draw: bool = False, interval: int = 1, show: bool = False,
                 wait_time: float = 0.):
        if interval < 1:
            raise ValueError(f'ModelInputVisualizationHook: interval must be >= 1, got {interval}')
        self.draw, self.interval = bool(draw), int(interval)
        self.show, self.wait_time = bool(show), float(wait_time)
        self._drawn = 0

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._draw(runner, batch_idx, data_batch, outputs, 'val')

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._draw(runner, batch_idx, data_batch, outputs, 'test')

    def _draw(self, runner, batch_idx, data_batch, outputs, mode: str) -> None:
        if (not self.draw or data_batch is None or not outputs or not is_main_process()
                or not self.every_n_inner_iters(batch_idx, self.interval)):
            return
        evaluator = runner.test_evaluator if mode == 'test' else runner.val_evaluator
        segments = next((m for m in evaluator.metrics if isinstance(m, HungarianMatchedIoU)), None)
        for image, sample in zip(data_batch['inputs'], outputs):
            self._drawn += 1
            sample = _on_input(sample.cpu(), image)
            if segments is not None:
                sample = self._matched(sample, segments.num_classes, segments.ignore_index)
            elif 'gt_sem_seg' in sample:  # the ground truth's 255 is ignored, not unsure
                sample = sample.clone()
                gt = sample.gt_sem_seg.data.clone()
                gt[gt == IGNORE_INDEX] = IGNORE_INDEX + 1   # past the classes drawn: undrawn
                sample.gt_sem_seg = PixelData(data=gt)
            # class labels: a prediction's 255 (unsure) in its colour; unmatched segments undrawn
            with unsure_drawn(runner.visualizer) if segments is None else nullcontext():
                runner.visualizer.add_datasample(
                    f'{mode}_{osp.basename(sample.img_path)}',
                    _at_size(_rgb(image), tuple(sample.pred_sem_seg.shape)), sample,
                    show=self.show, wait_time=self.wait_time, step=self._drawn,
                    with_labels=segments is None or 'gt_sem_seg' in sample)

    @staticmethod
    def _matched(sample, num_classes: int, ignore_index: int):
        """A copy of ``sample`` whose prediction holds classes instead of segment ids."""
        pred = sample.pred_sem_seg.data[0].numpy()
        if 'gt_sem_seg' in sample:
            pred = matched_classes(sample.gt_sem_seg.data[0].numpy(), pred, num_classes,
                                   ignore_index)
        else:
            pred = np.where(pred == ignore_index, ignore_index, pred % num_classes)
        sample = sample.clone()
        sample.pred_sem_seg = PixelData(data=torch.from_numpy(pred)[None])
        return sample
