"""Looking at labels: overlays drawn by mmseg's ``SegLocalVisualizer`` and a contact sheet (a grid
of overlay thumbnails) of a generated folder, to judge a dataset at a glance."""
from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.logging import print_log
from mmengine.structures import PixelData
from mmseg.visualization import SegLocalVisualizer

from ..datasets.transforms import read_label_map
from .folders import (IGNORE_COLOR, IGNORE_INDEX, IMAGE_DIR, MASK_DIR, encode_jpeg, label_palette,
                      read_rgb, resolve_record_path)
from .io import ItemFailed, UserInputError, atomic_write
from .manifest import MANIFEST_NAME, manifest_files, read_manifest_file

_names = itertools.count()


def segment_classes(count: int = 255) -> List[str]:
    """Names for unlabelled segment ids (DiffSeg): ``'0'``, ``'1'``, ..."""
    return [str(i) for i in range(count)]


def label_meta(classes: Optional[Sequence[str]]) -> Dict[str, list]:
    """``dataset_meta`` (classes, palette: 256 entries) to draw labels of ``classes`` (None:
    segment ids) with ``SegLocalVisualizer``: 255 (unsure) in the colour the label PNGs give
    it, named ``'unsure'`` (mmseg leaves it undrawn, so it looks like black classes such as
    VOC's background)."""
    names = list(classes) if classes is not None else segment_classes()
    return with_unsure(dict(classes=names, palette=label_palette(classes)))


def with_unsure(meta: Dict) -> Dict[str, list]:
    """A ``dataset_meta`` padded to 256 entries: 255 (unsure) named ``'unsure'``, in the colour
    the label PNGs give it (:func:`label_meta`)."""
    classes, palette = list(meta['classes']), [list(c) for c in meta['palette']]
    gap = IGNORE_INDEX - len(classes)
    return dict(meta, classes=classes + [''] * gap + ['unsure'],
                palette=palette + [[0, 0, 0]] * gap + [list(IGNORE_COLOR)])


class Overlayer:
    """Draws label maps over images with ``SegLocalVisualizer`` (:func:`label_meta`)."""

    def __init__(self, classes: Optional[Sequence[str]], alpha: float = 0.5):
        meta = label_meta(classes)
        self.classes, self.palette = meta['classes'], meta['palette']
        self.visualizer = SegLocalVisualizer(name=f'mmdiffseg-overlay-{next(_names)}',
                                             alpha=alpha)
        self.visualizer.dataset_meta = meta

    def __call__(self, rgb: np.ndarray, labels: np.ndarray, with_labels: bool = True
                 ) -> np.ndarray:
        """The overlay, on every rank: the visualizer's drawing step itself, since its
        ``add_datasample`` and ``get_image`` draw on rank 0 only (a tool under torchrun). A
        one-pixel image is drawn twice side by side and cut back (mmseg's drawing indexes its
        colours with a one-element mask, which numpy reads as the index 1)."""
        if labels.size == 1:
            pair = self(np.repeat(rgb, 2, axis=1), np.repeat(labels, 2, axis=1), with_labels)
            return pair[:, :1]
        seg = PixelData(data=torch.from_numpy(labels.astype(np.int64))[None])
        return self.visualizer._draw_sem_seg(rgb.astype(np.uint8), seg, self.classes,
                                             self.palette, with_labels)


def finished_records(folder) -> Tuple[Dict, Dict[str, Dict]]:
    """A tool's output folder read, not resumed: the header of its manifest (or of a rank's,
    when a distributed run was stopped before merging them) and id -> record of every finished
    item of all its manifest files, the last record of an id winning as in a resume."""
    for _ in range(3):
        paths = manifest_files(folder)
        if not paths:
            raise UserInputError(f'{folder} has no {MANIFEST_NAME}: not a folder written by '
                                 'synthesize / pseudo_label / segment')
        try:
            files = [read_manifest_file(path) for path in paths]
            break
        except FileNotFoundError:  # the run merged its rank files meanwhile: list them again
            continue
    else:
        raise UserInputError(f'the manifest files of {folder} kept changing while being read (a '
                             'run merging its ranks\' files?): try again once it has ended')
    header, records = None, {}
    for found, lines, _ in files:
        header = header or found
        records.update((record['id'], record) for _, record in lines)
    if header is None:
        raise UserInputError(f'{paths[0]} is empty: no finished items to show')
    return header, records


def _folder_items(folder: Path, limit: int):
    """(id, image path, mask path) of a tool's output folder, in manifest order (image paths
    resolved from the folder, whatever the working directory), and the images of finished items
    that are not found (a folder moved away from its inputs); a stopped distributed run's rank
    manifests are read too."""
    header, records = finished_records(folder)
    items, unfound = [], []
    for record in records.values():
        mask = folder / MASK_DIR / f'{record["id"]}.png'
        image = folder / IMAGE_DIR / f'{record["id"]}.jpg'
        if not image.is_file() and record.get('image'):
            image = resolve_record_path(record['image'], folder)
        if mask.is_file() and image.is_file():
            items.append((record['id'], image, mask))
        elif mask.is_file():
            unfound.append(image)
        if len(items) == limit:
            break
    return header.get('classes'), items, unfound


def contact_sheet(folder, cols: int = 8, thumb: int = 160, max_items: int = 64,
                  legend: bool = True) -> np.ndarray:
    """An RGB grid of overlay thumbnails (``rows*thumb`` x ``cols*thumb``, each image's shape
    kept, its id written on it) of the first ``max_items`` items of a generated folder; ``cols``
    shrinks to the item count. With ``legend`` (and a folder of named classes) a strip below
    names the colour of each class shown (and of 'unsure'), at least :data:`LEGEND_WIDTH` wide
    (the grid is then padded on the right).
    ``cols``, ``thumb`` or ``max_items`` below 1 is a :class:`UserInputError` (a ValueError)."""
    for name, value in (('cols', cols), ('thumb', thumb), ('max_items', max_items)):
        if value < 1:
            raise UserInputError(f'contact_sheet: {name}={value}; pass {name} >= 1')
    folder = Path(folder)
    classes, items, unfound = _folder_items(folder, max_items)
    if unfound:
        where = (f'{len(unfound)} input image(s) of {folder} not found, e.g. {unfound[0]}: the '
                 'manifest names them relative to the folder; keep it beside its inputs')
        if not items:
            raise UserInputError(f'{where} (nothing to draw)')
        print_log(f'contact sheet: {where}; drawn without them', logger='current',
                  level=logging.WARNING)
    if not items:
        raise UserInputError(f'{folder} holds no finished items to show')
    overlay = Overlayer(classes)
    cols = min(cols, len(items))
    rows = math.ceil(len(items) / cols)
    sheet = np.zeros((rows * thumb, cols * thumb, 3), dtype=np.uint8)
    shown = set()
    for k, (item_id, image, mask) in enumerate(items):
        try:
            rgb, labels = read_rgb(image), read_label_map(str(mask))
        except (ItemFailed, OSError, ValueError, SyntaxError) as exc:  # damaged since written
            raise UserInputError(f'contact sheet of {folder}: cannot draw item {item_id!r} '
                                 f'({exc}); remove its label {mask} and rerun the tool to remake '
                                 'it') from exc
        (height, width), (rows_, cols_) = rgb.shape[:2], labels.shape
        if abs(height * cols_ - width * rows_) > max(height, width):  # not one pixel's rounding
            raise UserInputError(
                f'contact sheet of {folder}: item {item_id!r}: its image {image} is '
                f'{width}x{height} but its label {mask} {cols_}x{rows_}, another shape: one of '
                'them changed since the label was made; remove the label and rerun the tool to '
                'remake it')
        if (height, width) != labels.shape:  # a label at a lower resolution
            rgb = cv2.resize(rgb, labels.shape[::-1], interpolation=cv2.INTER_LINEAR)
        shown.update(np.unique(labels).tolist())
        tile = _letterboxed(overlay(rgb, labels, with_labels=False), thumb)
        _caption(tile, item_id)
        r, c = divmod(k, cols)
        sheet[r * thumb:(r + 1) * thumb, c * thumb:(c + 1) * thumb] = tile
    if not legend or classes is None:  # unlabelled segment ids: a colour names no class
        return sheet
    entries = [(overlay.classes[v], overlay.palette[v]) for v in sorted(shown)
               if v < len(overlay.classes) and overlay.classes[v]]
    strip = legend_strip(entries, max(sheet.shape[1], LEGEND_WIDTH))
    if strip.shape[1] > sheet.shape[1]:
        sheet = np.pad(sheet, ((0, 0), (0, strip.shape[1] - sheet.shape[1]), (0, 0)))
    return np.concatenate([sheet, strip])


#: the longest caption of a tile (characters of the Hershey font at 0.35)
CAPTION_CHARS = 24


def _caption(tile: np.ndarray, item_id: str) -> None:
    """``item_id`` at the tile's top; a long id keeps its end, where the names of a series differ
    (``holiday_2024_beach_0007``)."""
    text = item_id if len(item_id) <= CAPTION_CHARS else '..' + item_id[2 - CAPTION_CHARS:]
    cv2.putText(tile, text, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                cv2.LINE_AA)


#: the narrowest legend strip (px): a one-thumbnail sheet still names its classes legibly
LEGEND_WIDTH = 320
_ROW, _SWATCH, _FONT, _SCALE = 18, 12, cv2.FONT_HERSHEY_SIMPLEX, 0.4


def legend_strip(entries: Sequence, width: int) -> np.ndarray:
    """Rows of ``(name, RGB colour)`` entries, a swatch and the name each, wrapped at ``width``
    px (a name too long for one row is cut to fit)."""
    placed, x, y = [], 4, 0
    for name, color in entries:
        text = str(name).strip()
        while text and 4 + _SWATCH + 4 + cv2.getTextSize(text, _FONT, _SCALE, 1)[0][0] > width - 4:
            text = text[:-1]
        size = _SWATCH + 4 + cv2.getTextSize(text, _FONT, _SCALE, 1)[0][0]
        if x > 4 and x + size > width - 4:
            x, y = 4, y + _ROW
        placed.append((text, color, x, y))
        x += size + 12
    strip = np.full((y + _ROW + 4 if placed else 0, width, 3), 32, dtype=np.uint8)
    for text, color, x, y in placed:
        top = y + (_ROW - _SWATCH) // 2 + 2
        strip[top - 1:top + _SWATCH + 1, x - 1:x + _SWATCH + 1] = 160  # a frame: black shows
        strip[top:top + _SWATCH, x:x + _SWATCH] = color
        cv2.putText(strip, text, (x + _SWATCH + 4, y + _ROW - 3), _FONT, _SCALE,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return strip


def _letterboxed(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` shrunk into a ``size`` x ``size`` tile, its shape kept (black bars)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    tile = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    tile[top:top + h, left:left + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    return tile


def write_contact_sheet(folder, path, **kwargs) -> Path:
    """:func:`contact_sheet` of ``folder`` written to ``path`` (JPEG, atomically)."""
    atomic_write(path, encode_jpeg(contact_sheet(folder, **kwargs)))
    return Path(path)
