"""The VOC-style folder the offline tools write and read.

``JPEGImages/<id>.jpg`` (synthesised images), ``SegmentationClass/<id>.png`` (palette PNG, class
indices, 255 = unsure), ``ImageSets/Segmentation/<split>.txt`` and ``manifest.jsonl``: the layout
stock ``PascalVOCDataset`` / ``BaseSegDataset`` configs read (``img_suffix='.jpg'``,
``seg_map_suffix='.png'``).
"""
from __future__ import annotations

import glob
import hashlib
import io
import itertools
import os
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..attention.images import decode_rgb
from .io import ItemFailed, UserInputError
from .manifest import MANIFEST_NAME, manifest_files

IMAGE_DIR = 'JPEGImages'
MASK_DIR = 'SegmentationClass'
OVERLAY_DIR = 'Overlays'
#: ``tools/segment.py``'s contact sheet in its ``--out``
SHEET_NAME = 'contact_sheet.jpg'
IGNORE_INDEX = 255
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.jpe', '.jfif', '.png', '.bmp', '.webp', '.tif', '.tiff')
#: colour of unsure pixels, as in VOC's own PNGs
IGNORE_COLOR = (224, 224, 192)
#: the largest image read, in pixels: OpenCV's (``CV_IO_MAX_IMAGE_PIXELS``), which mmseg's
#: ``LoadImageFromFile`` reads training images with (Pillow stops at 179 Mpx by default)
MAX_IMAGE_PIXELS = 2 ** 30


def _share(count: int, size: int) -> float:
    """``count / size`` as the manifest records shares: 4 decimals, and 0 only for none (a few
    pixels give 0.0001)."""
    return max(round(count / max(size, 1), 4), 0.0001) if count else 0.0


def labelled_share(labels: np.ndarray) -> float:
    """The share of a label map's pixels that hold a label (not :data:`IGNORE_INDEX`), as the
    manifest records it (``labelled``; 0 only for a label that is all unsure)."""
    return _share(np.count_nonzero(labels != IGNORE_INDEX), labels.size)


def pixel_share(labels: np.ndarray, value: int) -> float:
    """The share of a label map's pixels that hold ``value`` (a synthetic mask's own class:
    ``class_share`` in the manifest; 0 for a mask without a pixel of it)."""
    return _share(np.count_nonzero(labels == value), labels.size)


def split_path(split: str = 'train') -> str:
    return f'ImageSets/Segmentation/{split}.txt'


def palette_for(classes: Sequence[str]) -> List[List[int]]:
    """One RGB colour per class, by name, so a class keeps its colour in every tool and list:
    the palette of the mmseg dataset whose classes these are (its whole list, else the first of
    VOC, Cityscapes, ADE20K, ... that has every name but ``'background'``), else VOC's colour of
    a VOC name and a colour made from the name for the others; ``'background'`` is black where
    that dataset has none. Names compare without surrounding spaces (ADE20K's ``'bed '``)."""
    from .ground_truth import CLASS_SET_DATASETS  # (imports this module)
    names = [str(name).strip() for name in classes]
    palettes = [{str(n).strip(): list(c) for n, c in zip(d.METAINFO['classes'],
                                                         d.METAINFO['palette'])}
                for d in CLASS_SET_DATASETS.values() if d.METAINFO.get('palette')]
    wanted = set(names) - {'background'}
    exact = [p for p in palettes if list(p) == names]
    chosen = (exact or [p for p in palettes if wanted <= set(p)] or [palettes[0]])[0]
    return [chosen.get(name) or ([0, 0, 0] if name == 'background' else _name_color(name))
            for name in names]


def label_palette(classes: Optional[Sequence[str]]) -> List[List[int]]:
    """The colours of label values: :func:`palette_for` ``classes``, or for unlabelled segment
    ids (``None``, DiffSeg) :func:`segment_palette`."""
    return segment_palette() if classes is None else palette_for(classes)


def segment_palette() -> List[List[int]]:
    """Colours of segment ids 0..254, far apart (hashed names put ids 5 and 13 18 RGB units
    apart): PASCAL VOC's bit-interleaved colour map from its colour 1 (its 0, black, is VOC's
    background; its 255 is the unsure colour, so id 254 takes the black)."""
    def pascal(index: int) -> List[int]:
        rgb = [0, 0, 0]
        for bit in range(7, -1, -1):
            for channel in range(3):
                rgb[channel] |= ((index >> channel) & 1) << bit
            index >>= 3
        return rgb
    return [pascal(i) for i in range(1, IGNORE_INDEX)] + [pascal(0)]


def _name_color(name: str) -> List[int]:
    """A colour made from a class name (the same in every process and list)."""
    return list(hashlib.sha1(name.encode()).digest()[:3])


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
    """An image file as ``(H, W, 3)`` uint8 RGB, decoded by the decoder of mmseg's
    ``LoadImageFromFile`` (:func:`~mmdiffseg.attention.images.decode_rgb`), so labels line up
    with the trained image whatever the file holds (EXIF or XMP orientation, alpha, CMYK...).
    :class:`ItemFailed` names a file that is missing or that OpenCV cannot decode, and says why
    for what Pillow's look at the header explains (:func:`opencv_refusal`, too many pixels). A
    JPEG cut short in its data is what OpenCV makes of it, as in training (OpenCV 5: no image,
    so a failed item; OpenCV 4: the part there)."""
    if Path(path).is_symlink() and not Path(path).exists():
        raise ItemFailed(f'cannot read image {path}: it links to {os.readlink(path)}, which is '
                         'not there (a drive not mounted, a folder moved?)')
    try:
        with open_image(path) as img:
            refusal = opencv_refusal(img)
    except Image.DecompressionBombError as exc:
        raise ItemFailed(f'cannot read image {path}: {TOO_LARGE}') from exc
    except (UnidentifiedImageError, SyntaxError, ValueError):
        refusal = None  # not Pillow's to judge: OpenCV decodes it or names it below
    except OSError as exc:
        raise ItemFailed(f'cannot read image {path}: {exc}') from exc
    if refusal:
        raise ItemFailed(f'cannot read image {path}: {refusal}')
    try:
        return decode_rgb(Path(path).read_bytes(), path)
    except OSError as exc:
        raise ItemFailed(f'cannot read image {path}: {exc}') from exc
    except ValueError as exc:
        raise ItemFailed(f'{exc}{_pillow_reason(path)}') from exc


def _pillow_reason(path) -> str:
    """What Pillow says of a file OpenCV could not decode (e.g. "image file is truncated")."""
    try:
        with open_image(path) as img:
            img.load()
    except Exception as exc:  # noqa: B902  (any reason is worth naming)
        return f' (Pillow: {exc})'
    return ''


#: why an image :func:`open_image` refuses cannot be read
TOO_LARGE = (f'more than the {MAX_IMAGE_PIXELS} pixels OpenCV (so mmseg\'s '
             'LoadImageFromFile) reads; split or shrink it')


def allow_opencv_sized_images() -> None:
    """Let Pillow open images up to :data:`MAX_IMAGE_PIXELS` (its own limit is lower); a larger
    one raises ``Image.DecompressionBombError`` (:data:`TOO_LARGE`)."""
    Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_IMAGE_PIXELS // 2)  # 2x: error


def open_image(path) -> Image.Image:
    """``Image.open`` up to :data:`MAX_IMAGE_PIXELS` (:func:`allow_opencv_sized_images`)."""
    allow_opencv_sized_images()
    return Image.open(path)


def opencv_refusal(img: Image.Image) -> Optional[str]:
    """Why OpenCV, and so mmseg's ``LoadImageFromFile``, does not read the opened image ``img``
    that Pillow reads (32-bit samples: Pillow's mode ``I`` holds signed 16-bit TIFFs too, which
    OpenCV reads), with the fix; None when it does."""
    if img.mode == 'F' or (img.mode == 'I' and img.format == 'TIFF' and _tiff_bits(img) > 16):
        return (f'32-bit samples ({img.mode}), which OpenCV and so mmseg\'s LoadImageFromFile do '
                'not read; convert it to 8 or 16 bits per sample')
    return None


def _tiff_bits(img: Image.Image) -> int:
    """The bits per sample of an opened TIFF (its BitsPerSample tag; 32 where it has none)."""
    bits = img.tag_v2.get(258, 32)
    return max(bits) if isinstance(bits, tuple) else int(bits)


def label_indices(labels: np.ndarray, path) -> np.ndarray:
    """Decoded label-map pixels as ``(H, W)`` uint8 indices; a ``ValueError`` naming ``path``
    for a colour image (several values per pixel) or values past 255 (a 16-bit file), which a
    cast to uint8 would turn into other classes."""
    if labels.ndim != 2:
        raise ValueError(f'{path}: a label map must be a palette or grey PNG (one class index '
                         f'per pixel), not an image of {labels.shape[-1]} channels')
    if labels.size and labels.max() > 255:
        raise ValueError(f'{path}: label values up to {labels.max()}; label maps hold 0..255, '
                         '255 = unsure (save an 8-bit grey or palette PNG; segment ids: renumber '
                         'them below 255, np.unique(ids, return_inverse=True))')
    return labels.astype(np.uint8)


def record_path(path, folder) -> str:
    """How a manifest records an input file: relative to the output ``folder`` (POSIX
    separators), so the record resolves from any working directory and still does when the
    folder and the inputs move together."""
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()


def resolve_record_path(value: str, folder) -> Path:
    """A path read from a manifest record of ``folder``: relative to the folder
    (:func:`record_path`); records of older runs were relative to where that run started, so
    such a path is tried as given when it is not found beside the folder."""
    beside = Path(folder) / value
    if beside.exists() or not Path(value).exists():
        return beside
    return Path(value)


def list_images(folder, suffixes: Sequence[str] = IMAGE_SUFFIXES) -> List[Path]:
    """Image files directly in ``folder`` (sorted by name), and links to images whose target is
    gone (an unmounted drive: named as failed items, not left out unsaid); hidden files
    (``.name``: macOS's ``._IMG_0001.JPG`` beside each copied photo) are not images."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes
                  and (p.is_file() or p.is_symlink() and not p.exists())
                  and not p.name.startswith('.'))


def same_name_image(path) -> Optional[Path]:
    """An image with the name of the missing image file ``path`` and another suffix (``x.JPG``
    for ``x.jpg``); None where there is none."""
    path = Path(path)
    return next((p for p in sorted(path.parent.glob(glob.escape(path.stem) + '.*'))
                 if p.suffix.lower() in IMAGE_SUFFIXES and p != path), None)


def check_inputs_outside_output(items, out_dir, tail: str) -> None:
    """Refuse input images (``items``' payload ``image``) in ``out_dir`` or its
    ``SegmentationClass/`` / ``Overlays/``: the run would overwrite them (its label PNGs), or a
    rerun would take its own pictures (``contact_sheet.jpg``, overlays) as inputs; and ground
    truth (payload ``gt``) in its ``SegmentationClass/``, which the label PNGs would replace.
    ``tail``: the name of the suggested other folder (``<input folder>_<tail>``)."""
    out = Path(out_dir).resolve()
    written = {out, out / OVERLAY_DIR, out / MASK_DIR}
    for folder in sorted({Path(it.payload['image']).parent for it in items}):
        if folder.resolve() in written:
            raise UserInputError(
                f'the input images in {folder} lie in a folder this run writes (--out '
                f'{out_dir}): it would overwrite them (label PNGs), or a rerun take its outputs '
                f'(contact_sheet.jpg, overlays) as inputs. Give --out another folder, e.g. '
                f'--out {folder.resolve()}_{tail}')
    check_ground_truth_outside_output([it.payload['gt'] for it in items if it.payload.get('gt')],
                                      out_dir, tail)


def check_ground_truth_outside_output(paths, out_dir, tail: str) -> None:
    """Refuse ground-truth files (``--dataset-config``'s seg maps, ``--labels-from-gt GT_DIR``'s
    maps) in ``out_dir``'s ``SegmentationClass/``, which the label PNGs would replace."""
    out = Path(out_dir).resolve()
    for folder in sorted({Path(path).parent for path in paths}):
        if folder.resolve() == out / MASK_DIR:
            raise UserInputError(
                f'the ground truth in {folder} lies where this run writes its label PNGs (--out '
                f'{out_dir}): they would replace it. Give --out another folder, e.g. '
                f'--out {out}_{tail}')


#: the files each offline tool writes into its ``--out`` besides its manifest and split file, by
#: the ``tool`` of its job header (``{}``: an item's id)
TOOL_OUTPUTS = {'pseudo_label': (f'{MASK_DIR}/{{}}.png',),
                'segment': (f'{MASK_DIR}/{{}}.png', f'{OVERLAY_DIR}/{{}}.jpg', SHEET_NAME),
                'synthesize': (f'{IMAGE_DIR}/{{}}.jpg', f'{MASK_DIR}/{{}}.png')}


def files_in_the_way(folder, tool: Optional[str], ids: Sequence[str],
                     split_file: Optional[str] = None, most: int = 2) -> List[str]:
    """Up to ``most`` files already in ``folder`` (paths relative to it) that a job of ``tool``
    over the item ``ids`` would replace: its ``split_file`` and its :data:`TOOL_OUTPUTS` (each
    sub-folder listed once, not a look-up per item)."""
    patterns = TOOL_OUTPUTS.get(tool, ())
    fixed = [rel for rel in [split_file] * bool(split_file) + [p for p in patterns if '{}' not in p]
             if os.path.lexists(os.path.join(folder, rel))]
    listed = {}

    def present(rel: str) -> bool:
        sub, name = os.path.split(rel)
        if sub not in listed:
            try:
                listed[sub] = set(os.listdir(os.path.join(folder, sub)))
            except OSError:  # not there (or not a folder): nothing in the way
                listed[sub] = set()
        return name in listed[sub]
    per_item = (p.format(i) for i in ids for p in patterns if '{}' in p)
    return list(itertools.islice(itertools.chain(fixed, filter(present, per_item)), most))


def foreign_folder_refusal(folder, tool: Optional[str], ids: Sequence[str],
                           split_file: Optional[str] = None) -> Optional[str]:
    """Why a job must not write into ``folder``: it holds files the job would replace
    (:func:`files_in_the_way`) and no manifest, so it is not a job folder to resume (a dataset,
    a folder of the user's); None when it may."""
    if manifest_files(Path(folder)):
        return None
    found = files_in_the_way(folder, tool, ids, split_file)
    if not found:
        return None
    return (f'--out {folder} is not a job folder (it has no {MANIFEST_NAME} to resume) and '
            f'already holds files this run would replace, e.g. {", ".join(found)}: give '
            'another --out, or an empty or new folder')
