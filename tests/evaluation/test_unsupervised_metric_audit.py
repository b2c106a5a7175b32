"""Gaps found by a mutation audit of the Hungarian-matched protocol (unsupervised_metric)."""
import inspect

import numpy as np
import torch
from mmseg.registry import METRICS
from PIL import Image

from mmdiffseg.evaluation import HungarianMatchedIoU, matched_classes


def test_unassigned_pixels_stay_unassigned_when_segment_0_is_matched():
    """An unsure (255) prediction is drawn as 255 even where segment 0, matched to class 0,
    exists: it is not read as segment 0 (hand-matched: 0 -> class 0, 1 -> class 1)."""
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 255, 1, 255]])
    assert matched_classes(gt, pred, num_classes=2).tolist() == [[0, 255, 1, 255]]


def test_format_only_needs_no_ground_truth(tmp_path):
    """format_only (images without ground truth): samples without ``gt_sem_seg`` are written,
    not matched, and nothing is scored."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2,
                                output_dir=str(tmp_path), format_only=True))
    metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor([[[3, 3], [0, 1]]])),
                             img_path='a/b.jpg')])
    assert metric.results == []
    assert np.array(Image.open(tmp_path / 'b.png')).tolist() == [[3, 3], [0, 1]]
    assert metric.compute_metrics(metric.results) == {}


def test_default_class_count_is_the_27_of_both_benchmarks():
    """COCO-Stuff-27 and Cityscapes-27 both score 27 classes: the default."""
    default = inspect.signature(HungarianMatchedIoU).parameters['num_classes'].default
    assert default == 27
    assert HungarianMatchedIoU().num_classes == 27
