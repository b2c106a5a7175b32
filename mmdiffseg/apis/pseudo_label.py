"""Real images -> label PNGs with a mask generator (iSeg by default), resumable.

Images come from a folder or from an mmseg dataset config (:mod:`.image_inputs`); image-level
labels (the class names in each image) from a JSON file ``{"<id>": ["cat", "dog"], ...}`` or from
ground-truth label maps (benchmarks). DiffSeg without classes makes unlabelled segment ids.
Output: the VOC folder layout of :mod:`.folders` (``SegmentationClass/<id>.png``, split file,
``manifest.jsonl``).
"""
from __future__ import annotations

import logging
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
from .folders import (IGNORE_INDEX, MASK_DIR, check_inputs_outside_output, encode_label_png,
                      label_palette, labelled_share, read_rgb, record_path, split_path)
# (all but image_items imported here for scripts written to the docs before they moved)
from .image_inputs import (image_items, images_from_dataset_config,  # noqa: F401
                           images_from_folder, inner_dataset_cfgs, path_items)
from .io import ItemFailed, ItemOutput, JobSummary, OverflowGuard, UserInputError, WorkItem
from .jobs import BatchLoader, default_workers, run_job


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
        items: the images (:func:`.image_inputs.image_items`: an image file or folder, a list
            of them, or work items, e.g. of :func:`.image_inputs.images_from_dataset_config`).
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
