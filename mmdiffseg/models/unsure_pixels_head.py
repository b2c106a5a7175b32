"""A Mask2Former head whose mask losses and matching costs leave out the ignore-index pixels.

mmseg's ``Mask2FormerHead`` drops the ignore index (255) from an image's class list, but mmdet's
point losses and matching costs then read a 255 pixel as 0 in every class's mask: a negative for
every query. Generated labels mark the pixels their generator is unsure of as 255 (for a synthetic
ADE20K image, everything outside its one object), so the stock head trains walls, floors and sky
as belonging to no mask. Here such pixels are unknown: the ground-truth masks carry NaN there
(float masks), every point sampled from them is NaN, and the point losses and the assigner's
mask costs drop those points. Nothing of mmdet's loss code is replaced: its losses and assigner
are wrapped.
"""
from __future__ import annotations

import torch
from mmseg.models.decode_heads import Mask2FormerHead
from mmseg.registry import MODELS
from torch import Tensor, nn

UNSURE = float('nan')


class SurePointsLoss(nn.Module):
    """One of Mask2Former's point losses over the sure points only (targets NaN elsewhere).

    ``per_point``: a loss of flat points weighted each (mmdet's sigmoid ``CrossEntropyLoss``):
    unsure points get weight 0 and the average runs over the batch's sure points (the stock head
    averages all of them; a batch with few sure points weighs each more). Otherwise a loss per
    mask of ``(masks, points)`` (mmdet's ``DiceLoss``): unsure points leave its sums (prediction
    and target 0 there) and a mask without a sure point gets weight 0. Targets without NaN
    reach the wrapped loss unchanged.
    """

    def __init__(self, loss: nn.Module, per_point: bool):
        super().__init__()
        self.loss, self.per_point = loss, per_point

    def forward(self, preds: Tensor, targets: Tensor, weight=None, avg_factor=None,
                **kwargs) -> Tensor:
        unsure = torch.isnan(targets)
        if not unsure.any():
            return self.loss(preds, targets, weight=weight, avg_factor=avg_factor, **kwargs)
        if weight is not None:
            raise ValueError('SurePointsLoss: the wrapped loss is called with weights of its '
                             'own; Mask2Former calls its point losses without')
        sure = (~unsure).to(preds.dtype)
        targets = targets.masked_fill(unsure, 0.0)
        if self.per_point:
            return self.loss(preds, targets, weight=sure, avg_factor=avg_factor * sure.mean(),
                             **kwargs)
        # a logit of -inf is a probability of 0 (DiceLoss with activate=False takes probabilities)
        off = float('-inf') if getattr(self.loss, 'activate', True) else 0.0
        return self.loss(preds.masked_fill(unsure, off), targets, weight=sure.amax(1),
                         avg_factor=avg_factor, **kwargs)


class SurePointsAssigner:
    """The Hungarian assigner comparing masks on the sampled points that are sure in the image.

    mmdet samples the same points of every ground-truth mask of an image, and the unsure pixels
    are the image's, so a point is unsure in all of its masks or in none. Where no point is sure,
    every pair gets the same mask costs (one point, 0 against 0) and the class cost decides.
    """

    def __init__(self, assigner):
        self.assigner = assigner

    def assign(self, pred_instances, gt_instances, **kwargs):
        masks = gt_instances.masks  # (num_gts, num_points)
        unsure = torch.isnan(masks).any(0)
        if unsure.any():
            pred_instances, gt_instances = pred_instances.clone(), gt_instances.clone()
            if unsure.all():
                pred_instances.masks = pred_instances.masks.new_zeros(len(pred_instances), 1)
                gt_instances.masks = masks.new_zeros(len(masks), 1)
            else:
                pred_instances.masks = pred_instances.masks[:, ~unsure]
                gt_instances.masks = masks[:, ~unsure]
        return self.assigner.assign(pred_instances=pred_instances, gt_instances=gt_instances,
                                    **kwargs)


@MODELS.register_module()
class UnsurePixelsIgnoredMask2FormerHead(Mask2FormerHead):
    """mmseg's Mask2Former head whose mask (BCE) and dice losses and Hungarian mask costs leave
    out the ``ignore_index`` pixels instead of counting them as negatives for every query.

    Mask2Former (Cheng et al., CVPR 2022, sec. 3.2 and 4) trains each matched mask on K points
    (0.75 K of them the most uncertain of 3 K uniform candidates, 0.25 K uniform) and matches on K
    uniform points. The points are drawn as the stock head draws them; a point whose bilinear
    sample of the ground truth touches an ignore pixel is dropped from both losses (the BCE averages
    the sure points) and from the matching costs, so a mask logit on an ignore pixel gets no
    gradient. The classification loss and inference are the stock head's, and a batch without
    ignore pixels gets the stock losses exactly. Dropped points are not redrawn: an image that is
    mostly ignore pixels trains its masks on fewer points.

    Args: those of mmseg's ``Mask2FormerHead`` (``ignore_index``: the unsure pixels, 255).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loss_mask = SurePointsLoss(self.loss_mask, per_point=True)
        self.loss_dice = SurePointsLoss(self.loss_dice, per_point=False)
        if hasattr(self, 'assigner'):  # built with a train_cfg
            self.assigner = SurePointsAssigner(self.assigner)

    def _seg_data_to_instance_data(self, batch_data_samples):
        """The stock instances; an image with ignore pixels gets float masks, NaN there."""
        batch_gt_instances, batch_img_metas = super()._seg_data_to_instance_data(
            batch_data_samples)
        for gt_instances, data_sample in zip(batch_gt_instances, batch_data_samples):
            unsure = data_sample.gt_sem_seg.data == self.ignore_index  # (1, H, W)
            if unsure.any():
                gt_instances.masks = gt_instances.masks.float().masked_fill(unsure, UNSURE)
        return batch_gt_instances, batch_img_metas
