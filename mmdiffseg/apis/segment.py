"""One image or a folder -> label PNGs and overlay pictures, resumable (the pseudo-labelling path
with the same class names for every image)."""
from __future__ import annotations

from functools import lru_cache, partial
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..attention.images import WORK_SIZE, resize_rgb
from ..models.online_labeler import prompt_refusals
from .builders import (build_generator, check_model, check_names_given, class_list_arg,
                       complete_model_settings, job_header, load_engine, local_tokenizer)
from .folders import (MASK_DIR, OVERLAY_DIR, check_inputs_outside_output, encode_jpeg,
                      encode_label_png, label_palette, labelled_share, read_rgb,
                      record_path, split_path)
from .io import ItemFailed, ItemOutput, JobSummary, OverflowGuard, UserInputError, WorkItem
from .jobs import run_job
from .image_inputs import image_items
from .pseudo_label import labels_or_failures, stack_work_images
from .visualize import Overlayer


def read_image_pair(item: WorkItem, size: int = WORK_SIZE):
    """(the image at the working size, its original size, the image as a tensor: it reaches the
    main process through shared memory), in a loader process."""
    rgb = read_rgb(item.payload['image'])
    return resize_rgb(rgb, size), rgb.shape[:2], torch.from_numpy(rgb)


def stack_image_pairs(loaded: List[Tuple[np.ndarray, Tuple[int, int], torch.Tensor]]):
    """``(work images (B, 3, S, S), original sizes, original images)`` of a batch."""
    images, sizes = stack_work_images([(work, hw) for work, hw, _ in loaded])
    return images, sizes, [rgb for _, _, rgb in loaded]


@lru_cache(maxsize=4)
def _overlayer(classes: Optional[Tuple[str, ...]]) -> Overlayer:
    return Overlayer(classes)


def overlay_jpeg(classes: Optional[Tuple[str, ...]], rgb: np.ndarray, labels: np.ndarray) -> bytes:
    """The overlay picture of one image (drawn in a writer process, one visualiser each)."""
    return encode_jpeg(_overlayer(classes)(rgb, labels))


def segment(items: Sequence[WorkItem], out_dir, model: str, gen_cfg: Dict,
            names: Union[str, Sequence[str], None], batch_size: int = 4, device: str = 'cpu',
            dtype: str = 'float32', work_size: int = WORK_SIZE,
            workers: Optional[int] = None, compile_backend: Optional[str] = None,
            variant: Optional[str] = None) -> JobSummary:
    """Label every image of ``items`` (:func:`.image_inputs.image_items`: an image file or
    folder, a list of them, or work items) with the class names ``names`` (label set
    ``background`` + names; a string as ``--classes`` takes it, ``'voc'`` or ``'cat,dog'``;
    ``None`` = unlabelled DiffSeg segments) and draw overlays
    (``Overlays/<id>.jpg``); ``workers``: loader and writer processes (:func:`.jobs.run_job`);
    ``compile_backend``, ``variant``: see :func:`.load_engine`."""
    items = image_items(items)
    check_inputs_outside_output(items, out_dir, 'segments')
    model = check_model(model, variant)
    names = class_list_arg(names, 'names')
    classes = None if names is None else ['background'] + [n for n in names if n != 'background']
    generator = build_generator(gen_cfg, classes)
    check_names_given(generator, names, "names (the classes to find, e.g. ['cat', 'dog'] or "
                      "'voc')")
    present = None if classes is None else classes[1:]
    tokenizer = local_tokenizer(model) if present else None
    refusal = prompt_refusals(tokenizer, generator, [present])[0] if tokenizer else None
    if refusal:  # every image's prompt names every class: each would fail, after the load
        raise UserInputError(f'{refusal} (segment.py prompts every image with all the classes '
                             'given: --classes; nothing was written)')
    palette = label_palette(classes)
    header = job_header('segment', model, dtype, generator, classes, work_size=work_size,
                        variant=variant)
    overlay_classes = tuple(classes) if classes is not None else None

    def prepare():
        """The model (loaded while the loader processes read the first batches) and the GPU
        work; masks and overlays are encoded in the writer processes."""
        engine = load_engine(model, device, dtype, generator.capture_spec, work_size,
                             generator=generator, compile_backend=compile_backend, variant=variant)
        complete_model_settings(header, model)
        generator.to(engine.device)
        guard = OverflowGuard()

        def compute(batch, loaded):
            images, sizes, rgbs = loaded
            labels = labels_or_failures(engine, generator, images,
                                        [list(present) for _ in batch] if present else None,
                                        sizes, guard)
            return [lab if isinstance(lab, ItemFailed) else
                    ItemOutput({f'{MASK_DIR}/{it.id}.png': partial(encode_label_png, lab, palette),
                                f'{OVERLAY_DIR}/{it.id}.jpg': partial(
                                    overlay_jpeg, overlay_classes, rgb.numpy(), lab)},
                               dict(image=record_path(it.payload['image'], out_dir),
                                    labelled=labelled_share(lab)))
                    for it, rgb, lab in zip(batch, rgbs, labels)]
        return compute

    return run_job(items, partial(read_image_pair, size=work_size), None, out_dir, header,
                   batch_size=batch_size, split_file=split_path('segment'), workers=workers,
                   collate=stack_image_pairs, pin_memory=torch.device(device).type == 'cuda',
                   prepare=prepare)
