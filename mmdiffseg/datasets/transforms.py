"""Pipeline transforms for training on generated labels.

* :class:`LoadImageLevelLabels` puts the image-level class names (the weak supervision of iSeg /
  WSSS) in ``results['image_labels']``, from an annotation file or from the ground truth.
* :class:`LoadPseudoLabel` loads the cached label of the image (:class:`LabelCache`) as
  ``gt_seg_map``, so every later transform (resize, crop, flip, rotate, pad) applies to it exactly
  like ground truth. When the image is not cached yet it loads a *source-index map* instead: each
  pixel holds the flat index ``y * W + x`` of the original pixel it shows. The geometric transforms
  carry that map along like a label (nearest interpolation), and
  :class:`~mmdiffseg.models.DiffusionLabelPreprocessor` later generates the label of the *original*
  image on the GPU, caches it, and gathers it through the map: the training target equals what the
  cached label would have given after the same augmentation, each image is labelled once, and
  nothing but file reading happens in the dataloader workers. (One difference: on a cache miss
  ``RandomCrop(cat_max_ratio=...)`` sees the index map, not classes, so its class-balance retry
  only applies from the second epoch on.) The label-cache settings (folder, Stable Diffusion
  model, generator) are given once, to ``LoadPseudoLabel``; each sample carries them to the
  preprocessor, so the two can never disagree.
* :class:`PackPseudoLabelInputs` is ``PackSegInputs`` that also packs the index map and the keys
  above for the preprocessor.
"""
from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import mmcv
import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmengine import fileio
from mmengine.structures import PixelData
from mmseg.datasets.transforms import PackSegInputs
from mmseg.registry import TRANSFORMS

from ..generators.base import IGNORE_INDEX
from .class_names import resolve_classes, spelled_as
from .cache_settings import canonical_cache_spec
from .label_cache import LabelCache
from .label_files import label_key

#: largest image (pixels) whose source indices fit the 31-bit encoding (OpenCV reads up to 2^30)
MAX_SOURCE_PIXELS = 1 << 31


def encode_source_index(height: int, width: int) -> np.ndarray:
    """``(H, W, 4)`` uint8 map of each pixel's flat index in base 256, most significant byte
    first; the first byte stays below 128, so padding (255 on every channel) and rotation
    borders (255, 0, 0, 0) decode as invalid."""
    if height * width > MAX_SOURCE_PIXELS:
        raise ValueError(f'image of {height}x{width} pixels is too large for the source-index map '
                         f'(at most {MAX_SOURCE_PIXELS} pixels)')
    index = np.arange(height * width, dtype=np.int64).reshape(height, width)
    encoded = np.empty((height, width, 4), dtype=np.uint8)
    for channel in range(4):
        encoded[..., channel] = (index >> (8 * (3 - channel))) & 255
    return encoded


def decode_source_index(encoded: np.ndarray) -> np.ndarray:
    """Inverse of :func:`encode_source_index`: ``(H, W)`` int64, -1 where invalid (padding)."""
    enc = encoded.astype(np.int64)
    index = (enc[..., 0] << 24) | (enc[..., 1] << 16) | (enc[..., 2] << 8) | enc[..., 3]
    index[enc[..., 0] >= 128] = -1
    return index


def read_label_map(path: str, reduce_zero_label: bool = False,
                   label_map: Optional[Dict[int, int]] = None) -> np.ndarray:
    """A label PNG read as mmseg's ``LoadAnnotations`` does (reduce_zero_label, label_map); a
    colour or 16-bit file is refused, naming it (:func:`~..apis.folders.label_indices`)."""
    from ..apis.folders import allow_opencv_sized_images, label_indices
    allow_opencv_sized_images()  # Pillow decodes it: up to OpenCV's limit, as the images
    label = label_indices(mmcv.imfrombytes(fileio.get(path), flag='unchanged', backend='pillow'),
                          path)
    if reduce_zero_label:
        label = reduced_zero_label(label)
    return mapped_labels(label, label_map) if label_map else label


def reduced_zero_label(label: np.ndarray) -> np.ndarray:
    """mmseg's ``reduce_zero_label`` reading of uint8 labels: 0 ("other") becomes 255 (ignored),
    ``k`` class ``k - 1``, 255 stays 255."""
    label = label.astype(np.int64) - 1
    label[(label < 0) | (label == IGNORE_INDEX - 1)] = IGNORE_INDEX
    return label.astype(np.uint8)


def mapped_labels(label: np.ndarray, label_map: Dict[int, int]) -> np.ndarray:
    """uint8 labels through mmseg's ``label_map`` (file value -> class index), in one lookup
    rather than a pass over the image per mapped value."""
    table = np.arange(256, dtype=np.uint8)
    table[list(label_map)] = list(label_map.values())
    return table[label]


class ImageLabels(dict):
    """Image name -> class names, the names in Unicode's composed form (NFC) and found in
    either form: a file name copied from macOS is decomposed (NFD), and ``'café'`` of a label
    file written elsewhere was "no entry" for an image named ``café.jpg`` there."""

    def __init__(self, labels: Dict[str, List[str]]):
        super().__init__((unicodedata.normalize('NFC', k), v) for k, v in labels.items())

    def __missing__(self, image: str) -> List[str]:
        composed = unicodedata.normalize('NFC', image)
        if composed == image:
            raise KeyError(image)
        return self[composed]

    def __contains__(self, image) -> bool:
        return super().__contains__(unicodedata.normalize('NFC', image))

    def get(self, image, default=None):
        return self[image] if image in self else default


def read_image_level_labels(path) -> ImageLabels:
    """An image-level label file: JSON ``{"<image name>": ["<class name>", ...], ...}``. Text
    that is not that is a ``ValueError`` naming the file (``OSError`` where it cannot be read);
    the class names are checked by their reader."""
    try:
        labels = json.loads(Path(path).read_text(encoding='utf-8'))
    except ValueError as err:  # not JSON, or not UTF-8
        raise ValueError(f'image-level labels {path} are not valid JSON ({err})') from err
    shape = '{"<image name>": ["<class name>", ...], ...}'
    if not isinstance(labels, dict):
        raise ValueError(f'image-level labels {path} are not a JSON object {shape}')
    for image, names in labels.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f'image-level labels {path} list {names!r} for image {image!r}: '
                             f'each image lists the names of its classes (not indices), {shape}')
    return ImageLabels(labels)


@TRANSFORMS.register_module()
class LoadImageLevelLabels(BaseTransform):
    """Image-level class names -> ``results['image_labels']`` (list of names).

    Args:
        classes: the dataset's classes (list, or a name: ``'voc'``, ``'cityscapes'``, ``'ade20k'``).
        ann_file: JSON ``{image name without extension: [class names]}``. ``None``: take the
            classes present in the ground truth (``seg_map_path``; benchmarks / oracle setting).
        exclude: class names never listed (``'background'``: generators label it themselves).
    """

    def __init__(self, classes: Union[str, Sequence[str]], ann_file: Optional[str] = None,
                 exclude: Sequence[str] = ('background', )):
        self.classes = resolve_classes(classes)
        self.ann_file = ann_file
        self.exclude = set(exclude)
        self._annotations: Optional[Dict[str, List[str]]] = None

    def annotations(self) -> Dict[str, List[str]]:
        """``ann_file``'s labels, image name -> class names as ``classes`` spells them (read
        once; a name outside ``classes`` is refused naming the image)."""
        if self._annotations is None:
            if not Path(self.ann_file).is_file():
                raise FileNotFoundError(f'LoadImageLevelLabels: ann_file {self.ann_file!r} not '
                                        'found (None takes the labels from the ground truth)')
            annotations = read_image_level_labels(self.ann_file)
            for image, names in annotations.items():
                names = annotations[image] = spelled_as(names, self.classes)
                unknown = [n for n in names if n not in self.classes]
                if unknown:
                    raise KeyError(f'LoadImageLevelLabels: {self.ann_file} lists unknown class '
                                   f'name(s) {unknown} for image {image!r}; known classes: '
                                   f'{self.classes}')
            self._annotations = annotations
        return self._annotations

    def _from_ground_truth(self, results: dict) -> List[str]:
        if not results.get('seg_map_path'):  # mmseg's inference_model: an image alone
            raise ValueError(
                f'LoadImageLevelLabels(ann_file=None) takes the classes from the ground truth, '
                f'and {results.get("img_path", "this image")} has none (an image given for '
                'inference): set ann_file to a JSON file {image name: [class names]}')
        label = read_label_map(results['seg_map_path'], results.get('reduce_zero_label', False),
                               results.get('label_map'))
        values = np.unique(label)
        values = values[values != IGNORE_INDEX]
        bad = values[values >= len(self.classes)]
        if bad.size:
            raise ValueError(
                f'LoadImageLevelLabels: {results["seg_map_path"]} holds label values '
                f'{bad.tolist()} outside the {len(self.classes)} classes; wrong label convention? '
                f'(reduce_zero_label={results.get("reduce_zero_label", False)}; Cityscapes needs '
                'labelTrainIds, ADE20K reduce_zero_label=True)')
        return [self.classes[v] for v in values.tolist()]

    def transform(self, results: dict) -> dict:
        if self.ann_file is None:
            names = self._from_ground_truth(results)
        elif results.get('img_path') is None:  # mmseg's LoadImageFromNDArray: no file name
            raise ValueError(
                f'LoadImageLevelLabels looks an image\'s classes up in {self.ann_file} by its '
                'file name, and an image given as an array has none: give its path '
                "(inference_model(model, 'x.jpg') with a model built anew by init_model from the "
                'config file or a fresh Config: mmseg has set the config of this one to read '
                'arrays), or label arrays with the Python API '
                '(engine.extract, then the generator with their class names: '
                'docs/python_api.md)')
        else:
            image = Path(results['img_path']).stem
            annotations = self.annotations()
            if image not in annotations:
                raise KeyError(f'LoadImageLevelLabels: image {image!r} ({results["img_path"]}) '
                               f'has no entry in {self.ann_file}')
            names = annotations[image]
        results['image_labels'] = [n for n in names if n not in self.exclude]
        return results

    def __repr__(self) -> str:
        source = self.ann_file or 'ground truth'
        return f'{type(self).__name__}(source={source!r}, classes={len(self.classes)})'


@TRANSFORMS.register_module()
class LoadPseudoLabel(BaseTransform):
    """The cached generated label of the image as ``gt_seg_map`` (see the module docstring).

    Adds ``pseudo_label_key`` (:func:`~.label_files.label_key` of the image file and its
    image-level class names, from :class:`LoadImageLevelLabels`), ``pseudo_label_cached`` and
    ``pseudo_label_cache`` (the label-cache settings, from which the preprocessor labels the
    misses: the config holds them once, here). On a cache miss ``gt_seg_map`` is the
    ``(H, W, 4)`` source-index map, packed apart by :class:`PackPseudoLabelInputs`. Nothing here
    touches a GPU or a model.

    Args:
        cache: ``dict(cache_dir=..., model=<Stable Diffusion hub id or diffusers folder>,
            generator=dict(type=...))`` (:class:`LabelCache` arguments): the one place of a
            config that names the model and generator of its online labels.
    """

    def __init__(self, cache: dict):
        self.cache_cfg = canonical_cache_spec(cache)
        self._cache: Optional[LabelCache] = None

    @property
    def cache(self) -> LabelCache:
        if self._cache is None:
            self._cache = LabelCache(**self.cache_cfg)
        return self._cache

    def transform(self, results: dict) -> dict:
        if 'image_labels' not in results:
            raise KeyError('LoadPseudoLabel needs LoadImageLevelLabels before it in the pipeline '
                           f'(the label of {results["img_path"]} is made from its class names)')
        height, width = results['img'].shape[:2]
        loaded = tuple(results.get('ori_shape', (height, width)))[:2]
        if results.get('flip'):   # a flip keeps the size: the label would be of the unflipped
            raise ValueError(
                f'LoadPseudoLabel: the image {results["img_path"]} was flipped before it: put '
                'LoadPseudoLabel right after LoadImageFromFile / LoadImageLevelLabels, before '
                'RandomFlip (the label is made on the image as loaded)')
        if loaded != (height, width):  # the label is made at the file's size, then moved
            raise ValueError(
                f'LoadPseudoLabel: the image {results["img_path"]} is {(width, height)} here but '
                f'{loaded[::-1]} as loaded: put LoadPseudoLabel right after LoadImageFromFile / '
                'LoadImageLevelLabels, before any transform that resizes, crops or pads (the '
                'label is made on the image as loaded and those transforms move it)')
        key = label_key(fileio.get(results['img_path']), results['image_labels'])
        label = self.cache.load(key)
        if label is not None and label.shape != (height, width):
            raise ValueError(f'cached label {self.cache.path(key)} is {label.shape[::-1]} but the '
                             f'image {results["img_path"]} is {(width, height)}')
        results['pseudo_label_key'] = key
        results['pseudo_label_cached'] = label is not None
        results['pseudo_label_cache'] = self.cache_cfg
        results['gt_seg_map'] = label if label is not None else encode_source_index(height, width)
        seg_fields = results.setdefault('seg_fields', [])
        if 'gt_seg_map' not in seg_fields:
            seg_fields.append('gt_seg_map')
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(cache_dir={str(self.cache_cfg.get("cache_dir"))!r})'


@TRANSFORMS.register_module()
class PackPseudoLabelInputs(PackSegInputs):
    """``PackSegInputs`` that keeps the image-level labels and pseudo-label keys in the metainfo
    and packs an uncached sample's source-index map as ``data_sample.pseudo_label_index`` (int64
    ``(1, H, W)``, -1 = padding) with an all-255 ``gt_sem_seg`` for the preprocessor to fill."""

    EXTRA_META_KEYS = ('image_labels', 'pseudo_label_key', 'pseudo_label_cached',
                       'pseudo_label_cache')

    def __init__(self, meta_keys=('img_path', 'seg_map_path', 'ori_shape', 'img_shape',
                                  'pad_shape', 'scale_factor', 'flip', 'flip_direction',
                                  'reduce_zero_label')):
        super().__init__(meta_keys=tuple(meta_keys) + self.EXTRA_META_KEYS)

    def transform(self, results: dict) -> dict:
        index = None
        if results.get('pseudo_label_cached') is False:
            index = decode_source_index(results['gt_seg_map'])
            results['gt_seg_map'] = np.full(index.shape, IGNORE_INDEX, dtype=np.uint8)
        packed = super().transform(results)
        if index is not None:
            packed['data_samples'].pseudo_label_index = PixelData(
                data=torch.from_numpy(index)[None])
        return packed
