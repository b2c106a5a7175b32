"""Datasets of generated labels: synthetic image-mask folders and pseudo-label folders.

Both are read as flat label folders written by ``tools/synthesize.py`` / ``tools/pseudo_label.py``:
``<label_dir>/<image name><seg_map_suffix>`` holding the dataset's class indices (0-based, 255 =
unsure; the generators' output convention), next to a ``manifest.jsonl`` (or ``manifest.json``)
whose header records the class list. Each dataset keeps the metainfo (classes, palette) of the
stock mmseg dataset it extends, so it mixes with real data in a ``ConcatDataset`` (for ADE20K,
whose real labels use ``reduce_zero_label=True``, pass ``ignore_keys=['reduce_zero_label']`` and
``LoadAnnotations()`` without a fixed ``reduce_zero_label``: each sample then carries its own).
:class:`SyntheticDataset` and :class:`PseudoLabelDataset` take any class list as ``metainfo``; a
``metainfo`` the manifest records is read as it is (mmseg's ``label_map`` from the stock classes
is not applied: the files already index the given classes).

Loading fails with a clear error, never silently wrong labels, when: an image has no label file
(a label folder made for other images), the manifest's classes differ from the dataset's, the
files' convention disagrees with ``reduce_zero_label``, a pipeline forces the other convention, or a
label file holds values outside the classes (e.g. Cityscapes labelIds instead of trainIds).
"""
from __future__ import annotations

import json
import os.path as osp
from pathlib import Path
from typing import Dict, List, Optional

import mmengine
import numpy as np
from mmseg.datasets import (ADE20KDataset, BaseSegDataset, CityscapesDataset,
                            PascalVOCDataset)
from mmseg.registry import DATASETS

from ..generators.base import IGNORE_INDEX
from ..registry import config_type
from .class_names import DATASET_CLASSES, synthesize_options
from .file_listing import files_below
from .transforms import read_label_map
from .unsupervised import CityscapesHumanVehicleDataset

MANIFEST_NAMES = ('manifest.jsonl', 'manifest.json')


def read_manifest_header(folder: Path) -> Optional[dict]:
    """The header of the manifest in ``folder`` (first line of ``manifest.jsonl``, read alone:
    a dataset's manifest holds a line per image, or the object in ``manifest.json``); None when
    there is none."""
    for name in MANIFEST_NAMES:
        path = folder / name
        if path.is_file():
            with path.open() as manifest:
                first = manifest.readline() if name.endswith('.jsonl') else manifest.read()
            try:
                return json.loads(first)
            except json.JSONDecodeError as exc:
                raise ValueError(f'{path}: the manifest header is not JSON ({exc})') from None
    return None


def is_tool_output(folder: Path) -> bool:
    """Whether ``folder`` is an mmdiffseg tool's output (its manifest's header says so; another
    program's ``manifest.json`` beside images does not)."""
    try:
        header = read_manifest_header(folder)
    except (ValueError, OSError):
        return False
    return isinstance(header, dict) and header.get('manifest') == 'mmdiffseg'


class UnfinishedJobFolder(FileNotFoundError):
    """A tool's output folder without its split file: the run that makes it has not ended."""


class GeneratedLabelDataset(BaseSegDataset):
    """A flat folder of generated labels for images listed by ``ann_file`` or found in
    ``data_prefix['img_path']``.

    Args:
        check_files: how many label files to read at start-up to check their values.
        require_manifest: fail when the label folder has no manifest.
        Other arguments: :class:`mmseg.datasets.BaseSegDataset`.
    """

    def __init__(self, *args, check_files: int = 8, require_manifest: bool = True, **kwargs):
        self.check_files = check_files
        self.require_manifest = require_manifest
        metainfo = kwargs.get('metainfo') or {}
        if metainfo.get('classes') and not metainfo.get('palette'):  # the tools' colours
            from ..apis.folders import palette_for
            kwargs['metainfo'] = dict(metainfo, palette=palette_for(metainfo['classes']))
        self._check_pipeline_convention(kwargs.get('pipeline', []),
                                        kwargs.get('reduce_zero_label', False))
        super().__init__(*args, **kwargs)

    # -- listing ---------------------------------------------------------------------------
    def _image_paths(self) -> List[str]:
        """The images ``ann_file`` lists (each line looked up by :meth:`_images_by_name`, all
        the images of a name), else all under ``data_prefix['img_path']``."""
        img_dir = self.data_prefix.get('img_path', '')
        by_name = self._images_by_name(img_dir)
        if self.ann_file and not osp.isdir(self.ann_file):
            if not osp.isfile(self.ann_file):
                self._refuse_unfinished()
                raise FileNotFoundError(
                    f'{type(self).__name__}: ann_file {self.ann_file} not found' +
                    self._written_split_hint(Path(self.data_prefix.get('seg_map_path', ''))))
            names = [line.strip() for line in mmengine.list_from_file(self.ann_file)
                     if line.strip()]
            return [path for n in names for path in
                    by_name.get(n, [osp.join(img_dir, n + (self.img_suffix or ''))])]
        return sorted({path for paths in by_name.values() for path in paths})

    def _refuse_unfinished(self) -> None:
        """The missing split file of a folder a tool is making (a manifest beside the labels):
        the tool writes it last, so its run was stopped or is still going."""
        folder = Path(self.data_prefix.get('seg_map_path', '')).parent
        header = read_manifest_header(folder)
        written = list((folder / 'ImageSets' / 'Segmentation').glob('*.txt'))
        if header is not None and not written:  # else finished, with another split's file
            tool = f'tools/{header.get("tool", "synthesize")}.py'
            raise UnfinishedJobFolder(
                f'{type(self).__name__}: ann_file {self.ann_file} not found, but {folder} holds '
                f'the manifest of a {tool} run: that run has not finished (the split file is '
                'written when it ends); rerun its command, which resumes where it stopped, '
                'or wait for it to end')

    def _images_by_name(self, img_dir: str) -> Dict[str, List[str]]:
        """The images in ``img_dir`` and its sub-folders (ending in ``img_suffix``; None: any
        image the tools read), under each name a split line gives them: the path below
        ``img_dir`` without the suffix (mmseg's lines: ``aachen/aachen_000000_000019``) and the
        file name without its extension (the offline tools' lines:
        ``aachen_000000_000019_leftImg8bit``). A name of several images lists them all. A
        sub-folder holding a manifest is a tool's ``--out`` (labels, overlays), not images."""
        from ..apis.folders import IMAGE_SUFFIXES
        by_name: Dict[str, List[str]] = {}
        if not osp.isdir(img_dir):  # named by load_data_list with the images it misses
            return by_name
        names = files_below(img_dir)
        outputs = tuple(osp.dirname(name) + '/' for name in names if osp.dirname(name) and
                        osp.basename(name) in MANIFEST_NAMES and
                        is_tool_output(Path(img_dir, osp.dirname(name))))
        for name in names:
            if osp.basename(name).startswith('.') or name.startswith(outputs):
                continue
            if self.img_suffix is None:
                stem, suffix = osp.splitext(name)
                if suffix.lower() not in IMAGE_SUFFIXES:
                    continue
            elif name.endswith(self.img_suffix):
                stem = name[:-len(self.img_suffix)]
            else:
                continue
            for key in {stem, osp.splitext(osp.basename(name))[0]}:
                by_name.setdefault(key, []).append(osp.join(img_dir, name))
        return by_name

    def _check_one_label_each(self, images: List[str]) -> None:
        """Two images whose labels are one file of the flat label folder (``x.jpg`` beside
        ``x.png``, or ``a/x.jpg`` and ``b/x.jpg``; the tools refuse such a folder too): one
        would train on the other's label, silently."""
        owners: Dict[str, str] = {}
        for path in images:
            label = self._label_path(path)
            other = owners.setdefault(label, path)
            if other != path:
                name = osp.splitext(osp.basename(path))[0]
                beside = osp.splitext(other)[0] == osp.splitext(path)[0]
                raise ValueError(
                    f'{type(self).__name__}: two images are named {name!r}: {other} and {path}, '
                    f'but one label file {label} would stand for both; rename or move one'
                    + (', or set img_suffix to the suffix of the images to read'
                       if beside and self.img_suffix is None else ''))

    def _label_path(self, img_path: str) -> str:
        name = osp.basename(img_path)
        name = osp.splitext(name)[0] if self.img_suffix is None else name[:-len(self.img_suffix)]
        return osp.join(self.data_prefix['seg_map_path'], name + self.seg_map_suffix)

    def load_data_list(self) -> List[dict]:
        if 'seg_map_path' not in self.data_prefix:
            raise ValueError(f'{type(self).__name__}: data_prefix needs seg_map_path (the folder '
                             'of generated labels)')
        label_dir = Path(self.data_prefix['seg_map_path'])
        images = self._image_paths()
        if not images and self.ann_file and not osp.isdir(self.ann_file):
            raise FileNotFoundError(f'{type(self).__name__}: the split file {self.ann_file} lists '
                                    'no images: write their names in it, one per line')
        if not images:
            img_dir = self.data_prefix.get('img_path', '')
            raise FileNotFoundError(
                f'{type(self).__name__}: ' + (f'image folder {img_dir} not found'
                                              if not osp.isdir(img_dir) else
                                              f'no images ending in {self.img_suffix!r} in '
                                              f'{img_dir}' if self.img_suffix else
                                              f'no images in {img_dir}'))
        missing_images = [p for p in images if not osp.isfile(p)]
        if missing_images:
            from ..apis.folders import same_name_image
            named = same_name_image(missing_images[0])
            raise FileNotFoundError(
                f'{type(self).__name__}: {len(missing_images)} listed image(s) do not exist, e.g. '
                f'{missing_images[:3]}' + (f'; the images are named {named.name!r}: set '
                                           f'img_suffix={named.suffix!r}, or img_suffix=None for '
                                           'any image suffix' if named else ''))
        self._check_one_label_each(images)
        data_list = [dict(img_path=p, seg_map_path=self._label_path(p), label_map=self.label_map,
                          reduce_zero_label=self.reduce_zero_label, seg_fields=[])
                     for p in images]
        self._check_label_folder(label_dir, data_list)
        if self._check_manifest(label_dir):  # the files hold this dataset's indices already
            self.label_map = self._metainfo['label_map'] = None
            for info in data_list:
                info['label_map'] = None
        self._check_label_values(data_list[:self.check_files])
        return data_list

    # -- checks ----------------------------------------------------------------------------
    def _check_label_folder(self, label_dir: Path, data_list: List[dict]) -> None:
        if not label_dir.is_dir():
            raise FileNotFoundError(f'{type(self).__name__}: label folder {label_dir} not found')
        missing = [d['seg_map_path'] for d in data_list if not osp.isfile(d['seg_map_path'])]
        if missing:
            expected = {osp.basename(d['seg_map_path']) for d in data_list}
            extra = [p.name for p in label_dir.glob('*' + self.seg_map_suffix)
                     if p.name not in expected]
            raise FileNotFoundError(
                f'{type(self).__name__}: the label folder {label_dir} does not match the images: '
                f'{len(missing)} of {len(data_list)} image(s) have no label, e.g. '
                f'{[osp.basename(m) for m in missing[:3]]}'
                + (f'; it holds {len(extra)} label(s) of other images, e.g. {extra[:3]}'
                   if extra else '') + self._written_split_hint(label_dir))

    def _written_split_hint(self, label_dir: Path) -> str:
        """The split files a tool wrote beside ``label_dir`` (the images it labelled: it leaves
        out those it could not), as the ``ann_file`` to train on."""
        given = osp.abspath(self.ann_file) if self.ann_file else None
        splits = sorted(str(p) for p in (label_dir.parent / 'ImageSets' / 'Segmentation').glob(
            '*.txt') if osp.abspath(p) != given)
        return (f'; {" or ".join(splits)} lists the images the tool labelled (it leaves out those '
                'it could not): set ann_file to it' if splits else '')

    def _check_manifest(self, label_dir: Path) -> bool:
        """Refuse a label folder whose manifest records other classes (or segment ids, or the
        other zero-label convention); True when it records this dataset's classes. Then the
        files need no ``label_map``: mmseg's, made when ``metainfo`` overrides the stock
        classes, maps the stock dataset's indices, which these files do not hold."""
        header = None
        for folder in (label_dir, label_dir.parent):
            header = read_manifest_header(folder)
            if header is not None:
                break
        if header is None:
            if self.require_manifest:
                raise FileNotFoundError(
                    f'{type(self).__name__}: no manifest ({" / ".join(MANIFEST_NAMES)}) in '
                    f'{label_dir} or its parent; it records the classes of the labels (pass '
                    'require_manifest=False to skip the check)')
            return False
        classes = list(self.metainfo['classes'])
        if header.get('classes') is None and 'classes' in header:
            raise ValueError(f'{type(self).__name__}: the labels in {label_dir} are unlabelled '
                             'segment ids (made without class names), not classes')
        if 'classes' in header and list(header['classes']) != classes:
            name = next((k for k, v in DATASET_CLASSES.items() if list(v) == classes), None)
            given = name or f'"{",".join(classes)},"'
            raise ValueError(f'{type(self).__name__}: the labels in {label_dir} index the classes '
                             f'{header["classes"]}, but this dataset has {classes}; regenerate '
                             f'them with this class list (pseudo_label.py --classes {given}; '
                             f'synthesize.py {synthesize_options(classes)}; masks of a subset '
                             f'of them: synthesize.py --classes "A,B," --label-set {given})')
        written_rzl = bool(header.get('reduce_zero_label', False))
        if written_rzl != bool(self.reduce_zero_label):
            raise ValueError(
                f'{type(self).__name__}: the labels in {label_dir} were written with '
                f'reduce_zero_label={written_rzl} but the dataset uses '
                f'reduce_zero_label={self.reduce_zero_label}')
        return 'classes' in header

    def _check_label_values(self, data_list: List[dict]) -> None:
        """The first labels hold class indices and have their images' sizes (a label folder of
        other images, or resized, gave misaligned crops, then a size error mid-run)."""
        from ..attention.images import decode_rgb
        num_classes = len(self.metainfo['classes'])
        for info in data_list:
            label = read_label_map(info['seg_map_path'], self.reduce_zero_label, self.label_map)
            values = np.unique(label)
            bad = values[(values >= num_classes) & (values != IGNORE_INDEX)]
            if bad.size:
                raise ValueError(
                    f'{type(self).__name__}: {info["seg_map_path"]} holds values {bad.tolist()} '
                    f'outside the {num_classes} classes (reduce_zero_label='
                    f'{self.reduce_zero_label}); wrong label convention? (Cityscapes labels must '
                    'be trainIds, generated labels 0-based class indices)')
            image = decode_rgb(Path(info['img_path']).read_bytes(), info['img_path'])
            if label.shape != image.shape[:2]:
                raise ValueError(
                    f'{type(self).__name__}: the label {info["seg_map_path"]} is '
                    f'{label.shape[1]}x{label.shape[0]} but its image {info["img_path"]} is '
                    f'{image.shape[1]}x{image.shape[0]} (as training decodes it): the labels in '
                    f'{Path(info["seg_map_path"]).parent} were not made from these images '
                    '(each label has its image\'s size); label these images again')

    @classmethod
    def _check_pipeline_convention(cls, pipeline, reduce_zero_label: bool) -> None:
        for step in pipeline or []:
            if config_type(step) == 'LoadAnnotations':
                forced = step.get('reduce_zero_label')
                if forced is not None and bool(forced) != bool(reduce_zero_label):
                    raise ValueError(
                        f'{cls.__name__}: the pipeline has LoadAnnotations(reduce_zero_label='
                        f'{forced}) but the dataset uses reduce_zero_label={reduce_zero_label}; '
                        'use LoadAnnotations() so each dataset applies its own convention')


def _synthetic_defaults(kwargs: dict) -> dict:
    """The VOC folder layout ``tools/synthesize.py`` writes."""
    kwargs.setdefault('data_prefix', dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    kwargs.setdefault('ann_file', 'ImageSets/Segmentation/train.txt')
    kwargs.setdefault('img_suffix', '.jpg')
    kwargs.setdefault('seg_map_suffix', '.png')
    kwargs.setdefault('reduce_zero_label', False)
    return kwargs


def _given_classes(cls_name: str, kwargs: dict) -> dict:
    """``kwargs`` of a dataset of any class list, which ``metainfo=dict(classes=...)`` must give
    (the classes the labels' manifest records, in its order)."""
    if not (kwargs.get('metainfo') or {}).get('classes'):
        raise ValueError(f'{cls_name} needs metainfo=dict(classes=[...]): the classes its labels '
                         'index, as the label folder\'s manifest records them (the --classes of '
                         'the tool that wrote them)')
    return kwargs


@DATASETS.register_module()
class SyntheticDataset(GeneratedLabelDataset):
    """Synthetic image-mask pairs of any class list (``tools/synthesize.py --classes a,b``), in
    the layout that tool writes; ``metainfo=dict(classes=[...])`` gives the label set."""

    def __init__(self, **kwargs):
        super().__init__(**_synthetic_defaults(_given_classes('SyntheticDataset', kwargs)))


@DATASETS.register_module()
class PseudoLabelDataset(GeneratedLabelDataset):
    """Any images with a folder of generated labels of any class list (``tools/pseudo_label.py
    --classes ...``); ``metainfo=dict(classes=[...])`` gives them. ``img_suffix=None`` (the
    default): each image by its name with any suffix the tools read (``.jpg``, ``.JPG``,
    ``.png``, ...), as the tools label a folder of mixed suffixes (two images of one name,
    ``x.jpg`` and ``x.png``, are refused, as the tools refuse them: one label file would stand
    for both)."""

    def __init__(self, img_suffix=None, seg_map_suffix='.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         **_given_classes('PseudoLabelDataset', kwargs))


@DATASETS.register_module()
class SyntheticVOCDataset(GeneratedLabelDataset):
    """Synthetic image-mask pairs (SeeDiff) with PASCAL VOC's 21 classes."""
    METAINFO = PascalVOCDataset.METAINFO

    def __init__(self, **kwargs):
        super().__init__(**_synthetic_defaults(kwargs))


@DATASETS.register_module()
class SyntheticCityscapesDataset(GeneratedLabelDataset):
    """Synthetic pairs of SeeDiff's Cityscapes setting: background, human, vehicle (the classes of
    :class:`CityscapesHumanVehicleDataset`, the matching real data)."""
    METAINFO = CityscapesHumanVehicleDataset.METAINFO

    def __init__(self, **kwargs):
        super().__init__(**_synthetic_defaults(kwargs))


@DATASETS.register_module()
class SyntheticADE20KDataset(GeneratedLabelDataset):
    """Synthetic pairs with ADE20K's 150 classes (0-based labels, ``reduce_zero_label=False``)."""
    METAINFO = ADE20KDataset.METAINFO

    def __init__(self, **kwargs):
        super().__init__(**_synthetic_defaults(kwargs))


@DATASETS.register_module()
class PseudoLabelVOCDataset(GeneratedLabelDataset):
    """Real VOC images (``JPEGImages/*.jpg``) with a folder of generated labels
    (``data_prefix=dict(img_path=..., seg_map_path=<label folder>)``)."""
    METAINFO = PascalVOCDataset.METAINFO

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class PseudoLabelCityscapesDataset(GeneratedLabelDataset):
    """Real Cityscapes frames (``leftImg8bit/<split>/<city>/*_leftImg8bit.png``) with a flat folder
    of generated labels named after the image file (``<frame>_leftImg8bit.png``, train ids)."""
    METAINFO = CityscapesDataset.METAINFO

    def __init__(self, img_suffix='_leftImg8bit.png', seg_map_suffix='_leftImg8bit.png',
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)


@DATASETS.register_module()
class PseudoLabelADE20KDataset(GeneratedLabelDataset):
    """Real ADE20K images (``images/<split>/*.jpg``) with generated labels. Generated labels are
    0-based (``reduce_zero_label=False``), unlike ADE20K's own annotations."""
    METAINFO = ADE20KDataset.METAINFO

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)
