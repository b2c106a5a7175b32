"""The VOC-style folder the offline tools write and read.

``JPEGImages/<id>.jpg`` (synthesised images), ``SegmentationClass/<id>.png`` (palette PNG, class
indices, 255 = unsure), ``ImageSets/Segmentation/<split>.txt`` and ``manifest.jsonl``: the layout
stock ``PascalVOCDataset`` / ``BaseSegDataset`` configs read (``img_suffix='.jpg'``,
``seg_map_suffix='.png'``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import List, Sequence

import numpy as np
from mmseg.datasets import PascalVOCDataset
from PIL import Image, UnidentifiedImageError

from .io import ItemSkipped

IMAGE_DIR = 'JPEGImages'
MASK_DIR = 'SegmentationClass'
OVERLAY_DIR = 'Overlays'
IGNORE_INDEX = 255
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
#: colour of unsure pixels, as in VOC's own PNGs
IGNORE_COLOR = (224, 224, 192)


def split_path(split: str = 'train') -> str:
    return f'ImageSets/Segmentation/{split}.txt'


def palette_for(classes: Sequence[str]) -> List[List[int]]:
    """One RGB colour per class: mmseg's VOC palette for VOC's classes (any prefix of its list,
    matched by name), fixed pseudo-random colours otherwise."""
    voc = dict(zip(PascalVOCDataset.METAINFO['classes'], PascalVOCDataset.METAINFO['palette']))
    rng = np.random.RandomState(42)
    random = rng.randint(0, 256, size=(len(classes), 3)).tolist()
    colors = [list(voc.get(name, random[i])) for i, name in enumerate(classes)]
    if classes and classes[0] == 'background':
        colors[0] = [0, 0, 0]
    return colors


def encode_label_png(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> bytes:
    """``(H, W)`` class indices (255 = unsure) as a palette PNG (the indices are the pixels)."""
    if labels.ndim != 2:
        raise ValueError(f'labels must be (H, W), got shape {labels.shape}')
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f'labels must lie in 0..255, got {labels.min()}..{labels.max()}')
    flat = [0] * (256 * 3)
    for i, color in enumerate(palette[:255]):
        flat[3 * i:3 * i + 3] = list(color)
    flat[3 * IGNORE_INDEX:] = list(IGNORE_COLOR)
    img = Image.fromarray(labels.astype(np.uint8), mode='P')
    img.putpalette(flat)
    buf = io.BytesIO()
    img.save(buf, format='PNG')
    return buf.getvalue()


def encode_jpeg(rgb: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb.astype(np.uint8), mode='RGB').save(buf, format='JPEG', quality=quality)
    return buf.getvalue()


def read_rgb(path) -> np.ndarray:
    """An image file as ``(H, W, 3)`` uint8 RGB; :class:`ItemSkipped` naming the file when it is
    missing, truncated or not an image."""
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert('RGB')).copy()
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise ItemSkipped(f'cannot read image {path}: {exc}') from exc


def read_label_png(path) -> np.ndarray:
    """A label PNG (palette or grey) as ``(H, W)`` uint8 indices."""
    with Image.open(path) as img:
        if img.mode not in ('P', 'L', 'I', 'I;16'):
            raise ValueError(f'{path}: a label map must be a palette or grey PNG, not {img.mode}')
        return np.asarray(img).astype(np.uint8)


def list_images(folder, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> List[Path]:
    """Image files directly in ``folder`` (sorted by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())
