"""Quality of generated labels against ground truth: mmseg's IoU plus coverage."""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS


@METRICS.register_module()
class PseudoLabelMetric(IoUMetric):
    """``IoUMetric`` for labels that may leave pixels unsure (255), plus ``coverage``: the share
    of pixels (in %) that received a class.

    ``pred_sem_seg`` holds the generated labels. Unsure pixels never count as a correct
    prediction: where the ground truth has a class they lower that class's IoU, as a missed pixel
    does. Arguments: :class:`mmseg.evaluation.IoUMetric`.
    """

    @staticmethod
    def intersect_and_union(pred_label: torch.Tensor, label: torch.Tensor, num_classes: int,
                            ignore_index: int):
        """mmseg's areas (intersection, union, prediction, ground truth per class), counted over
        the values in ``[0, num_classes)`` only: mmseg's ``histc`` over ``[0, num_classes - 1]``
        takes its range from the data when that range is one value, so with one class it
        counted unsure (255) pixels as predictions of it (IoU 33 where 50 is right)."""
        mask = label != ignore_index
        pred_label, label = pred_label[mask].long(), label[mask].long()

        def area(values: torch.Tensor) -> torch.Tensor:
            values = values[(values >= 0) & (values < num_classes)]
            return torch.bincount(values, minlength=num_classes).float().cpu()
        area_intersect = area(pred_label[pred_label == label])
        area_pred_label, area_label = area(pred_label), area(label)
        return (area_intersect, area_pred_label + area_label - area_intersect, area_pred_label,
                area_label)

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        start = len(self.results)
        super().process(data_batch, data_samples)
        if self.format_only:
            return
        for i, sample in enumerate(data_samples):
            pred = sample['pred_sem_seg']['data']
            covered = int((pred != self.ignore_index).sum())
            self.results[start + i] = tuple(self.results[start + i]) + (covered, pred.numel())

    def compute_metrics(self, results: List[tuple]) -> Dict[str, float]:
        if self.format_only:  # labels written, nothing counted: no scores (no coverage of 0)
            return super().compute_metrics(results)
        covered = sum(r[4] for r in results)
        total = sum(r[5] for r in results)
        metrics = super().compute_metrics([r[:4] for r in results])
        metrics['coverage'] = round(100.0 * covered / max(total, 1), 2)
        return metrics
