"""Pre-flight: training decodes images as their generated labels' images were decoded.

Labels (the tools, the prefill, online labels) are made on images decoded by
:func:`~mmdiffseg.attention.images.decode_rgb`, as ``LoadImageFromFile``'s defaults decode them
(OpenCV, ``'color'``: EXIF orientation applied). A loading step that decodes otherwise trains each
label against another picture of its image: rotated by an EXIF tag, which a square image, or an
upside-down one (orientation 3), passes through every size check.
"""
from __future__ import annotations

from typing import List, Optional

from .preflight_data import Missing, reads_generated_labels
from .registry import config_type

__all__ = ['LABELS_DECODING', 'check_image_decoding']

#: how the labels' images are decoded: ``LoadImageFromFile``'s defaults
LABELS_DECODING = dict(color_type='color', imdecode_backend='cv2')


def _image_loader(step: dict) -> Optional[type]:
    """The class of a loading step that is ``LoadImageFromFile`` or derives from it."""
    from mmcv.transforms import LoadImageFromFile
    from mmseg.registry import TRANSFORMS
    kind = step.get('type')
    cls = TRANSFORMS.get(kind) if isinstance(kind, str) else kind
    return cls if isinstance(cls, type) and issubclass(cls, LoadImageFromFile) else None


def check_image_decoding(dataset: dict, where: str) -> List[Missing]:
    """A pipeline over generated labels (a generated-label dataset, or ``LoadPseudoLabel``) whose
    image loading step decodes otherwise than the labels' images were decoded."""
    from .datasets.unsupervised import LoadImageTFDecode
    steps = dataset.get('pipeline') or []
    if not (reads_generated_labels(dataset) or
            any(config_type(step) == 'LoadPseudoLabel' for step in steps)):
        return []
    found = []
    for index, step in enumerate(steps):
        loader = _image_loader(step)
        key = f'{where}.pipeline.{index}'
        if loader is not None and issubclass(loader, LoadImageTFDecode):
            found.append(Missing(
                f'{key} is {loader.__name__}, which decodes JPEGs as DiffSeg\'s release read COCO '
                '(EXIF orientation ignored, a faster IDCT), but the generated labels were made on '
                "images decoded as LoadImageFromFile's defaults decode them (OpenCV, 'color': "
                'EXIF orientation applied), so they would not line up with these',
                f"load with dict(type='LoadImageFromFile') at {key} ({loader.__name__} is for "
                "scoring DiffSeg's own predictions as released)", [key]))
            continue
        other = {name: step[name] for name, default in LABELS_DECODING.items()
                 if loader is not None and step.get(name, default) != default}
        if other:
            found.append(Missing(
                f'{key} decodes images with {other}, but the generated labels were made on '
                "images decoded as LoadImageFromFile's defaults decode them (OpenCV, 'color': "
                'EXIF orientation applied), so they would not line up with these',
                f'leave {" and ".join(other)} of {key} at the defaults '
                f'({", ".join(f"{k}={v!r}" for k, v in LABELS_DECODING.items() if k in other)})',
                [key]))
    return found
