"""Ground truth as the class set's mmseg dataset reads it (:class:`GroundTruthFormat`: file
suffix, ``reduce_zero_label``, label map), found for each label by its id
(:func:`find_ground_truth`), and label files read with the fix named for a bad one."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np
from mmseg.datasets import (ADE20KDataset, CityscapesDataset, PascalContextDataset59,
                            PascalVOCDataset)
from PIL import Image, UnidentifiedImageError

from ..class_defaults import init_defaults
from ..datasets.transforms import read_label_map
from ..datasets.unsupervised import (Cityscapes27Dataset, CityscapesHumanVehicleDataset,
                                     COCOStuff27Dataset, coarse_looking_maps,
                                     protocol_label_view)
from .folders import IGNORE_INDEX, TOO_LARGE
from .io import UserInputError

#: Cityscapes' train-id ground truth (mmseg's converter writes it beside the labelIds files)
CITYSCAPES_TRAIN_IDS = init_defaults(CityscapesDataset)['seg_map_suffix']

#: the mmseg dataset whose ground-truth files each class set of ``--classes`` names
CLASS_SET_DATASETS = {
    'voc': PascalVOCDataset, 'cityscapes': CityscapesDataset, 'ade20k': ADE20KDataset,
    'cityscapes27': Cityscapes27Dataset, 'cityscapes_human_vehicle': CityscapesHumanVehicleDataset,
    'cocostuff27': COCOStuff27Dataset, 'context59': PascalContextDataset59}


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
        suffix_option: the tool's option that sets ``seg_map_suffix``, named by the fixes.
        id_option: the tool's option that sets ``id_suffix``, if it has one (named too).
        crop_resize: read as DiffSeg's protocol configs score it: the centre square resized to
            this side (:func:`~mmdiffseg.datasets.unsupervised.protocol_label_view`), to score
            predictions saved at the evaluated size (``tools/test.py --out``).
    """

    seg_map_suffix: str = '.png'
    id_suffix: str = ''
    reduce_zero_label: bool = False
    label_map: Optional[Dict[int, int]] = None
    fine_labels: Optional[bool] = None
    suffix_option: str = field(default='--gt-suffix', compare=False)
    id_option: Optional[str] = field(default=None, compare=False)
    crop_resize: Optional[int] = None

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
                     reduce_zero_label: Optional[bool] = None,
                     crop_resize: Optional[int] = None,
                     id_suffix: Optional[str] = None) -> 'GroundTruthFormat':
        """This format with the settings that are not ``None`` replaced."""
        changes = dict(seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label,
                       crop_resize=crop_resize, id_suffix=id_suffix)
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def read(self, path, classes: Sequence[str]) -> np.ndarray:
        """A ground-truth PNG as class indices (255 = ignore), as mmseg's ``LoadAnnotations``
        reads it; values outside ``classes`` (a wrong convention) are refused."""
        label = read_label_map_file(path, 'ground truth', self.reduce_zero_label, self.label_map)
        if self.crop_resize:
            label = protocol_label_view(label, self.crop_resize)
        bad = outside_classes(label, len(classes))
        if bad:
            raise UserInputError(
                f'ground truth {path} holds values {bad} outside the {len(classes)} classes '
                f'(0..{len(classes) - 1}, 255 = ignore; read with reduce_zero_label='
                f'{self.reduce_zero_label}): {self._hint(bad, len(classes))}')
        return label

    def check_fine_labels(self, paths: Sequence[str]) -> None:
        """With ``fine_labels``, refuse maps that hold the 27 classes already
        (:func:`~mmdiffseg.datasets.unsupervised.coarse_looking_maps`)."""
        problem = coarse_looking_maps(sorted(paths)) if self.fine_labels else None
        if problem:
            raise UserInputError(f'--fine-labels: {problem}; leave out --fine-labels to read '
                                 'them as they are')

    def _hint(self, bad: List[int], count: int) -> str:
        if self.fine_labels is False:
            return ('COCO-Stuff\'s own label maps (stuffthingmaps_trainval2017: fine class id - '
                    '1) need --fine-labels, which maps them to the 27 classes (from Python: '
                    "GroundTruthFormat.of_class_set('cocostuff27', fine_labels=True))")
        if 'labelIds' in self.seg_map_suffix and not self.label_map:
            return ('Cityscapes labelIds are not train ids: score against '
                    f'*_gtFine_labelTrainIds.png ({self.suffix_option} _gtFine_labelTrainIds.png; '
                    "mmseg's tools/dataset_converters/cityscapes.py writes them), or use --classes "
                    'cityscapes27 for the 27 labelId classes')
        if not self.reduce_zero_label and max(bad) == count:
            return ('annotations whose 0 means "other" and k class k-1 (ADE20K) need '
                    '--reduce-zero-label')
        return ('wrong --classes for this ground truth, or a convention to set: '
                '--reduce-zero-label for annotations whose 0 is "other" (ADE20K), '
                f"*_gtFine_labelTrainIds.png ({self.suffix_option}) for Cityscapes' 19 classes")


def outside_classes(label: np.ndarray, count: int) -> List[int]:
    """Up to 10 values of ``label`` that are no class of ``count`` (nor unsure, 255)."""
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
                      option: str = '--gt', what: str = 'label(s)',
                      allow_missing: bool = False) -> Dict[str, Path]:
    """id -> ground-truth file ``<id><suffix>`` (or the id less ``id_suffix``), in ``gt_dir`` or,
    for files not found there, its sub-folders (Cityscapes' ``gtFine/val/<city>/``); with
    ``allow_missing``, ids without one are left out (VOC's 10,582 aug labels against the 2,913
    masks).

    Raises:
        UserInputError: a missing folder, an id without ground truth (with ``allow_missing``: no
            id has one), or two files of one id.
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
        nested: Dict[str, Path] = {}   # by the names' composed form (macOS copies decompose)
        for path in sorted(gt_dir.rglob(f'*{suffix}')):
            key = unicodedata.normalize('NFC', path.name[:-len(suffix)])
            if key in nested:
                raise UserInputError(f'two ground-truth files named {path.name} under {gt_dir}: '
                                     f'{nested[key]} and {path}; pass the folder of one split '
                                     f'as {option}')
            nested[key] = path
        for item_id in ids:
            if item_id not in found:
                path = next((nested[k] for k in map(partial(unicodedata.normalize, 'NFC'),
                                                    keys(item_id)) if k in nested), None)
                if path is not None:
                    found[item_id] = path
    gt_format.check_fine_labels([str(path) for path in found.values()])
    missing = [i for i in ids if i not in found]
    if missing and not (allow_missing and found):
        example = keys(missing[0])[-1] + suffix
        raise UserInputError(
            f'no ground truth for {len(missing)} {what}, e.g. {missing[:5]}: looked in {gt_dir} '
            f'({option}) and its sub-folders for files such as {example!r}. '
            + suffix_hint(gt_dir, gt_format))
    return found


def other_case_file(gt_dir: Path, suffix: str) -> Optional[Path]:
    """A file under ``gt_dir`` whose name ends in ``suffix`` in another case (VOC's ``.PNG``
    copied from another system), else None."""
    return next((p for p in Path(gt_dir).rglob('*') if p.name.lower().endswith(suffix.lower())
                 and not p.name.endswith(suffix)), None)


def suffix_hint(gt_dir: Path, gt_format: GroundTruthFormat) -> str:
    """The fix for ground truth not found under ``gt_format``'s suffix."""
    suffix = gt_format.seg_map_suffix
    other_case = other_case_file(gt_dir, suffix)
    if other_case is not None:
        return (f'It holds {other_case.name}: pass {gt_format.suffix_option} '
                f'{other_case.name[-len(suffix):]} (file names are case-sensitive)')
    if suffix == CITYSCAPES_TRAIN_IDS and next(gt_dir.rglob('*_gtFine_labelIds.png'), None):
        return (f'The folder holds *_gtFine_labelIds.png but no *{CITYSCAPES_TRAIN_IDS}: '
                "mmseg's tools/dataset_converters/cityscapes.py writes them (docs/data.md, "
                'Cityscapes)')
    return (f'Pass the ground-truth folder, and {gt_format.suffix_option} with the end of its file '
            f'names (e.g. {CITYSCAPES_TRAIN_IDS} for Cityscapes)'
            + (f', and {gt_format.id_option} with the end of the label names that its names '
               f'lack (x_img against x_mask.png: {gt_format.id_option} _img '
               f'{gt_format.suffix_option} _mask.png)' if gt_format.id_option else ''))
