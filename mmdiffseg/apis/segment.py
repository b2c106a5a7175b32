"""One image or a folder -> label PNGs and overlay pictures, resumable (the pseudo-labelling path
with the same class names for every image)."""
from __future__ import annotations

from pathlib import Path
from functools import partial
from typing import Dict, List, Optional, Sequence

from .builders import build_generator, check_model, job_header, load_engine
from .folders import (MASK_DIR, OVERLAY_DIR, encode_jpeg, encode_label_png, list_images,
                      palette_for, read_rgb, record_path, split_path)
from .io import (ItemOutput, JobSummary, UserInputError, WorkItem, check_resumable, run_job)
from ..models.online_labeler import label_images
from .pseudo_label import WORK_SIZE, to_work_size
from .visualize import Overlayer, segment_classes


def segment_items(path) -> List[WorkItem]:
    """An image file or every image in a folder."""
    path = Path(path)
    if path.is_file():
        return [WorkItem(path.stem, dict(image=str(path)))]
    if path.is_dir():
        items = [WorkItem(p.stem, dict(image=str(p))) for p in list_images(path)]
        if items:
            return items
    raise UserInputError(f'{path}: no image file or folder of images')


def segment(items: Sequence[WorkItem], out_dir, model: str, gen_cfg: Dict,
            names: Optional[Sequence[str]], batch_size: int = 4, device: str = 'cpu',
            dtype: str = 'float32', work_size: int = WORK_SIZE) -> JobSummary:
    """Label every image with the class names ``names`` (label set ``background`` + names;
    ``None`` = unlabelled DiffSeg segments) and draw overlays (``Overlays/<id>.jpg``)."""
    model = check_model(model)
    classes = None if names is None else ['background'] + [n for n in names if n != 'background']
    generator = build_generator(gen_cfg, classes)
    present = None if classes is None else classes[1:]
    palette = palette_for(classes if classes is not None else segment_classes())
    header = job_header('segment', model, dtype, generator, classes, work_size=work_size)
    check_resumable(out_dir, header)
    engine = load_engine(model, device, dtype, generator.capture_spec, work_size)
    generator.to(engine.device)
    overlay = Overlayer(classes)

    def draw(rgb, labels) -> bytes:
        return encode_jpeg(overlay(rgb, labels))

    def load(item):
        rgb = read_rgb(item.payload['image'])
        return rgb, to_work_size(rgb, work_size)

    def compute(batch, loaded):
        labels = label_images(engine, generator, [small for _, small in loaded],
                             [list(present) for _ in batch] if present else None,
                             [rgb.shape[:2] for rgb, _ in loaded])
        return [ItemOutput({f'{MASK_DIR}/{it.id}.png': partial(encode_label_png, lab, palette),
                            f'{OVERLAY_DIR}/{it.id}.jpg': partial(draw, rgb, lab)},
                           dict(image=record_path(it.payload['image'], out_dir)))
                for it, (rgb, _), lab in zip(batch, loaded, labels)]

    return run_job(items, load, compute, out_dir, header, batch_size=batch_size,
                   split_file=split_path('segment'))
