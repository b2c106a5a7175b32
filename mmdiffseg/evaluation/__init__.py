"""Metrics for generated labels and unsupervised segments (registered in mmseg ``METRICS``)."""
from .pseudo_label_metric import PseudoLabelMetric
from .unsupervised_metric import (HungarianMatchedIoU, defined_mean, match_segments,
                                  matched_classes, matched_scores)

__all__ = ['PseudoLabelMetric', 'HungarianMatchedIoU', 'match_segments', 'matched_classes',
           'matched_scores', 'defined_mean']
