"""The images a job labels, as work items: a folder's image files, single paths, images given
from Python, or the images an mmseg dataset config lists (wrappers opened)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, List, Tuple

from mmengine.logging import print_log

from ..datasets.generated import is_tool_output
from .folders import IMAGE_SUFFIXES, list_images
from .ground_truth import GroundTruthFormat
from .io import UserInputError, WorkItem, check_item_ids


def images_from_folder(folder, whole: str = (' with its own --out, or all of them in one run: '
                                             "--dataset-config with the dataset's mmseg config, "
                                             '--split train')
                       ) -> List[WorkItem]:
    """One item per image file in ``folder``, id = file stem. A folder whose images are all in
    sub-folders (Cityscapes' cities) is refused naming them, and ``whole``: how to take them
    all."""
    folder = Path(folder)
    if folder.is_file():
        raise UserInputError(f'{folder} is a file: give the folder of images (or '
                             '--dataset-config); tools/segment.py takes single images')
    if not folder.is_dir():
        raise UserInputError(f'image folder {folder} not found')
    items = [WorkItem(p.stem, dict(image=str(p)), source=str(p)) for p in list_images(folder)]
    # a tool's output folder inside (contact sheets, overlays) holds no inputs
    nested = sorted(d.name for d in folder.iterdir() if d.is_dir() and list_images(d)
                    and not is_tool_output(d))
    if not items:
        raise UserInputError(f'no images in {folder}' + (
            f'; its sub-folders {nested[:3]} hold images (Cityscapes\' cities): give one of '
            f'them{whole}' if nested else ''))
    others = sorted({p.suffix.lower() or '(no ending)' for p in folder.iterdir()
                     if p.is_file() and not p.name.startswith('.')} - set(IMAGE_SUFFIXES))
    if others:
        print_log(f'the files of {folder} ending in {", ".join(others)} are not read: the '
                  f'tools read images ending in {", ".join(IMAGE_SUFFIXES)}', logger='current')
    if nested:
        print_log(f'the images in the sub-folders of {folder} ({", ".join(nested[:3])}'
                  f'{", ..." if len(nested) > 3 else ""}) are not read: only those directly in '
                  f'it; give each sub-folder its own run{whole}', logger='current',
                  level=logging.WARNING)
    return items


def path_items(path, whole: str = '') -> List[WorkItem]:
    """An image file or every image in a folder (:func:`images_from_folder`, ``whole`` as
    there)."""
    path = Path(path)
    if path.is_file():
        return [WorkItem(path.stem, dict(image=str(path)), source=str(path))]
    if not path.exists():
        raise UserInputError(f'{path}: no such image file or folder of images')
    return images_from_folder(path, whole=whole)


def image_items(images) -> List[WorkItem]:
    """The work items of the offline jobs' ``images`` argument: an image file or a folder of
    images (``str`` / ``Path``), a list of them, or work items as the tools make them
    (:func:`path_items`, :func:`images_from_folder`, :func:`images_from_dataset_config`)."""
    if isinstance(images, (str, os.PathLike)):
        return path_items(images)
    # a PIL image is not iterable, an image array's or a tensor's rows are no items
    listed = isinstance(images, Iterable) and not (
        hasattr(images, 'shape') and getattr(images.dtype, 'kind', 'f') not in 'USO')
    images = list(images) if listed else [images]
    if all(isinstance(image, WorkItem) for image in images):
        return images
    if all(isinstance(image, (str, os.PathLike)) for image in images):
        return [item for image in images for item in path_items(image)]
    kinds = ', '.join(sorted({type(image).__name__ for image in images}))
    raise UserInputError(f'images: expected an image file or folder path, a list of paths, or '
                         f'WorkItems (mmdiffseg.apis.image_inputs.images_from_folder), got '
                         f'{"a list of " if listed else "a "}{kinds}; images in memory (arrays, '
                         'tensors, PIL images) go to the engine and generators directly '
                         '(docs/python_api.md)')


def inner_dataset_cfgs(ds_cfg: dict, where: str) -> List[Tuple[str, dict]]:
    """The datasets a dataset config lists images from, in order, each with its place in the
    config (for ``--cfg-options``): wrappers opened (``ConcatDataset``'s ``datasets``, all of
    them; ``RepeatDataset``'s and others' ``dataset``, once); a plain dataset is itself."""
    if 'datasets' in ds_cfg:
        return [pair for i, sub in enumerate(ds_cfg['datasets'])
                for pair in inner_dataset_cfgs(sub, f'{where}.datasets.{i}')]
    if 'dataset' in ds_cfg:
        return inner_dataset_cfgs(ds_cfg['dataset'], f'{where}.dataset')
    return [(where, ds_cfg)]


def _dataset_items(ds_cfg: dict, where: str, config: str, split: str):
    """Items, class names and ground-truth format of one (unwrapped) dataset config."""
    from ..preflight_data import (ELSEWHERE, check_dataset, list_dataset, listing_problem,
                                  reads_generated_labels)
    if reads_generated_labels(ds_cfg):
        images = (ds_cfg.get('data_prefix') or {}).get('img_path', '')
        raise UserInputError(
            f'the {split} dataset of {config} ({ds_cfg["type"]}) reads the labels this tool '
            f'makes, so it cannot list the images to label: give their folder instead '
            f'(IMAGES_DIR, e.g. {Path(ds_cfg.get("data_root") or "", images)}), or a config of '
            'the real data (its val or test split)')
    problems = check_dataset(ds_cfg, where)
    if problems:   # (this tool's --cfg-options are the generator's: the config is edited)
        elsewhere = (f'; or set data_root (and data_prefix) of {where} to where yours is, in '
                     f'{config} or a config that inherits it')
        raise UserInputError(
            f'the {split} data of {config} (--dataset-config) is not there (paths relative to '
            f'{Path.cwd()}): ' + '; '.join(f'{p.what} (fix: {p.fix.replace(ELSEWHERE, elsewhere)})'
                                           for p in problems))
    dataset, data_list, error = list_dataset(ds_cfg)
    if error is not None:
        problem = listing_problem(ds_cfg, where, error)
        raise UserInputError(f'the {split} data of {config} (--dataset-config): {problem.what} '
                             f'(fix: {problem.fix})') from error
    items = [WorkItem(Path(info['img_path']).stem,
                      dict(image=info['img_path'], gt=info.get('seg_map_path')),
                      source=info['img_path'])
             for info in data_list]
    if not items:
        listing = dataset.ann_file or dataset.data_prefix.get('img_path', dataset.data_root)
        raise UserInputError(f'the {split} dataset of {config} lists no images ({listing} is '
                             'empty)')
    return items, list(dataset.metainfo['classes']), GroundTruthFormat.of_dataset(dataset)


def images_from_dataset_config(config: str, split: str = 'train'):
    """Items (image and ground-truth paths), class names and ground-truth format
    (:class:`GroundTruthFormat`) of ``<split>_dataloader.dataset`` in an mmseg config, wrappers
    opened (:func:`inner_dataset_cfgs`); a missing or broken config, data that is not where it
    says, inner datasets of other classes or label formats, or one image id twice
    (:func:`.io.check_item_ids`) is a :class:`UserInputError`."""
    from mmengine.registry import init_default_scope

    from .builders import read_config
    cfg = read_config(config, 'dataset config', '--dataset-config')
    key = f'{split}_dataloader'
    if key not in cfg:
        raise UserInputError(f'{config} has no {key}; give --split train|val|test')
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    inner = inner_dataset_cfgs(cfg[key].dataset.to_dict(), f'{key}.dataset')
    if not inner:
        raise UserInputError(f'the {split} dataset of {config} wraps no dataset (datasets=[]): '
                             'list the datasets to label in it')
    listed = [(where, _dataset_items(ds_cfg, where, config, split)) for where, ds_cfg in inner]
    (first, (_, classes, gt_format)), items = listed[0], []
    for where, (own, own_classes, own_format) in listed:
        for what, value, expected in (('classes', own_classes, classes),
                                      ('label format', own_format, gt_format)):
            if value != expected:
                raise UserInputError(
                    f'the {split} datasets of {config} differ in their {what}: {first} has '
                    f'{expected}, {where} {value}; label them one at a time (a config whose '
                    f'{key}.dataset is one of them)')
        items += own
    check_item_ids(items)
    return items, classes, gt_format
