"""Score a folder of label PNGs against ground truth.

Class labels: mmseg's IoU (:class:`~mmdiffseg.evaluation.PseudoLabelMetric`, unsure 255 counts as
a miss) -> per-class IoU, mIoU, aAcc and coverage (share of pixels given a class). Unlabelled
segments (DiffSeg): per-image Hungarian matching (:func:`~mmdiffseg.evaluation.match_segments`)
-> per-class IoU, mIoU and ACC. Ground truth is read as the class set's mmseg dataset reads it
(:class:`GroundTruthFormat`: file suffix, ``reduce_zero_label``, label map).
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.logging import print_log
from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset
from mmseg.evaluation import IoUMetric
from PIL import Image, UnidentifiedImageError

from ..class_defaults import init_defaults
from ..datasets.generated import read_manifest_header
from ..datasets.transforms import read_label_map
from ..datasets.unsupervised import (Cityscapes27Dataset, CityscapesHumanVehicleDataset,
                                     COCOStuff27Dataset)
from ..evaluation import PseudoLabelMetric, match_segments
from .folders import IGNORE_INDEX, MASK_DIR, TOO_LARGE
from .io import UserInputError

#: the mmseg dataset whose ground-truth files each class set of ``--classes`` names
CLASS_SET_DATASETS = {
    'voc': PascalVOCDataset, 'cityscapes': CityscapesDataset, 'ade20k': ADE20KDataset,
    'cityscapes27': Cityscapes27Dataset, 'cityscapes_human_vehicle': CityscapesHumanVehicleDataset,
    'cocostuff27': COCOStuff27Dataset}


def stem_suffix(img_suffix: Optional[str]) -> str:
    """The part of an mmseg ``img_suffix`` left in an image's stem (``_leftImg8bit.png`` ->
    ``_leftImg8bit``, ``.jpg`` -> ``''``)."""
    img_suffix = img_suffix or ''
    return img_suffix[:img_suffix.rfind('.')] if '.' in img_suffix else img_suffix


@dataclass(frozen=True)
class GroundTruthFormat:
    """How ground-truth PNGs hold the classes, as an mmseg dataset reads them.

    Args:
        seg_map_suffix: ground-truth file = ``<id><seg_map_suffix>``.
        id_suffix: the end of an image's stem that its ground truth's name lacks (Cityscapes'
            ``_leftImg8bit``), removed from a label's id when no file matches the whole id.
        reduce_zero_label: value 0 is "other" (ignored) and ``k`` is class ``k - 1`` (ADE20K).
        label_map: file value -> class index, applied after ``reduce_zero_label``.
        fine_labels: COCO-Stuff's own label maps, read through its fine-to-27 ``label_map``
            (``COCOStuff27Dataset(fine_labels=True)``); ``None``: the dataset has no such setting.
    """

    seg_map_suffix: str = '.png'
    id_suffix: str = ''
    reduce_zero_label: bool = False
    label_map: Optional[Dict[int, int]] = None
    fine_labels: Optional[bool] = None

    @classmethod
    def of_dataset(cls, dataset, **settings) -> 'GroundTruthFormat':
        """The settings of an mmseg dataset, or the defaults of a dataset class (its
        ``__init__``'s updated with ``settings``, and the ``get_label_map`` of an instance holding
        them, as ``COCOStuff27Dataset``'s reads its ``fine_labels``: VOC's cannot be built without
        its split file)."""
        dataset_cls = dataset if isinstance(dataset, type) else type(dataset)
        defaults = init_defaults(dataset_cls)
        if isinstance(dataset, type):
            defaults.update(settings)
            unbuilt = dataset.__new__(dataset)
            unbuilt.__dict__.update(defaults)
            setting, label_map = defaults.get, unbuilt.get_label_map(None)
        else:
            setting, label_map = partial(getattr, dataset), dataset.label_map
        return cls(seg_map_suffix=setting('seg_map_suffix') or '.png',
                   id_suffix=stem_suffix(setting('img_suffix')),
                   reduce_zero_label=bool(setting('reduce_zero_label')),
                   label_map=label_map or None,
                   fine_labels=bool(setting('fine_labels')) if 'fine_labels' in defaults else None)

    @classmethod
    def of_class_set(cls, name: Optional[str], seg_map_suffix: Optional[str] = None,
                     reduce_zero_label: Optional[bool] = None,
                     fine_labels: bool = False) -> 'GroundTruthFormat':
        """The format of the dataset of class set ``name`` (:data:`CLASS_SET_DATASETS`; another
        name or ``None``: plain PNGs of class indices), with the given settings overriding it;
        ``fine_labels``: COCO-Stuff's own label maps (``cocostuff27`` only)."""
        dataset_cls = CLASS_SET_DATASETS.get(name) if name else None
        if fine_labels and 'fine_labels' not in init_defaults(dataset_cls or object):
            raise UserInputError(f'--fine-labels reads COCO-Stuff\'s own label maps into its 27 '
                                 f'classes: it needs --classes cocostuff27, not {name}')
        settings = dict(fine_labels=True) if fine_labels else {}
        fmt = cls.of_dataset(dataset_cls, **settings) if dataset_cls is not None else cls()
        return fmt.with_options(seg_map_suffix, reduce_zero_label)

    def with_options(self, seg_map_suffix: Optional[str] = None,
                     reduce_zero_label: Optional[bool] = None) -> 'GroundTruthFormat':
        """This format with the settings that are not ``None`` replaced."""
        changes = dict(seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label)
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def read(self, path, classes: Sequence[str]) -> np.ndarray:
        """A ground-truth PNG as class indices (255 = ignore), as mmseg's ``LoadAnnotations``
        reads it; values outside ``classes`` (a wrong convention) are refused."""
        label = read_label_map_file(path, 'ground truth', self.reduce_zero_label, self.label_map)
        bad = _outside(label, len(classes))
        if bad:
            raise UserInputError(
                f'ground truth {path} holds values {bad} outside the {len(classes)} classes '
                f'(0..{len(classes) - 1}, 255 = ignore; read with reduce_zero_label='
                f'{self.reduce_zero_label}): {self._hint(bad, len(classes))}')
        return label

    def _hint(self, bad: List[int], count: int) -> str:
        if self.fine_labels is False:
            return ('COCO-Stuff\'s own label maps (stuffthingmaps_trainval2017: fine class id - '
                    '1) need --fine-labels, which maps them to the 27 classes')
        if 'labelIds' in self.seg_map_suffix and not self.label_map:
            return ('Cityscapes labelIds are not train ids: score against '
                    '*_gtFine_labelTrainIds.png (--gt-suffix _gtFine_labelTrainIds.png; mmseg\'s '
                    'tools/dataset_converters/cityscapes.py writes them), or use --classes '
                    'cityscapes27 for the 27 labelId classes')
        if not self.reduce_zero_label and max(bad) == count:
            return ('annotations whose 0 means "other" and k class k-1 (ADE20K) need '
                    '--reduce-zero-label')
        return ('wrong --classes for this ground truth, or a convention to set: '
                '--reduce-zero-label for annotations whose 0 is "other" (ADE20K), '
                '*_gtFine_labelTrainIds.png (--gt-suffix) for Cityscapes\' 19 classes')


def _outside(label: np.ndarray, count: int) -> List[int]:
    values = np.unique(label)
    return [int(v) for v in values if v >= count and v != IGNORE_INDEX][:10]


def read_label_map_file(path, what: str = 'label', reduce_zero_label: bool = False,
                        label_map: Optional[Dict[int, int]] = None) -> np.ndarray:
    """A class-index PNG read as mmseg's ``LoadAnnotations`` reads it
    (:func:`~mmdiffseg.datasets.transforms.read_label_map`); an unreadable, damaged or colour
    file is a :class:`UserInputError` naming it and the fix."""
    try:
        return read_label_map(str(path), reduce_zero_label, label_map)
    except ValueError as exc:  # label_indices' refusal: colour image or values over 255
        raise UserInputError(
            f'{what} {path} is not a label map ({exc}): {what} files must be palette or grey '
            'PNGs of class indices (e.g. VOC\'s SegmentationClass, ADE20K\'s annotations, '
            'Cityscapes\' *_gtFine_labelTrainIds.png), not colour images') from exc
    except Image.DecompressionBombError as exc:
        raise UserInputError(f'cannot read {what} {path}: {TOO_LARGE}') from exc
    except UnidentifiedImageError as exc:  # its message names a BytesIO, not the file
        raise UserInputError(f'cannot read {what} {path} (not an image Pillow can identify): '
                             'the file is damaged or not a PNG; replace it or remove it') from exc
    except (OSError, SyntaxError) as exc:
        raise UserInputError(f'cannot read {what} {path} ({type(exc).__name__}: {exc}): the file '
                             'is damaged or not a PNG; replace it or remove it') from exc


def find_ground_truth(ids: Iterable[str], gt_dir, gt_format: GroundTruthFormat,
                      option: str = '--gt', what: str = 'label(s)') -> Dict[str, Path]:
    """id -> ground-truth file ``<id><suffix>`` (or the id less ``id_suffix``), in ``gt_dir`` or,
    for files not found there, its sub-folders (Cityscapes' ``gtFine/val/<city>/``).

    Raises:
        UserInputError: a missing folder, an id without ground truth, or two files of one id.
    """
    gt_dir, suffix = Path(gt_dir), gt_format.seg_map_suffix
    if not gt_dir.is_dir():
        raise UserInputError(f'ground-truth folder {gt_dir} ({option}) not found')
    ids = list(ids)

    def keys(item_id: str) -> List[str]:
        short = gt_format.id_suffix
        return [item_id] + ([item_id[:-len(short)]] if short and item_id.endswith(short) else [])

    found: Dict[str, Path] = {}
    for item_id in ids:
        path = next((gt_dir / f'{k}{suffix}' for k in keys(item_id)
                     if (gt_dir / f'{k}{suffix}').is_file()), None)
        if path is not None:
            found[item_id] = path
    if len(found) < len(ids):
        nested: Dict[str, Path] = {}
        for path in sorted(gt_dir.rglob(f'*{suffix}')):
            key = path.name[:-len(suffix)]
            if key in nested:
                raise UserInputError(f'two ground-truth files named {path.name} under {gt_dir}: '
                                     f'{nested[key]} and {path}; pass the folder of one split '
                                     f'as {option}')
            nested[key] = path
        for item_id in ids:
            if item_id not in found:
                path = next((nested[k] for k in keys(item_id) if k in nested), None)
                if path is not None:
                    found[item_id] = path
    missing = [i for i in ids if i not in found]
    if missing:
        example = keys(missing[0])[-1] + suffix
        raise UserInputError(
            f'no ground truth for {len(missing)} {what}, e.g. {missing[:5]}: looked in {gt_dir} '
            f'({option}) and its sub-folders for files such as {example!r}. Pass the '
            'ground-truth folder, and --gt-suffix with the end of its file names (e.g. '
            '_gtFine_labelTrainIds.png for Cityscapes)')
    return found


def label_files(folder) -> Dict[str, Path]:
    """id -> label PNG of a tool's output folder (``SegmentationClass/``) or a plain folder
    (``.png`` in any case; hidden files, such as macOS's ``._x.png``, left out)."""
    folder = Path(folder)
    if (folder / MASK_DIR).is_dir():
        folder = folder / MASK_DIR
    if not folder.is_dir():
        raise UserInputError(f'label folder {folder} not found')
    files = {p.stem: p for p in sorted(folder.iterdir())
             if p.suffix.lower() == '.png' and not p.name.startswith('.') and p.is_file()}
    if not files:
        raise UserInputError(f'no label PNGs in {folder}')
    return files


def check_label_classes(labels_dir, classes: Sequence[str],
                        reduce_zero_label: bool = False) -> bool:
    """Refuse class labels whose folder's manifest says they index other classes than
    ``classes`` (or are unlabelled segment ids), or that are to be read in the
    ``reduce_zero_label`` convention although a tool wrote them as class indices; a folder
    without a manifest is not checked. Returns whether the folder has a manifest."""
    folder = Path(labels_dir)
    try:
        header = read_manifest_header(folder) or read_manifest_header(folder.parent)
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc
    if header is None or 'classes' not in header:
        return header is not None
    if reduce_zero_label:
        raise UserInputError(f'the labels in {folder} were written by {header.get("tool", "a tool")}'
                             ' as class indices (their manifest): leave out '
                             '--labels-reduce-zero-label')
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
    return True


def _pairs(labels_dir, gt_dir, classes: Sequence[str], gt_format: GroundTruthFormat,
           check_labels: bool, labels_reduce_zero_label: bool = False):
    labels = label_files(labels_dir)
    gt_paths = find_ground_truth(labels, gt_dir, gt_format)
    for item_id, path in labels.items():
        if os.path.samefile(path, gt_paths[item_id]):  # the ground truth scored against itself
            gt = gt_format.read(path, classes)
            yield item_id, gt, gt
            continue
        pred = read_label_map_file(path, reduce_zero_label=labels_reduce_zero_label)
        bad = _outside(pred, len(classes)) if check_labels else []
        if bad:
            raise UserInputError(
                f'{path} holds label values {bad} outside the {len(classes)} classes of --classes '
                '(255 = unsure): pass the classes the labels index, or --hungarian for '
                'unlabelled segment ids' + (
                    '; labels are read as class indices 0..N-1: labels in the ground truth\'s '
                    'reduce_zero_label convention (0 = other, k = class k-1; tools/test.py --out '
                    'writes ADE20K predictions so) need --labels-reduce-zero-label'
                    if gt_format.reduce_zero_label and not labels_reduce_zero_label else ''))
        gt = gt_format.read(gt_paths[item_id], classes)
        if pred.shape != gt.shape:
            raise UserInputError(f'{path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth '
                                 f'{gt_paths[item_id]} is {gt.shape[1]}x{gt.shape[0]}')
        yield item_id, pred, gt


def _gt_format(gt_format: Union[GroundTruthFormat, str, None]) -> GroundTruthFormat:
    if isinstance(gt_format, GroundTruthFormat):
        return gt_format
    return GroundTruthFormat(seg_map_suffix=gt_format or '.png')


def evaluate_labels(labels_dir, gt_dir, classes: Sequence[str],
                    gt_format: Union[GroundTruthFormat, str, None] = None,
                    labels_reduce_zero_label: bool = False) -> Dict:
    """Per-class IoU (%), mIoU, aAcc and coverage of class labels (255 = unsure); NaN for a
    class absent from labels and ground truth. ``gt_format``: how the ground truth holds the
    classes (a string: its file suffix; default plain ``.png`` class indices).
    ``labels_reduce_zero_label``: the label files hold 0 for "other" and ``k`` for class
    ``k - 1``, as mmseg's ``IoUMetric`` writes predictions of a ``reduce_zero_label`` dataset
    (``tools/test.py --out`` on ADE20K); default: class indices, as the tools write them.

    Raises:
        UserInputError: the folder's manifest names other classes (:func:`check_label_classes`),
            a file is missing or unreadable, or holds values outside ``classes``.
    """
    gt_format = _gt_format(gt_format)
    if not check_label_classes(labels_dir, classes, labels_reduce_zero_label) and \
            gt_format.reduce_zero_label and not labels_reduce_zero_label:
        print_log(f'note: the labels in {labels_dir} (no manifest) are read as class indices '
                  f'0..{len(classes) - 1}, as the tools write them; predictions in the ground '
                  "truth's convention (0 = other, k = class k-1: tools/test.py --out on ADE20K) "
                  'need --labels-reduce-zero-label', logger='current', level=logging.WARNING)
    metric = PseudoLabelMetric(ignore_index=IGNORE_INDEX, prefix='eval_labels')  # (unused: no notice)
    metric.dataset_meta = dict(classes=list(classes))
    count = 0
    for _, pred, gt in _pairs(labels_dir, gt_dir, classes, gt_format, True,
                              labels_reduce_zero_label):
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


def evaluate_segments(labels_dir, gt_dir, classes: Sequence[str],
                      gt_format: Union[GroundTruthFormat, str, None] = None) -> Dict:
    """Hungarian-matched per-class IoU (%), mIoU and ACC of unlabelled segment ids
    (``gt_format`` as in :func:`evaluate_labels`)."""
    totals, count = np.zeros((3, len(classes)), dtype=np.int64), 0
    for _, pred, gt in _pairs(labels_dir, gt_dir, classes, _gt_format(gt_format), False):
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
