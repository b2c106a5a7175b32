"""Score a folder of label PNGs against ground truth.

Class labels: mmseg's IoU (:class:`~mmdiffseg.evaluation.PseudoLabelMetric`, unsure 255 counts as
a miss) -> per-class IoU, mIoU, aAcc and coverage (share of pixels given a class). Unlabelled
segments (DiffSeg): per-image Hungarian matching (:func:`~mmdiffseg.evaluation.match_segments`)
-> per-class IoU, mIoU and ACC. Ground truth is read as the class set's mmseg dataset reads it
(:class:`.ground_truth.GroundTruthFormat`: file suffix, ``reduce_zero_label``, label map).
"""
from __future__ import annotations

import json
import logging
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log
from mmseg.evaluation import IoUMetric

from ..datasets.class_names import DATASET_CLASSES
from ..datasets.generated import read_manifest_header
from ..evaluation import PseudoLabelMetric, defined_mean, match_segments, matched_scores
from ..evaluation.unsupervised_metric import SEGMENT_IDS_TOOL
from ..names import repeated_names
from .folders import IGNORE_INDEX, MASK_DIR
from .ground_truth import (GroundTruthFormat, find_ground_truth, other_case_file,
                           outside_classes, read_label_map_file)
from .io import UserInputError
from .progress import ProgressLine


def label_files(folder) -> Dict[str, Path]:
    """id -> label PNG of a tool's output folder (``SegmentationClass/``) or a plain folder
    (``.png`` in any case; hidden files, such as macOS's ``._x.png``, left out)."""
    folder = Path(folder)
    if (folder / MASK_DIR).is_dir():
        folder = folder / MASK_DIR
    if not folder.is_dir():
        raise UserInputError(f'label folder {folder} not found')
    files: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() == '.png' and not path.name.startswith('.') and path.is_file():
            other = files.setdefault(path.stem, path)
            if other != path:   # x.png and x.PNG: one would be scored, the other dropped
                raise UserInputError(f'two labels of image {path.stem!r} in {folder}: '
                                     f'{other.name} and {path.name}; remove one')
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
        header = read_manifest_header(folder)
        if header is None:   # a tool's folder; a segment-id folder's header is its own only
            header = read_manifest_header(folder.parent)
            header = None if (header or {}).get('tool') == SEGMENT_IDS_TOOL else header
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
        named = [name for name, names in DATASET_CLASSES.items()
                 if list(names) == list(header['classes'])]
        raise UserInputError(
            f'the labels in {folder} index the classes {header["classes"]} (their manifest), '
            f'but the ground truth is scored as {list(classes)} (--classes): the scores would '
            'compare unrelated indices. Pass --classes with the labels\' classes (in their order'
            + (f': --classes {named[0]}, which reads its dataset\'s ground truth' if named else '')
            + ') and ground truth in that order, or regenerate the labels with the ground '
            'truth\'s classes')
    return True


def _matched_files(labels_dir, gt_dir, gt_format: GroundTruthFormat
                   ) -> Tuple[Dict[str, Tuple[Path, Path]], Dict[str, List[str]]]:
    """id -> (label file, its ground truth) of the labels that have one, and what is left out
    of the scores: ``unscored``, the ids of labels without ground truth; ``unlabelled``, the
    ground-truth files under ``gt_dir`` without a label; ``own_ground_truth``, the ids of label
    files that are their ground truth file (``--gt`` holds the labels)."""
    labels = label_files(labels_dir)
    gt_paths = find_ground_truth(labels, gt_dir, gt_format, allow_missing=True)
    matched = {i: (path, gt_paths[i]) for i, path in labels.items() if i in gt_paths}
    used = {path.resolve() for path in gt_paths.values()}
    unscored = sorted(set(labels) - set(gt_paths))
    suffix = gt_format.seg_map_suffix
    other_case = other_case_file(gt_dir, suffix) if unscored else None
    if other_case is not None:  # (none found at all: find_ground_truth refused with the hint)
        print_log(f'note: {len(unscored)} label(s) have no ground truth ending in {suffix!r} '
                  f'under {gt_dir}, which holds {other_case.name} (file names are '
                  f'case-sensitive): give the ground-truth files one ending, e.g. rename it '
                  f'{other_case.name[:-len(suffix)]}{suffix}', logger='current',
                  level=logging.WARNING)
    return matched, dict(
        unscored=unscored,
        unlabelled=sorted(str(p.relative_to(gt_dir)) for p in
                          Path(gt_dir).rglob(f'*{gt_format.seg_map_suffix}')
                          if p.resolve() not in used),
        own_ground_truth=sorted(i for i, (path, gt) in matched.items()
                                if os.path.samefile(path, gt)))


def _pairs(files: Dict[str, Tuple[Path, Path]], classes: Sequence[str],
           gt_format: GroundTruthFormat, check_labels: bool,
           labels_reduce_zero_label: bool = False, progress: bool = False):
    """``(id, label, ground truth)`` arrays of each of :func:`_matched_files`' pairs; with
    ``progress``, a progress line on stdout (minutes of silence for 10k images otherwise)."""
    with ProgressLine(len(files) if progress else 0, sys.stdout) as bar:
        bar.start()
        for pair in _read_pairs(files, classes, gt_format, check_labels,
                                labels_reduce_zero_label):
            yield pair
            bar.update()


def _read_pairs(files: Dict[str, Tuple[Path, Path]], classes: Sequence[str],
                gt_format: GroundTruthFormat, check_labels: bool,
                labels_reduce_zero_label: bool):
    for item_id, (path, gt_path) in files.items():
        if os.path.samefile(path, gt_path):  # the ground truth scored against itself
            gt = gt_format.read(path, classes)
            yield item_id, gt, gt
            continue
        pred = read_label_map_file(path, reduce_zero_label=labels_reduce_zero_label)
        bad = outside_classes(pred, len(classes)) if check_labels else []
        if bad:
            raise UserInputError(
                f'{path} holds label values {bad} outside the {len(classes)} classes of --classes '
                '(255 = unsure): pass the classes the labels index, or --hungarian for '
                'unlabelled segment ids' + (
                    '; labels are read as class indices 0..N-1: labels in the ground truth\'s '
                    'reduce_zero_label convention (0 = other, k = class k-1; tools/test.py --out '
                    'writes ADE20K predictions so) need --labels-reduce-zero-label'
                    if gt_format.reduce_zero_label and not labels_reduce_zero_label else ''))
        gt = gt_format.read(gt_path, classes)
        if pred.shape != gt.shape:
            raise UserInputError(f'{path} is {pred.shape[1]}x{pred.shape[0]} but its ground truth '
                                 f'{gt_path} is {gt.shape[1]}x{gt.shape[0]}'
                                 + (_EXIF_HINT if pred.shape == gt.shape[::-1] else
                                    _crop_hint(pred.shape, gt_format, gt_path, classes)))
        yield item_id, pred, gt


#: labels of the ground truth's size turned a quarter: an image with an EXIF orientation tag
_EXIF_HINT = ('; the label is the ground truth\'s size turned a quarter: its image likely has '
              'an EXIF orientation tag, which the tools apply when decoding (as '
              'LoadImageFromFile\'s defaults do) and which ground truth stored in the file\'s '
              'own orientation does not follow: label that image re-saved without the tag, or '
              'leave it out')


def _crop_hint(shape, gt_format: GroundTruthFormat, gt_path, classes) -> str:
    """The fix for labels beside ground truth of another size: predictions that tools/test.py
    --out saved at the size DiffSeg's protocol evaluates need ``--center-crop-resize`` of their
    side; labels of the ground truth's own size need none."""
    crop = gt_format.crop_resize
    if crop and shape == replace(gt_format, crop_resize=None).read(gt_path, classes).shape:
        return (f' after --center-crop-resize {crop}; the labels are of the ground truth\'s own '
                'size: leave the option out')
    if shape[0] != shape[1] or crop == shape[0]:
        return f' after --center-crop-resize {crop}' if crop else ''
    return (f'{f" after --center-crop-resize {crop}" if crop else ""}; predictions that '
            f'tools/test.py --out saved with the DiffSeg protocol configs are of the centre '
            f'square resized to {shape[0]}x{shape[0]}: score them with --center-crop-resize '
            f'{shape[0]}, which reads the ground truth so')


def _classes_and_format(classes: Union[str, Sequence[str]],
                        gt_format: Union[GroundTruthFormat, str, None]
                        ) -> Tuple[List[str], GroundTruthFormat]:
    """The class names and the ground truth's format: a class set's name (``'ade20k'``) reads
    its dataset's files as the tool does (ADE20K's ``reduce_zero_label``, Cityscapes'
    trainIds; a string ``gt_format`` overrides the suffix); a list of names, plain PNGs of class
    indices unless ``gt_format`` says otherwise."""
    if isinstance(classes, str):
        if classes not in DATASET_CLASSES:
            raise UserInputError(f'classes={classes!r}: a list of class names, or the name of a '
                                 f'class set: {", ".join(DATASET_CLASSES)}')
        fmt = gt_format if isinstance(gt_format, GroundTruthFormat) else \
            GroundTruthFormat.of_class_set(classes, gt_format)
        return list(DATASET_CLASSES[classes]), fmt
    repeated = repeated_names(classes)
    if repeated:  # the report keys each IoU by its class name
        raise UserInputError(f'classes names {", ".join(repeated)} more than once; each class is '
                             'one name, in the order of its label value')
    if isinstance(gt_format, GroundTruthFormat):
        return list(classes), gt_format
    return list(classes), GroundTruthFormat(seg_map_suffix=gt_format or '.png')


def evaluate_labels(labels_dir, gt_dir, classes: Union[str, Sequence[str]],
                    gt_format: Union[GroundTruthFormat, str, None] = None,
                    labels_reduce_zero_label: bool = False, progress: bool = False) -> Dict:
    """Per-class IoU (%), mIoU, aAcc and coverage of class labels (255 = unsure); NaN for a
    class absent from labels and ground truth, and aAcc NaN where no pixel is labelled. Labels
    without ground truth are left out (``unscored``: their ids), as are ground-truth files
    without a label (``unlabelled``); ``own_ground_truth``: labels scored against themselves.
    ``classes``: the names, or a class set's name (``'voc'``, ``'ade20k'``...: its dataset's ground-truth format, as
    ``tools/eval_labels.py --classes``). ``gt_format``: how the ground truth holds the classes (a
    string: its file suffix; default with a list of names: plain ``.png`` class indices).
    ``labels_reduce_zero_label``: the label files hold 0 for "other" and ``k`` for class
    ``k - 1``, as mmseg's ``IoUMetric`` writes predictions of a ``reduce_zero_label`` dataset
    (``tools/test.py --out`` on ADE20K); default: class indices, as the tools write them.
    ``progress``: a progress line on stdout, as the tool shows.

    Raises:
        UserInputError: the folder's manifest names other classes (:func:`check_label_classes`),
            a file is missing or unreadable, or holds values outside ``classes``.
    """
    classes, gt_format = _classes_and_format(classes, gt_format)
    if not check_label_classes(labels_dir, classes, labels_reduce_zero_label) and \
            gt_format.reduce_zero_label and not labels_reduce_zero_label:
        print_log(f'note: the labels in {labels_dir} (no manifest) are read as class indices '
                  f'0..{len(classes) - 1}, as the tools write them; predictions in the ground '
                  "truth's convention (0 = other, k = class k-1: tools/test.py --out on ADE20K) "
                  'need --labels-reduce-zero-label', logger='current', level=logging.WARNING)
    metric = PseudoLabelMetric(ignore_index=IGNORE_INDEX, prefix='eval_labels')  # (unused: no notice)
    metric.dataset_meta = dict(classes=list(classes))
    count = 0
    files, left_out = _matched_files(labels_dir, gt_dir, gt_format)
    for _, pred, gt in _pairs(files, classes, gt_format, True, labels_reduce_zero_label,
                              progress):
        metric.process({}, [dict(pred_sem_seg=dict(data=torch.from_numpy(pred).long()),
                                 gt_sem_seg=dict(data=torch.from_numpy(gt).long()))])
        count += 1
    areas = [sum(r[k] for r in metric.results) for k in range(4)]  # summed torch histograms
    per_class = IoUMetric.total_area_to_metrics(*areas, metrics=['mIoU'])['IoU']
    covered = sum(r[4] for r in metric.results)
    total = sum(r[5] for r in metric.results)
    return dict(images=count, per_class_iou=_per_class(classes, per_class),
                mIoU=_pct(defined_mean(per_class)),
                aAcc=_pct(_ratio(areas[0].sum(), areas[3].sum())),
                coverage=_pct(covered / max(total, 1)), **left_out)


def evaluate_segments(labels_dir, gt_dir, classes: Union[str, Sequence[str]],
                      gt_format: Union[GroundTruthFormat, str, None] = None,
                      progress: bool = False) -> Dict:
    """Hungarian-matched per-class IoU (%), mIoU and ACC of unlabelled segment ids
    (``classes``, ``gt_format``, ``unscored`` and ``progress`` as in :func:`evaluate_labels`)."""
    classes, gt_format = _classes_and_format(classes, gt_format)
    totals, count = np.zeros((3, len(classes)), dtype=np.int64), 0
    files, left_out = _matched_files(labels_dir, gt_dir, gt_format)
    for _, pred, gt in _pairs(files, classes, gt_format, False, progress=progress):
        totals += match_segments(gt, pred, len(classes), IGNORE_INDEX)
        count += 1
    iou, _, acc = matched_scores(totals)
    return dict(images=count, per_class_iou=_per_class(classes, iou),
                mIoU=_pct(defined_mean(iou)), ACC=_pct(acc), **left_out)


def _ratio(part, whole) -> float:
    """``part / whole``, NaN for no pixel (0 / 0, as mmseg's IoUMetric)."""
    return float(part) / float(whole) if float(whole) else float('nan')


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
    notes = [f'{what}: {len(report[key])} {unit}, e.g. {", ".join(report[key][:5])}'
             for key, what, unit in (
                 ('unscored', 'not scored', 'label(s) without ground truth'),
                 ('unlabelled', 'not scored', 'ground-truth file(s) under --gt without a label'),
                 ('own_ground_truth', 'scored against themselves',
                  'label file(s) that are their ground truth (--gt holds the labels)'))
             if report.get(key)]
    return '\n'.join([*lines, '', ', '.join(summary), *notes])
