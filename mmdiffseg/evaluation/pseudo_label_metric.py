"""Quality of generated labels against ground truth: mmseg's IoU plus coverage."""
from __future__ import annotations

from typing import Dict, List, Sequence

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
