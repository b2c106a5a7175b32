"""DiffSeg's unsupervised protocol: per-image Hungarian matching of segments to classes.

Per image, the confusion between the ground-truth classes (rows, ``num_classes``) and the
predicted segment ids (columns: the ids themselves, ``max(num_classes, largest id + 1)`` of them,
the largest id taken over the whole image) over labelled pixels is matched with
``scipy.optimize.linear_sum_assignment(maximize=True)``, as the released ``_fast_hist`` /
``hungarian_matching`` (google/diffseg ``diffseg/utils.py``) lay it out. The layout matters: the
absent classes' rows take the columns left over, with zero gain, so which segment an absent class
takes (and is charged as FP) depends on the ids: DiffSeg's ids are its winning proposals' indices,
which may skip proposals that win no pixel. A matched pair (class c, segment s) gives c
``TP = conf[c, s]``, ``FP = (pixels of s) - TP`` and ``FN = (pixels of c) - TP``, so pixels of
unmatched segments (and unsure 255 predictions) are FN of their ground-truth class. TP/FP/FN are
summed over the dataset: ``ACC = sum TP / labelled pixels``,
``mIoU = nanmean(TP / (TP + FP + FN))`` (the PiCIE protocol DiffSeg's released benchmark follows).
"""
from __future__ import annotations

import json
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmengine.utils import mkdir_or_exist
from mmseg.registry import METRICS
from PIL import Image
from prettytable import PrettyTable
from scipy.optimize import linear_sum_assignment

#: the largest segment id scored: the confusion has a column per id up to the largest (released
#: layout), so an id of 2**40 would ask for terabytes; 16-bit label maps fit
MAX_SEGMENT_ID = 2 ** 16 - 1


def _matching(gt: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int):
    """Labelled pixels' classes, the confusion of the classes with the segment ids
    ``(num_classes, max(num_classes, largest id + 1))`` and the matched ``(classes, ids)``."""
    pred = pred.astype(np.int64)
    ids = pred[pred != ignore_index]
    if ids.size and ids.min() < 0:
        raise ValueError(f'segment ids must be non-negative, got {ids.min()}')
    if ids.size and ids.max() > MAX_SEGMENT_ID:
        raise ValueError(f'segment ids up to {MAX_SEGMENT_ID} are scored (a confusion column per '
                         f'id, as released), got {ids.max()}: renumber the segments first '
                         '(np.unique(pred, return_inverse=True) keeps their order)')
    width = max(num_classes, int(ids.max()) + 1 if ids.size else 0)
    labelled = gt != ignore_index
    gt, pred = gt[labelled].astype(np.int64), pred[labelled]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        values = np.unique(gt)
        bad = values[(values < 0) | (values >= num_classes)].tolist()
        raise ValueError(f'ground truth holds values outside 0..{num_classes - 1} (and '
                         f"{ignore_index}): {bad}; the dataset's label files and classes "
                         'disagree (check its label_map / reduce_zero_label)')
    assigned = pred != ignore_index
    confusion = np.bincount(gt[assigned] * width + pred[assigned],
                            minlength=num_classes * width).reshape(num_classes, width)
    rows, cols = linear_sum_assignment(confusion, maximize=True)
    return gt, confusion, rows, cols


def match_segments(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                   ignore_index: int = 255) -> np.ndarray:
    """TP, FP, FN per class ``(3, num_classes)`` for one image (see the module docstring)."""
    gt, confusion, rows, cols = _matching(gt, pred, num_classes, ignore_index)
    tp = np.zeros(num_classes, dtype=np.int64)
    fp = np.zeros(num_classes, dtype=np.int64)
    tp[rows] = confusion[rows, cols]
    fp[rows] = confusion[:, cols].sum(axis=0) - tp[rows]
    fn = np.bincount(gt, minlength=num_classes) - tp
    return np.stack([tp, fp, fn])


def matched_scores(totals: np.ndarray):
    """Per-class IoU and the ACC of summed ``(tp, fp, fn)`` counts (:func:`match_segments`'s rows):
    NaN for a class without any pixel, and ACC NaN where no pixel is labelled (0 / 0, as
    mmseg's ``IoUMetric``), without numpy's warnings."""
    tp, fp, fn = np.asarray(totals, dtype=np.float64)
    with np.errstate(invalid='ignore', divide='ignore'):
        return tp / (tp + fp + fn), tp / (tp + fn), tp.sum() / (tp + fn).sum()


def defined_mean(values) -> float:
    """The mean over the values that are not NaN; NaN (no warning) where none is."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float('nan')


def matched_classes(gt: np.ndarray, pred: np.ndarray, num_classes: int,
                    ignore_index: int = 255) -> np.ndarray:
    """``pred`` with each segment replaced by the class it is matched to in this image (the
    matching :func:`match_segments` scores); segments matched to no class, or seen only on
    unlabelled pixels, become ``ignore_index``."""
    _, confusion, rows, cols = _matching(gt, pred, num_classes, ignore_index)
    seen = confusion[:, cols].sum(0) > 0  # ids of no labelled pixel (or padding) take no class
    classes = np.full(confusion.shape[1], ignore_index, dtype=np.int64)
    classes[cols[seen]] = rows[seen]
    assigned = pred != ignore_index
    out = np.full(pred.shape, ignore_index, dtype=np.int64)
    out[assigned] = classes[pred[assigned].astype(np.int64)]
    return out


#: the ``tool`` of the manifest of a folder of segment-id predictions (``output_dir``)
SEGMENT_IDS_TOOL = 'HungarianMatchedIoU'


def forget_segment_ids(folder: str) -> None:
    """Remove the segment-id manifest of ``folder`` (another metric writes class labels into it
    now: the manifest would call them segment ids)."""
    from ..datasets.generated import read_manifest_header
    try:
        header = read_manifest_header(Path(folder))
    except ValueError:   # not a manifest of ours
        return
    if isinstance(header, dict) and header.get('tool') == SEGMENT_IDS_TOOL:
        Path(folder, 'manifest.json').unlink(missing_ok=True)   # (or another rank's, gone)


@METRICS.register_module()
class HungarianMatchedIoU(BaseMetric):
    """ACC and mIoU of unlabelled segments after per-image Hungarian matching (COCO-Stuff-27,
    Cityscapes-27).

    ``pred_sem_seg`` holds segment ids (integers 0 to :data:`MAX_SEGMENT_ID`, 255 = unassigned),
    ``gt_sem_seg`` the class indices.

    Args:
        num_classes: number of ground-truth classes (27 for both benchmarks); None: the
            dataset's (as mmseg's ``IoUMetric``), and a number the dataset's differs from is
            refused (the per-class line would be cut short and the mIoU taken over classes the
            dataset lacks).
        ignore_index: unlabelled ground truth / unassigned prediction.
        output_dir: folder for the predictions, ``<image name>.png`` holding the segment ids at
            the evaluated size (``tools/test.py --out``), as mmseg's ``IoUMetric`` writes them,
            and a ``manifest.json`` saying they are segment ids (``classes: null``), so that
            ``tools/eval_labels.py`` and the generated-label datasets refuse them as classes.
        format_only: only write the predictions (images without ground truth), no scores.
    """

    default_prefix = None

    def __init__(self, num_classes: Optional[int] = None, ignore_index: int = 255,
                 output_dir: Optional[str] = None, format_only: bool = False, **kwargs):
        super().__init__(**kwargs)
        self._num_classes = num_classes
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        if output_dir:  # every rank writes its share of the images, and the same header
            from ..apis.io import atomic_write
            from ..apis.manifest import MANIFEST_VERSION
            mkdir_or_exist(output_dir)
            header = dict(manifest='mmdiffseg', version=MANIFEST_VERSION, classes=None,
                          tool=SEGMENT_IDS_TOOL)
            atomic_write(osp.join(output_dir, 'manifest.json'),
                         json.dumps(header, sort_keys=True).encode())
        self.format_only = format_only

    @property
    def num_classes(self) -> int:
        """``num_classes``, else the dataset's class count."""
        classes = (self.dataset_meta or {}).get('classes')
        if classes is not None and self._num_classes not in (None, len(classes)):
            raise ValueError(f'HungarianMatchedIoU(num_classes={self._num_classes}), but the '
                             f'dataset has {len(classes)} classes: set num_classes='
                             f'{len(classes)}, or leave it out to take the dataset\'s')
        if classes is None and self._num_classes is None:
            raise ValueError('HungarianMatchedIoU: no num_classes and no dataset classes to take '
                             'it from: set num_classes (27 for COCO-Stuff-27 and Cityscapes-27)')
        return len(classes) if classes is not None else self._num_classes

    def process(self, data_batch: dict, data_samples: Sequence[dict]) -> None:
        num_classes = None if self.format_only else self.num_classes
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze().cpu().numpy()
            if self.output_dir is not None:
                self.save_prediction(pred, sample['img_path'])
            if self.format_only:
                continue
            if 'gt_sem_seg' not in sample:
                raise ValueError(
                    f'HungarianMatchedIoU: {sample.get("img_path")} has no ground truth to match '
                    'segments against (no LoadAnnotations in the test pipeline): for predictions '
                    'only, test_evaluator.format_only=True with --out DIR (or output_dir); to '
                    'score, add LoadAnnotations')
            gt = sample['gt_sem_seg']['data'].squeeze().cpu().numpy()
            if pred.shape != gt.shape:
                raise ValueError(f'HungarianMatchedIoU: prediction {pred.shape} and ground truth '
                                 f'{gt.shape} differ in size ({sample.get("img_path")})')
            try:
                self.results.append(match_segments(gt, pred, num_classes, self.ignore_index))
            except ValueError as err:
                raise ValueError(f'HungarianMatchedIoU: {sample.get("img_path")}: {err}') from err

    def save_prediction(self, pred: np.ndarray, img_path: str) -> None:
        if pred.max(initial=0) > 255:
            raise ValueError(f'HungarianMatchedIoU: segment ids up to {pred.max()} do not fit the '
                             f'8-bit PNGs of output_dir ({img_path})')
        name = osp.splitext(osp.basename(img_path))[0]
        Image.fromarray(pred.astype(np.uint8)).save(osp.join(self.output_dir, f'{name}.png'))

    def compute_metrics(self, results: List[np.ndarray]) -> Dict[str, float]:
        if self.format_only:
            print_log(f'predictions are saved to {self.output_dir}', logger='current')
            return {}
        iou, accs, acc = matched_scores(np.sum(results, axis=0))
        classes = self.dataset_meta.get('classes') if self.dataset_meta else None
        table = PrettyTable(['Class', 'IoU', 'Acc'])
        for name, value, class_acc in zip(classes or range(len(iou)), iou, accs):
            table.add_row([name, f'{100 * value:.2f}', f'{100 * class_acc:.2f}'])
        print_log('per-class results (Hungarian-matched):\n' + table.get_string(),
                  logger='current')
        return {'ACC': round(100 * float(acc), 2), 'mIoU': round(100 * defined_mean(iou), 2)}
