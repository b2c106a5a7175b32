"""``OnlineLabelVisualizationHook``: pictures of the labels a training run learns from.

Every ``interval`` training iterations, the first ``max_images`` images of the batch are drawn
with their training labels (made online by :class:`~.preprocessor.DiffusionLabelPreprocessor` or
read from its cache, after the pipeline's augmentations: what the model is fitted to) by the
runner's visualizer (mmseg's ``SegLocalVisualizer``), so they land wherever its ``vis_backends``
write: ``<work_dir>/<timestamp>/vis_data/vis_image/online_label_<i>_<iter>.png`` with
``LocalVisBackend``, TensorBoard or W&B with theirs. Rank 0 only.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS


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
            rgb = np.ascontiguousarray(image.cpu().flip(0).permute(1, 2, 0).numpy())  # from BGR
            runner.visualizer.add_datasample(f'online_label_{i}', rgb, sample.cpu(),
                                             draw_gt=True, draw_pred=False, step=runner.iter + 1)
