"""Score a folder of label PNGs against ground truth.

Class labels: mmseg's IoU (:class:`~mmdiffseg.evaluation.PseudoLabelMetric`, unsure 255 counts as
a miss) -> per-class IoU, mIoU, aAcc and coverage (share of pixels given a class). Unlabelled
segments (DiffSeg): per-image Hungarian matching (:func:`~mmdiffseg.evaluation.match_segments`)
-> per-class IoU, mIoU and ACC.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from mmseg.evaluation import IoUMetric

from ..datasets.generated import read_manifest_header
from ..evaluation import PseudoLabelMetric, match_segments
from .folders import IGNORE_INDEX, MASK_DIR, read_label_png
from .io import UserInputError


def label_files(folder) -> Dict[str, Path]:
    """id -> label PNG of a tool's output folder (``SegmentationClass/``) or a plain folder."""
    folder = Path(folder)
    if (folder / MASK_DIR).is_dir():
        folder = folder / MASK_DIR
    if not folder.is_dir():
        raise UserInputError(f'label folder {folder} not found')
    files = {p.stem: p for p in sorted(folder.glob('*.png'))}
    if not files:
        raise UserInputError(f'no label PNGs in {folder}')
    return files


def check_label_classes(labels_dir, classes: Sequence[str]) -> None:
    """Refuse class labels whose folder's manifest says they index other classes than
    ``classes`` (or are unlabelled segment ids); a folder without a manifest is not checked."""
    folder = Path(labels_dir)
    try:
        header = read_manifest_header(folder) or read_manifest_header(folder.parent)
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    if header is None or 'classes' not in header:
        return
    if header['classes'] is None:
        raise UserInputError(f'the labels in {folder} are unlabelled segment ids (made without '
                             'class names): score them with --hungarian')
    if list(header['classes']) != list(classes):
        raise UserInputError(
            f'the labels in {folder} index the classes {header["classes"]} (their manifest), '
            f'but the ground truth is scored as {list(classes)} (--classes): the scores would '
            'compare unrelated indices. Pass --classes with the labels\' classes (in their order) '
            'and ground truth in that order, or regenerate the labels with the ground truth\'s '
            'classes')


def _pairs(labels_dir, gt_dir, gt_suffix: str):
    labels = label_files(labels_dir)
    gt_dir = Path(gt_dir)
    missing = [i for i in labels if not (gt_dir / f'{i}{gt_suffix}').is_file()]
    if missing:
        raise UserInputError(f'no ground truth in {gt_dir} for {len(missing)} label(s), e.g. '
                             f'{missing[:5]}')
    for item_id, path in labels.items():
        pred, gt = read_label_png(path), read_label_png(gt_dir / f'{item_id}{gt_suffix}')
        if pred.shape != gt.shape:
            raise UserInputError(f'{path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth '
                                 f'is {gt.shape[1]}x{gt.shape[0]}')
        yield item_id, pred, gt


def evaluate_labels(labels_dir, gt_dir, classes: Sequence[str], gt_suffix: str = '.png') -> Dict:
    """Per-class IoU (%), mIoU, aAcc and coverage of class labels (255 = unsure); NaN for a
    class absent from labels and ground truth.

    Raises:
        UserInputError: the folder's manifest names other classes (:func:`check_label_classes`).
    """
    check_label_classes(labels_dir, classes)
    metric = PseudoLabelMetric(ignore_index=IGNORE_INDEX)
    metric.dataset_meta = dict(classes=list(classes))
    count = 0
    for _, pred, gt in _pairs(labels_dir, gt_dir, gt_suffix):
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.from_numpy(pred).long()),
                                 gt_sem_seg=dict(data=torch.from_numpy(gt).long()))])
        count += 1
    areas = [sum(r[k] for r in metric.results) for k in range(4)]  # summed torch histograms
    per_class = IoUMetric.total_area_to_metrics(*areas, metrics=['mIoU'])['IoU']
    covered = sum(r[4] for r in metric.results)
    total = sum(r[5] for r in metric.results)
    return dict(images=count, per_class_iou=_per_class(classes, per_class),
                mIoU=_pct(np.nanmean(per_class)),
                aAcc=_pct(float(areas[0].sum()) / max(float(areas[3].sum()), 1.0)),
                coverage=_pct(covered / max(total, 1)))


def evaluate_segments(labels_dir, gt_dir, classes: Sequence[str], gt_suffix: str = '.png') -> Dict:
    """Hungarian-matched per-class IoU (%), mIoU and ACC of unlabelled segment ids."""
    totals, count = np.zeros((3, len(classes)), dtype=np.int64), 0
    for _, pred, gt in _pairs(labels_dir, gt_dir, gt_suffix):
        totals += match_segments(gt, pred, len(classes), IGNORE_INDEX)
        count += 1
    tp, fp, fn = totals.astype(np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = tp / (tp + fp + fn)
    return dict(images=count, per_class_iou=_per_class(classes, iou), mIoU=_pct(np.nanmean(iou)),
                ACC=_pct(tp.sum() / max((tp + fn).sum(), 1)))


def _pct(value) -> float:
    return round(100.0 * float(value), 2) if np.isfinite(value) else float('nan')


def _per_class(classes: Sequence[str], iou: np.ndarray) -> Dict[str, float]:
    return {name: _pct(v) for name, v in zip(classes, iou)}


def report_json(report: Dict) -> str:
    """The report as strict JSON (RFC 8259 has no NaN): an undefined IoU is ``null``."""
    def strict(value):
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        return None if isinstance(value, float) and not math.isfinite(value) else value
    return json.dumps(strict(report), indent=1, allow_nan=False)


def format_report(report: Dict) -> str:
    """The report as a Markdown table (classes absent from labels and ground truth: n/a)."""
    lines = ['| class | IoU (%) |', '|---|---:|']
    lines += [f'| {name} | {"n/a" if np.isnan(v) else f"{v:.2f}"} |'
              for name, v in report['per_class_iou'].items()]
    summary: List[str] = [f'images: {report["images"]}']
    summary += [f'{k}: {report[k]:.2f}' for k in ('mIoU', 'aAcc', 'ACC', 'coverage') if k in report]
    return '\n'.join(lines) + '\n\n' + ', '.join(summary)
