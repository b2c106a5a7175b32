"""Cityscapes and COCO-Stuff with other class sets: the 27 classes of DiffSeg's unsupervised
protocol (PiCIE / STEGO convention) and SeeDiff's background / human / vehicle setting; the
protocol's JPEG decoding, centre square crop and label resize."""
from __future__ import annotations

import io
from typing import Dict, Optional, Sequence

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform, LoadImageFromFile
from mmengine import fileio
from mmseg.datasets import BaseSegDataset, CityscapesDataset
from mmseg.datasets.transforms import Resize
from mmseg.registry import DATASETS, TRANSFORMS
from PIL import Image

from ..generators.base import IGNORE_INDEX
from .class_names import (CITYSCAPES27_CLASSES, CITYSCAPES27_FIRST_LABEL_ID,
                          CITYSCAPES_GROUPS, CITYSCAPES_HUMAN_VEHICLE_CLASSES,
                          COCOSTUFF27_CLASSES, COCOSTUFF27_FINE_IDS)

#: the first bytes of every JPEG file (its SOI marker)
JPEG_MAGIC = b'\xff\xd8'


def center_square(array: np.ndarray) -> np.ndarray:
    """The largest centred square of an image or label map, offset ``(h - side) // 2`` as
    DiffSeg's released ``process_image``."""
    height, width = array.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return array[top:top + side, left:left + side]


def resize_label_map(label: np.ndarray, width: int, height: int) -> np.ndarray:
    """A label map resized as ``tf.image.resize(method='nearest')``: each output pixel takes the
    source pixel under its centre (half-pixel, ``cv2.INTER_NEAREST_EXACT``)."""
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)


def protocol_label_view(label: np.ndarray, size: int) -> np.ndarray:
    """A ground-truth map as DiffSeg's protocol configs score it: centre square, resized to
    ``size`` x ``size`` (``CenterSquareCrop`` then ``ResizeHalfPixelLabels``)."""
    return resize_label_map(center_square(label), size, size)


@TRANSFORMS.register_module()
class LoadImageTFDecode(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` (BGR, as mmseg expects) decoding a JPEG as DiffSeg's
    release reads COCO (``tf.io.decode_jpeg(image, 3)``'s defaults): libjpeg-turbo's fast integer
    IDCT (``JDCT_IFAST``) with fancy upsampling, EXIF orientation ignored, through ``simplejpeg``
    (bit-exact to TensorFlow 2.21's decode on the COCO and ADE20K samples: baseline, progressive,
    grey, 4:4:4 / 4:2:2 / 4:2:0). OpenCV's accurate IDCT differs from it by 0.8-1.7 grey levels
    on average, up to 20, on those images. Other files: ``color_type``, by default
    ``'color_ignore_orientation'``."""

    def __init__(self, **kwargs):
        kwargs.setdefault('color_type', 'color_ignore_orientation')
        super().__init__(**kwargs)

    def transform(self, results: dict) -> Optional[dict]:
        try:
            data = fileio.get(results['img_path'], backend_args=self.backend_args)
        except Exception:  # noqa: BLE001  (as mmcv's loader: None for a missing file, or raise)
            if self.ignore_empty:
                return None
            raise
        try:
            img = self._decode(data)
        except ImportError:
            raise
        except Exception as exc:  # noqa: BLE001  a damaged or empty file (cv2.error, PIL's...)
            if self.ignore_empty:
                return None
            raise ValueError(f'LoadImageTFDecode: cannot decode {results["img_path"]}: '
                             f'{exc}') from exc
        img = img.astype(np.float32) if self.to_float32 else img
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return results

    def _decode(self, data: bytes) -> np.ndarray:
        """The file's bytes (read once) as a BGR image: simplejpeg for a JPEG, mmcv's decoding
        with ``color_type`` for any other file."""
        if data[:2] != JPEG_MAGIC:
            img = mmcv.imfrombytes(data, flag=self.color_type, backend=self.imdecode_backend)
            if img is None:
                raise ValueError(f'{self.imdecode_backend} cannot read it as an image')
            return img
        try:
            import simplejpeg
        except ImportError as exc:
            raise ImportError('LoadImageTFDecode decodes JPEGs with simplejpeg: pip install '
                              'simplejpeg (tools/install.sh installs it)') from exc
        return simplejpeg.decode_jpeg(data, colorspace='BGR', fastdct=True, fastupsample=False)


@TRANSFORMS.register_module()
class CenterSquareCrop(BaseTransform):
    """The largest centred square of the image and its label maps (side: the shorter image side),
    as DiffSeg's evaluation crops COCO-Stuff and Cityscapes before resizing to 512: offset
    ``(h - side) // 2`` as released (``process_image``; mmcv's ``CenterCrop`` rounds half to
    even, one pixel further for a quarter of COCO's sizes). A label map of another shape than
    its image is refused (the crop would cut it elsewhere)."""

    def transform(self, results: dict) -> dict:
        height, width = results['img'].shape[:2]
        for key in results.get('seg_fields', []):
            if results[key].shape[:2] != (height, width):
                raise ValueError(
                    f"{results.get('seg_map_path', key)} is {results[key].shape[1]}x"
                    f"{results[key].shape[0]} but its image {results.get('img_path', '')} is "
                    f'{width}x{height}: an image rotated by its EXIF orientation tag is loaded '
                    "with dict(type='LoadImageFromFile', color_type='color_ignore_orientation') "
                    '(as the DiffSeg protocol configs do, and the released code reads it); '
                    'otherwise the label map does not belong to this image')
        for key in ['img', *results.get('seg_fields', [])]:
            results[key] = center_square(results[key])
        results['img_shape'] = results['img'].shape[:2]
        return results


@TRANSFORMS.register_module()
class ResizeHalfPixelLabels(Resize):
    """mmseg's ``Resize`` as DiffSeg's evaluation resizes (``tf.image.resize``).

    * Label maps take the nearest source pixel of each output pixel's centre
      (``cv2.INTER_NEAREST_EXACT``, as TF's and PIL's nearest) instead of ``cv2.INTER_NEAREST``'s
      ``floor(d * scale)`` (the two differ on 1-2% of COCO-Stuff-27 label pixels at 512, and on
      every other row and column of a 2x reduction).
    * ``float_image=True`` (default): the image is resized in float32 and kept unrounded, as TF's
      bilinear resize returns it (half-pixel centres, no antialiasing, as ``cv2.INTER_LINEAR``
      and the engine's own resize). ``False``: mmseg's uint8 result (cv2's fixed-point bilinear,
      rounded: 0.27 grey levels from TF's on average on COCO-like crops).
    """

    def __init__(self, *args, float_image: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.float_image = float_image

    def _resize_img(self, results: dict) -> None:
        if self.float_image and results.get('img') is not None:
            results['img'] = results['img'].astype(np.float32)
        super()._resize_img(results)

    def _resize_seg(self, results: dict) -> None:
        height, width = results['img_shape'][:2]  # the image is resized first
        for key in results.get('seg_fields', []):
            if results.get(key) is not None:
                results[key] = resize_label_map(results[key], width, height)


#: Cityscapes' own colours of the labelIds that are not train classes (its ``labels.py``)
_NON_TRAIN_COLORS = {'parking': [250, 170, 160], 'rail track': [230, 150, 140],
                     'guard rail': [180, 165, 180], 'bridge': [150, 100, 100],
                     'tunnel': [150, 120, 90], 'polegroup': [153, 153, 153],
                     'caravan': [0, 0, 90], 'trailer': [0, 0, 110]}


def with_class_subset(protocol: Optional[Dict[int, int]], subset: Optional[Dict[int, int]]
                      ) -> Optional[Dict[int, int]]:
    """A protocol's label map (file value -> class index) followed by mmseg's map of a
    ``metainfo`` class subset or order (class index -> new index, 255 dropped)."""
    if protocol is None or subset is None:
        return subset if protocol is None else protocol
    return {value: subset.get(index, IGNORE_INDEX) for value, index in protocol.items()}


class ColoursByClassName:
    """Dataset mixin: with a ``metainfo`` class subset, each class keeps its colour, taken by
    name (mmseg's ``_update_palette`` takes the colour at each label-map key, a file value here,
    not a class index: an IndexError past the palette, other classes' colours before it)."""

    def _update_palette(self) -> list:
        palette, classes = self._metainfo.get('palette', []), self._metainfo.get('classes', [])
        if len(palette) <= len(classes):
            return super()._update_palette()
        colours = dict(zip(self.METAINFO['classes'], palette))
        return type(palette)(colours[name] for name in classes)


@DATASETS.register_module()
class Cityscapes27Dataset(ColoursByClassName, CityscapesDataset):
    """Cityscapes with the 27 classes of labelIds 7..33 (``*_gtFine_labelIds.png``); every other
    labelId is ignored (255). Drawn in Cityscapes' colours (mmseg's for the train classes)."""
    METAINFO = dict(classes=CITYSCAPES27_CLASSES,
                    palette=[list(dict(zip(CityscapesDataset.METAINFO['classes'],
                                           CityscapesDataset.METAINFO['palette']),
                                       **_NON_TRAIN_COLORS)[name])
                             for name in CITYSCAPES27_CLASSES])

    def __init__(self, img_suffix='_leftImg8bit.png', seg_map_suffix='_gtFine_labelIds.png',
                 **kwargs):
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    @classmethod
    def get_label_map(cls, new_classes=None):
        """labelIds -> 27-class indices (labelId - 7), anything else -> 255; then a
        ``metainfo`` class subset's renumbering."""
        first, count = CITYSCAPES27_FIRST_LABEL_ID, len(CITYSCAPES27_CLASSES)
        protocol = {label_id: (label_id - first if first <= label_id < first + count
                               else IGNORE_INDEX) for label_id in range(IGNORE_INDEX)}
        return with_class_subset(protocol, super().get_label_map(new_classes))


@DATASETS.register_module()
class COCOStuff27Dataset(ColoursByClassName, BaseSegDataset):
    """COCO-Stuff with the 27 coarse classes. Fixed colours, none black (mmseg's visualizer leaves
    ignored pixels black).

    Args:
        fine_labels: the label PNGs are COCO-Stuff's own (``stuffthingmaps_trainval2017``: fine
            class id - 1, 255 unlabelled), mapped on loading to the 27 classes by
            :data:`~.class_names.COCOSTUFF27_FINE_IDS` ('other' and unlabelled: 255); ``False``:
            they already hold 0..26 and 255.
    """
    METAINFO = dict(classes=COCOSTUFF27_CLASSES,
                    palette=[[(53 * i) % 256, (97 * i) % 256, (193 * i) % 256]
                             for i in range(1, len(COCOSTUFF27_CLASSES) + 1)])

    def __init__(self, img_suffix='.jpg', seg_map_suffix='.png', fine_labels: bool = False,
                 **kwargs):
        self.fine_labels = bool(fine_labels)  # read by get_label_map in the base __init__
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    def load_data_list(self) -> list:
        """mmseg's listing; with ``fine_labels``, maps that look coarse already are refused
        (:func:`coarse_looking_maps`)."""
        data_list = super().load_data_list()
        if self.fine_labels:
            problem = coarse_looking_maps([info['seg_map_path'] for info in data_list
                                           if info.get('seg_map_path')],
                                          backend_args=self.backend_args)
            if problem:
                raise ValueError(f'COCOStuff27Dataset(fine_labels=True): {problem}: set '
                                 'fine_labels=False to read them as they are')
        return data_list

    def get_label_map(self, new_classes=None):
        """Fine PNG value -> coarse class (every value, unlabelled ones to 255) with
        ``fine_labels``; then a ``metainfo`` class subset's renumbering (None: neither)."""
        coarse = {fine - 1: COCOSTUFF27_CLASSES.index(name)
                  for name, ids in COCOSTUFF27_FINE_IDS.items() for fine in ids}
        protocol = ({value: coarse.get(value, IGNORE_INDEX) for value in range(IGNORE_INDEX)}
                    if self.fine_labels else None)
        return with_class_subset(protocol, super().get_label_map(new_classes))


def coarse_looking_maps(paths: Sequence[str], samples: int = 8,
                        backend_args: Optional[dict] = None) -> Optional[str]:
    """Why COCO-Stuff label maps given as its own (fine) maps look like the 27 coarse classes
    already: every one of up to ``samples`` maps, spread over ``paths`` (read through mmengine's
    file backends), holds only values 0..26 and 255 (a fine map of a curated image holds stuff,
    91..181); ``None`` otherwise."""
    if not paths:
        return None
    picked = [paths[i * len(paths) // min(samples, len(paths))]
              for i in range(min(samples, len(paths)))]
    for path in picked:
        data = fileio.get(path, backend_args=backend_args)
        values = np.unique(np.asarray(Image.open(io.BytesIO(data))))
        if ((values >= len(COCOSTUFF27_CLASSES)) & (values != IGNORE_INDEX)).any():
            return None
    return (f'the {len(picked)} label maps read of {len(paths)} (e.g. {picked[0]}) hold only '
            f'values 0..{len(COCOSTUFF27_CLASSES) - 1} and {IGNORE_INDEX}: they look like maps of '
            "the 27 classes already, not COCO-Stuff's own (stuffthingmaps: fine id - 1, stuff "
            '91..181), which fine_labels maps to the 27 classes and would turn into other classes')


@DATASETS.register_module()
class CityscapesHumanVehicleDataset(ColoursByClassName, CityscapesDataset):
    """Cityscapes train ids grouped as in SeeDiff / DiffuMask: human (person, rider), vehicle (car,
    truck, bus, train, motorcycle, bicycle), every other class background; 255 stays ignored."""
    METAINFO = dict(classes=CITYSCAPES_HUMAN_VEHICLE_CLASSES,
                    palette=[[0, 0, 0], [220, 20, 60], [0, 0, 142]])

    @classmethod
    def get_label_map(cls, new_classes=None):
        """train id -> 0 (background), 1 (human) or 2 (vehicle); then a ``metainfo`` class
        subset's renumbering."""
        train_classes = list(CityscapesDataset.METAINFO['classes'])
        label_map = {i: 0 for i in range(len(train_classes))}
        for group, members in CITYSCAPES_GROUPS.items():
            for name in members:
                label_map[train_classes.index(name)] = CITYSCAPES_HUMAN_VEHICLE_CLASSES.index(group)
        return with_class_subset(label_map, super().get_label_map(new_classes))
