"""Disk cache of generated labels: one label per image content, per model and generator config.

Layout: ``cache_dir/cache.json`` holds the signature (model id + the generator's
``config_dict()``) the cache was written with; ``cache_dir/<k[:2]>/<k>.png`` holds the label of the
image whose file bytes have SHA-1 ``k``, at the image's original size (uint8, 255 = unsure). The
signature pins the whole folder to one model + generator config, so the effective key is image
content + model + generator config; opening a folder written with another signature is an error
(never silently reused labels). Writes are atomic (temporary file + ``os.replace``), so parallel
ranks and interrupted runs never leave a half-written label.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Dict, Optional, Union

import cv2
import numpy as np

from ..generators.base import MaskGenerator
from ..registry import MASK_GENERATORS

SIGNATURE_FILE = 'cache.json'


def image_key(image_bytes: bytes) -> str:
    """SHA-1 of an image file's bytes."""
    return hashlib.sha1(image_bytes).hexdigest()


def model_identity(model: str) -> str:
    """``engine.model_id`` without loading the model: ``<folder name>-<config hash>`` for a local
    diffusers folder, the hub id otherwise."""
    from ..attention.engine import model_id_of
    return model_id_of(model)


def _canonical(value) -> object:
    """JSON round trip, so tuples / numpy scalars compare equal to what was stored."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.' + path.name, suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class LabelCache:
    """Labels of images by content, for one model and one generator config.

    Args:
        cache_dir: the cache folder (one per model + generator config).
        model: the Stable Diffusion hub id or diffusers folder the labels come from (the signature
            holds its ``engine.model_id``).
        generator: the generator (or its config dict, built with ``MASK_GENERATORS``).
    """

    def __init__(self, cache_dir: Union[str, Path], model: str,
                 generator: Union[Dict, MaskGenerator]):
        self.cache_dir = Path(cache_dir)
        if not isinstance(generator, MaskGenerator):
            generator = MASK_GENERATORS.build(generator)
        self.generator = generator
        self.model = str(model)
        self.model_id = model_identity(self.model)
        self.signature = _canonical({'model': self.model_id, 'generator': generator.config_dict()})
        self._signature_checked = False

    # -- signature ---------------------------------------------------------------------------
    def _stored_signature(self) -> Optional[dict]:
        path = self.cache_dir / SIGNATURE_FILE
        if not path.exists():
            return None
        return json.loads(path.read_text())

    def check_signature(self) -> bool:
        """True when the folder was written with this signature, False when it has none yet.

        Raises:
            ValueError: the folder holds labels of another model or generator config.
        """
        if self._signature_checked:
            return True
        stored = self._stored_signature()
        if stored is None:
            return False
        if stored != self.signature:
            raise ValueError(
                f'label cache {self.cache_dir} was written by another model / generator config:\n'
                f'  cache: {json.dumps(stored, sort_keys=True)}\n'
                f'  this run: {json.dumps(self.signature, sort_keys=True)}\n'
                'Use another cache_dir for this config (or delete the folder).')
        self._signature_checked = True
        return True

    def claim(self) -> None:
        """Write the signature if the folder has none (else check it)."""
        if not self.check_signature():
            _atomic_write(self.cache_dir / SIGNATURE_FILE,
                          json.dumps(self.signature, indent=1, sort_keys=True).encode())
            self.check_signature()

    # -- labels ------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f'{key}.png'

    def load(self, key: str) -> Optional[np.ndarray]:
        """The cached ``(H, W)`` uint8 label of the image with content key ``key``, or None."""
        if not self.check_signature():
            return None
        path = self.path(key)
        if not path.exists():
            return None
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise ValueError(f'label cache file {path} is unreadable or not a single-channel PNG; '
                             'delete it to regenerate the label')
        return label

    def save(self, key: str, label: np.ndarray) -> Path:
        """Store an ``(H, W)`` label with values in 0..255 (atomic)."""
        self.claim()
        label = np.asarray(label)
        if label.ndim != 2 or label.min() < 0 or label.max() > 255:
            raise ValueError(f'LabelCache.save: expected an (H, W) label in 0..255, got shape '
                             f'{label.shape}, range [{label.min()}, {label.max()}]')
        ok, png = cv2.imencode('.png', label.astype(np.uint8))
        if not ok:
            raise RuntimeError(f'could not encode the label of {key} as PNG')
        path = self.path(key)
        _atomic_write(path, png.tobytes())
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.cache_dir.glob('??/*.png'))
