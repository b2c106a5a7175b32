"""Where a label cache keeps its labels and how they are named: the signature file, a label's
content key and path, reading one label, and a folder whose labels lost their signature."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from .cache_settings import cache_folder

SIGNATURE_FILE = 'cache.json'
#: what a label's key is a hash of (recorded in the signature: a folder keyed otherwise is refused)
KEY_SCHEME = 'sha1(image file bytes, image-level class names in order)'


def label_key(image_bytes: bytes, class_names: Sequence[str]) -> str:
    """The key of the label made from an image file and its image-level class names: iSeg,
    SeeDiff and labelled DiffSeg prompt with the names, so another list is another label."""
    digest = hashlib.sha1(image_bytes)
    digest.update(b'\0' + json.dumps(list(class_names)).encode())
    return digest.hexdigest()


def label_path(cache_dir: Union[str, Path], key: str) -> Path:
    """Where the label of content key ``key`` lives in ``cache_dir``."""
    return cache_folder(cache_dir) / key[:2] / f'{key}.png'


def read_label(path: Path) -> Optional[np.ndarray]:
    """The ``(H, W)`` label stored at ``path``, or None if the file is missing, unreadable or not
    single-channel (labels are written whole, so only outside damage makes one unreadable)."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if path.exists() else None
    return label if label is not None and label.ndim == 2 else None


def unsigned_labels(cache_dir: Union[str, Path]) -> Optional[str]:
    """What is wrong with a folder that holds labels but no signature (deleted while a run
    wrote into it), or None: such labels are of unknown origin and never reused."""
    if next(cache_folder(cache_dir).glob('??/*.png'), None) is None:
        return None
    return (f'label cache {cache_dir} holds labels but no {SIGNATURE_FILE} (deleted while a run '
            'wrote into it?): labels of unknown origin are never reused')
