"""Real images -> label PNGs with a mask generator (iSeg by default), resumable.

Images come from a folder or from an mmseg dataset config; image-level labels (the class names in
each image) from a JSON file ``{"<id>": ["cat", "dog"], ...}`` or from ground-truth label maps
(benchmarks). DiffSeg without classes makes unlabelled segment ids. Output: the VOC folder layout of
:mod:`.folders` (``SegmentationClass/<id>.png``, split file, ``manifest.jsonl``).
"""
from __future__ import annotations

import logging
import os
from functools import partial
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.logging import print_log

from ..attention.images import WORK_SIZE, resize_rgb
from ..datasets.class_names import spelled_as
from ..datasets.transforms import ImageLabels, read_image_level_labels
from ..models.online_labeler import label_images, long_prompts, prompt_refusals
from ..preflight_data import unknown_names
from .builders import (build_generator, check_model, check_names_given, class_list_arg,
                       complete_model_settings, job_header, load_engine, local_tokenizer)
from .ground_truth import GroundTruthFormat
from .folders import (IGNORE_INDEX, IMAGE_SUFFIXES, MASK_DIR, check_inputs_outside_output,
                      encode_label_png, label_palette, labelled_share, list_images, read_rgb,
                      record_path, split_path)
from .io import (ItemFailed, ItemOutput, JobSummary, UserInputError, WorkItem, check_item_ids,
                 OverflowGuard)
from .jobs import BatchLoader, default_workers, run_job
from .manifest import MANIFEST_NAME


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
    # a tool's output folder inside (its manifest: contact sheets, overlays) holds no inputs
    nested = sorted(d.name for d in folder.iterdir() if d.is_dir() and list_images(d)
                    and not (d / MANIFEST_NAME).exists())
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


def path_items(path) -> List[WorkItem]:
    """An image file or every image in a folder (:func:`images_from_folder`)."""
    path = Path(path)
    if path.is_file():
        return [WorkItem(path.stem, dict(image=str(path)), source=str(path))]
    if not path.exists():
        raise UserInputError(f'{path}: no such image file or folder of images')
    return images_from_folder(path, whole='')


def image_items(images) -> List[WorkItem]:
    """The work items of the offline jobs' ``images`` argument: an image file or a folder of
    images (``str`` / ``Path``), a list of them, or work items as the tools make them
    (:func:`path_items`, :func:`images_from_folder`, :func:`images_from_dataset_config`)."""
    if isinstance(images, (str, os.PathLike)):
        return path_items(images)
    images = list(images)
    if all(isinstance(image, WorkItem) for image in images):
        return images
    if all(isinstance(image, (str, os.PathLike)) for image in images):
        return [item for image in images for item in path_items(image)]
    kinds = sorted({type(image).__name__ for image in images})
    raise UserInputError(f'images: expected an image file or folder path, a list of paths, or '
                         f'WorkItems (mmdiffseg.apis.pseudo_label.images_from_folder), got a list '
                         f'of {", ".join(kinds)}; arrays and tensors go to the engine and '
                         'generators directly (docs/python_api.md)')


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
    from ..preflight_data import (check_dataset, list_dataset, listing_problem,
                                  reads_generated_labels)
    if reads_generated_labels(ds_cfg):
        images = (ds_cfg.get('data_prefix') or {}).get('img_path', '')
        raise UserInputError(
            f'the {split} dataset of {config} ({ds_cfg["type"]}) reads the labels this tool '
            f'makes, so it cannot list the images to label: give their folder instead '
            f'(IMAGES_DIR, e.g. {Path(ds_cfg.get("data_root") or "", images)}), or a config of '
            'the real data (its val or test split)')
    problems = check_dataset(ds_cfg, where)
    if problems:
        raise UserInputError(
            f'the {split} data of {config} (--dataset-config) is not there (paths relative to '
            f'{Path.cwd()}): ' + '; '.join(f'{p.what} (fix: {p.fix})' for p in problems))
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


def labels_from_file(path) -> Dict[str, List[str]]:
    """Image-level labels from JSON: id -> list of class names."""
    try:
        return read_image_level_labels(path)
    except OSError as exc:
        raise UserInputError(f'cannot read image-level labels {path}: {exc}') from exc
    except ValueError as exc:
        raise UserInputError(str(exc)) from exc


#: ground-truth maps per read task; fewer maps than this are read in this process
GT_CHUNK = 64


def _classes_present(item: WorkItem, classes: Sequence[str], ignore: Sequence[str],
                     gt_format: GroundTruthFormat) -> List[str]:
    """The names of the classes in ``item``'s ground-truth map (in a loader process)."""
    try:
        present = np.unique(gt_format.read(item.payload['gt'], classes))
    except UserInputError as exc:
        raise ItemFailed(str(exc)) from exc
    names = [classes[i] for i in present if i != IGNORE_INDEX]
    return [n for n in names if n not in ignore]


def labels_from_ground_truth(gt_paths: Dict[str, str], classes: Sequence[str],
                             ignore: Sequence[str] = ('background',),
                             gt_format: Optional[GroundTruthFormat] = None,
                             workers: Optional[int] = None) -> Dict[str, List[str]]:
    """Image-level labels read off ground-truth label maps (the classes present, in index order,
    without ``ignore`` names and 255), read as ``gt_format`` says (default: plain class indices;
    ADE20K's annotations need ``reduce_zero_label``), in ``workers`` loader processes (``None``:
    :func:`.jobs.default_workers`; ``0``, or fewer than :data:`GT_CHUNK` maps: here). A dataset's
    maps take 3 ms each to read: 10k of them half a minute in one process.

    Raises:
        UserInputError: a map that is unreadable or holds values outside ``classes``.
    """
    gt_format = gt_format or GroundTruthFormat()
    items = [WorkItem(item_id, dict(gt=path)) for item_id, path in gt_paths.items()]
    batches = [list(range(i, min(i + GT_CHUNK, len(items))))
               for i in range(0, len(items), GT_CHUNK)]
    workers = default_workers() if workers is None else workers
    read = partial(_classes_present, classes=list(classes), ignore=tuple(ignore),
                   gt_format=gt_format)
    labels = {}
    with BatchLoader(items, batches, read, workers=workers if len(batches) > 1 else 0) as loaded:
        for batch in loaded:
            if batch.failed:
                raise UserInputError(batch.failed[0][1])
            labels.update(zip((item.id for item in batch.items), batch.data))
    return labels


def read_work_image(item: WorkItem, size: int = WORK_SIZE) -> Tuple[np.ndarray, Tuple[int, int]]:
    """An item's image at the working size and its original ``(H, W)`` (in a loader process)."""
    rgb = read_rgb(item.payload['image'])
    return resize_rgb(rgb, size), rgb.shape[:2]


def stack_work_images(loaded: List[Tuple[np.ndarray, Tuple[int, int]]]):
    """A batch of :func:`read_work_image`: one ``(B, 3, S, S)`` uint8 tensor (pinned on CUDA,
    so it reaches the GPU in one copy) and the original sizes."""
    images = torch.from_numpy(np.stack([image for image, _ in loaded]))
    return images.permute(0, 3, 1, 2).contiguous(), [hw for _, hw in loaded]


def label_outputs(batch: Sequence[WorkItem], labels: Sequence, names: Optional[List[List[str]]],
                  palette, out_dir) -> List:
    """The label PNG (encoded in a writer process) and manifest record of each item (an
    :class:`ItemFailed` of :func:`labels_or_failures` as it is)."""
    return [lab if isinstance(lab, ItemFailed) else
            ItemOutput({f'{MASK_DIR}/{it.id}.png': partial(encode_label_png, lab, palette)},
                       dict(image=record_path(it.payload['image'], out_dir),
                            classes=names[i] if names else None, labelled=labelled_share(lab)))
            for i, (it, lab) in enumerate(zip(batch, labels))]


def labels_or_failures(engine, generator, images: torch.Tensor, names, sizes,
                       guard: OverflowGuard) -> List:
    """:func:`label_images` of a loaded batch, an image whose maps overflow failing alone
    (``guard``: the run's :class:`~.io.OverflowGuard`)."""
    def run(index: List[int]) -> List:
        return label_images(engine, generator, images[index],
                            None if names is None else [names[i] for i in index],
                            [sizes[i] for i in index])
    return guard(run, len(images))


MISSING_LABELS_FIX = ('; give each an entry in the labels (--labels FILE: "<image name>": '
                      '["<class>", ...], [] for background only), or leave those images out')


def file_name_keys(missing: Sequence[str], image_labels: Dict[str, list]) -> Optional[str]:
    """Why image ids are missing from image-level labels keyed another way (a file name or
    path), with the fix; None where that is not why."""
    keyed = {Path(key).stem: key for key in image_labels
             if Path(key).suffix or Path(key).name != key}
    found = [keyed[i] for i in missing if i in keyed]
    if not found:
        return None
    key = found[0]
    if Path(key).name != key:
        return (f'the labels are keyed by file paths (e.g. {key!r}): key them by the image name '
                f'alone, without its folder or extension ({Path(key).stem!r})')
    return (f'the labels are keyed by file names (e.g. {key!r}): key them by the image '
            f'name without its extension ({Path(key).stem!r})')


def _warn_no_classes(empty: List[str], classes: Sequence[str]) -> None:
    """Name the images whose image-level labels list no class: nothing to find in them, so
    their labels are background everywhere (unsure, 255, without a background class)."""
    if empty:
        made = 'background' if 'background' in classes else f'unsure ({IGNORE_INDEX})'
        print_log(f'{len(empty)} image(s) have image-level labels without any class (e.g. '
                  f'{", ".join(empty[:3])}): their labels will be {made} everywhere; list their '
                  'classes, or leave them out', logger='current', level=logging.WARNING)


def _warn_long_prompts(tokenizer, generator, class_names: Dict[str, List[str]]) -> None:
    """Say before the work which images' prompts the text encoder reads cut (the model's
    tokenizer is here), and how many of them lose a class (they will fail)."""
    long = long_prompts(tokenizer, generator, class_names) if tokenizer is not None else []
    if not long:
        return
    failing = sum(why is not None for why in prompt_refusals(
        tokenizer, generator, [class_names[image_id] for image_id, _ in long]))
    print_log(f'{len(long)} image(s) have prompts longer than the {tokenizer.model_max_length} '
              f'tokens the text encoder reads (e.g. {long[0][0]}: {long[0][1]} tokens): what '
              f'follows is cut, as the released code truncates; {failing} of them lose a class '
              "and fail, the others lose the template's end (its words after the classes). "
              'Name fewer classes per image or use a shorter prompt_template to keep them whole',
              logger='current', level=logging.WARNING)


def pseudo_label(items: Sequence[WorkItem], out_dir, model: str, gen_cfg: Dict,
                 classes: Union[str, Sequence[str], None],
                 image_labels: Optional[Dict[str, List[str]]],
                 batch_size: int = 4, device: str = 'cpu', dtype: str = 'float32',
                 split: str = 'train', work_size: int = WORK_SIZE,
                 workers: Optional[int] = None,
                 compile_backend: Optional[str] = None,
                 variant: Optional[str] = None) -> JobSummary:
    """Label ``items`` into ``out_dir``.

    Args:
        items: the images (:func:`image_items`: an image file or folder, a list of them, or
            work items, e.g. of :func:`images_from_dataset_config`).
        gen_cfg: generator config (``type`` + options); built with ``classes``.
        classes: the label set (indices of the PNGs): names, or a string as ``--classes``
            takes it (``'voc'``, ``'cat,dog'``); ``None`` only for unlabelled DiffSeg.
        image_labels: id -> class names present; ``None`` for unlabelled DiffSeg.
        workers: loader and writer processes (:func:`.jobs.run_job`; ``None``: the default).
        compile_backend, variant: the U-Net's ``torch.compile`` backend and the weights variant
            to load (:func:`.load_engine`).

    Raises:
        UserInputError: before any work, for a missing model, an unknown class name, or an
            image without image-level labels.
    """
    items = image_items(items)
    check_inputs_outside_output(items, out_dir, 'labels')
    model = check_model(model, variant)
    classes = class_list_arg(classes, 'classes')
    generator = build_generator(gen_cfg, classes)
    check_names_given(generator, image_labels, 'image_labels (image id -> the class names in it)')
    if image_labels is not None and not isinstance(image_labels, Mapping):
        raise UserInputError(f'image_labels: expected a dict of image id -> the class names in '
                             f'it, got a {type(image_labels).__name__}')
    if image_labels is not None:
        image_labels = ImageLabels(image_labels)   # (respelled below; the caller's kept)
        if classes is None:
            raise UserInputError('image-level labels need --classes (the label set)')
        missing = [it.id for it in items if it.id not in image_labels]
        if missing:
            keyed = file_name_keys(missing, image_labels)
            raise UserInputError(f'{len(missing)} image(s) have no image-level labels, e.g. '
                                 f'{missing[:5]}' + (f'; {keyed}' if keyed else MISSING_LABELS_FIX))
        for it in items:
            image_labels[it.id] = spelled_as(image_labels[it.id], classes)
        unknown = unknown_names({it.id: image_labels[it.id] for it in items}, classes)
        if unknown:
            raise UserInputError(f'the image-level labels hold {unknown[0]} unknown class '
                                 f'name(s): {unknown[1]}. Fix: correct them ({unknown[2]}), or '
                                 f'pass the --classes they name; the classes: {list(classes)}')
        _warn_no_classes([it.id for it in items if not image_labels[it.id]], classes)
        _warn_long_prompts(local_tokenizer(model), generator,
                           {it.id: image_labels[it.id] for it in items})
        # an item is redone when its class names change (recorded as ``classes``)
        items = [WorkItem(it.id, it.payload, it.source,
                          dict(it.inputs, classes=image_labels[it.id])) for it in items]
    palette = label_palette(classes)
    header = job_header('pseudo_label', model, dtype, generator, classes, work_size=work_size,
                        variant=variant)

    def prepare():
        """The model (loaded while the loader processes read the first batches) and the GPU
        work."""
        engine = load_engine(model, device, dtype, generator.capture_spec, work_size,
                             generator=generator, compile_backend=compile_backend, variant=variant)
        complete_model_settings(header, model)
        generator.to(engine.device)
        guard = OverflowGuard()

        def compute(batch, loaded):
            images, sizes = loaded
            if image_labels is None:
                return label_outputs(batch, labels_or_failures(engine, generator, images, None,
                                                               sizes, guard),
                                     None, palette, out_dir)
            names = [image_labels[it.id] for it in batch]
            refused = prompt_refusals(engine.tokenizer, generator, names)
            keep = [i for i, why in enumerate(refused) if why is None]
            if len(keep) < len(batch):  # those images fail (named, counted); the rest go on
                images, sizes, names = images[keep], [sizes[i] for i in keep], \
                    [names[i] for i in keep]
            labels = labels_or_failures(engine, generator, images, names, sizes, guard) \
                if keep else []
            made = iter(label_outputs([batch[i] for i in keep], labels, names, palette, out_dir))
            return [ItemFailed(why) if why else next(made) for why in refused]
        return compute

    return run_job(items, partial(read_work_image, size=work_size), None, out_dir, header,
                   batch_size=batch_size, split_file=split_path(split), workers=workers,
                   collate=stack_work_images, pin_memory=torch.device(device).type == 'cuda',
                   prepare=prepare)
