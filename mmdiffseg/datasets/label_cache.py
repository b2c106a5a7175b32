"""Disk cache of generated labels, one per image content + class names, model and generator config.

Layout: ``cache_dir/cache.json`` holds the signature (the model's identity + the generator's
``config_dict()`` + :data:`~mmdiffseg.generators.base.LABELS_VERSION`) the cache was written
with; ``cache_dir/<k[:2]>/<k>.png`` holds the label made from the image file and the image-level
class names whose SHA-1 is ``k`` (:func:`~.label_files.label_key`), at the image's original size (uint8,
255 = unsure). The signature pins the whole folder to one model
+ generator config, so the effective key is image content + class names + model + generator
config; opening a folder written with another signature is an error naming the settings that
differ (never silently reused labels). Models compare by the hash of their diffusers configs, so
the same model under another folder, node or hub id is the same model. The engine's precision and
weights variant are not part of the key (the numerics of one method, like the GPU model; float16
and float32 labels differ on a few percent of pixels): the folder's first writer records them and
another writer's are refused (:meth:`LabelCache.check_signature`).

Exactly once across processes (training ranks, dataloader prefetch, a prefill job running beside
a training run): a label is made only by the process that holds the claim of its key, an
exclusive ``flock`` on ``<k[:2]>/<k>.lock`` (:meth:`LabelCache.fetch_or_make`). Every claimer
first checks whether the label exists; the owner writes the label atomically (temporary file +
``os.replace``), removes the lock file once the label exists, then releases the lock; others
wait for the label (or for the lock, then make it themselves if the owner died without writing
it). The kernel releases the locks of a killed process, so a dead rank leaves no stale claim to
time out, and its half-written temporary file is removed by the next owner of that key. A label
file damaged from outside (a disk fault, a power loss before the data reached the disk) reads as
missing and is made again. Claims are never held while waiting for another's, so ranks cannot
deadlock. The cache folder must be on a file system with working ``flock`` (local disks; NFS
emulates it with POSIX locks).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from mmengine.logging import print_log

from ..generators.base import LABELS_VERSION, LABELS_VERSION_KEY, MaskGenerator, older_labels_note
from ..provenance import (describe, missing_model_refusal, model_identity,
                          setting_differences)
from ..registry import MASK_GENERATORS
from .cache_settings import cache_folder, canonical_json, empty_cache_note, writer_difference
from .label_files import KEY_SCHEME, SIGNATURE_FILE, label_path, read_label, unsigned_labels

#: the signature's record of how the labels were computed, checked against writers only
WRITER_KEY = 'made_with'
#: seconds between two looks at a label another process is making
POLL_SECONDS = 0.05


def _atomic_write(path: Path, data: bytes, replace: bool = True) -> None:
    """:func:`~mmdiffseg.apis.io.atomic_write` under a temp name of this writer's own (the
    processes sharing a cache may have the same rank)."""
    from ..apis.io import atomic_write  # here: mmdiffseg.apis imports this module
    atomic_write(path, data, tag=f'.{uuid.uuid4().hex}.tmp', replace=replace)


def _conflict(message: str) -> ValueError:
    """A cache that this run must not write into, as the tools' bad-input error (a
    ``ValueError``: an ``error:`` line and exit status 2 instead of a traceback)."""
    from ..apis.io import SettingsRefused  # here: mmdiffseg.apis imports this module
    return SettingsRefused(message)


class LabelCache:
    """Labels of images by content, for one model and one generator config.

    Args:
        cache_dir: the cache folder (one per model + generator config).
        model: the Stable Diffusion hub id or diffusers folder the labels come from.
        generator: the generator (or its config dict, built with ``MASK_GENERATORS``).
        wait_timeout: seconds to wait for a label another process is making before giving up.
        writer_dtype: the engine precision of a process that makes labels (``None``: this one
            only reads); recorded by the first writer, and another writer's is refused.
        writer_variant: the weights variant such a process loads (``engine_kwargs.variant``;
            None: the plain weights); recorded and refused as ``writer_dtype``.
    """

    def __init__(self, cache_dir: Union[str, Path], model: str,
                 generator: Union[Dict, MaskGenerator], wait_timeout: float = 600.0,
                 writer_dtype: Optional[str] = None, writer_variant: Optional[str] = None):
        self.cache_dir = cache_folder(cache_dir)
        if not isinstance(generator, MaskGenerator):
            generator = MASK_GENERATORS.build(generator)
        self.generator = generator
        self.model = str(model)
        self.signature = canonical_json({'model': model_identity(self.model),
                                         'generator': generator.config_dict(),
                                         'label_key': KEY_SCHEME,
                                         LABELS_VERSION_KEY: LABELS_VERSION})
        self.writer_dtype, self.writer_variant = writer_dtype, writer_variant
        self.wait_timeout = float(wait_timeout)
        self._checked: Optional[tuple] = None   # the signature file checked (_signature_stamp)
        self._writer_checked = False
        self._damaged: set = set()   # damaged label files already logged

    # -- signature ---------------------------------------------------------------------------
    def _signature_stamp(self) -> Optional[tuple]:
        """The signature file's identity (inode, modification time; None without one): a folder
        deleted and signed again by another run holds another file."""
        try:
            stat = (self.cache_dir / SIGNATURE_FILE).stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    def _stored_signature(self) -> Optional[dict]:
        path = self.cache_dir / SIGNATURE_FILE
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except ValueError as err:
            raise ValueError(f'{path} is not a label-cache signature ({err}): the labels of '
                             f'{self.cache_dir} are of unknown origin; delete the folder') from err

    def signature_differences(self, stored: Optional[dict] = None) -> Optional[List[str]]:
        """The settings the folder's labels were made with that differ from this run's, a line
        each (labels of an earlier label computation say so); None when it has no signature
        yet. ``stored``: the folder's signature, already read.

        Raises:
            ValueError: the signature file is unreadable.
        """
        stored = self._stored_signature() if stored is None else stored
        if stored is None:
            return None
        stored = {k: v for k, v in stored.items() if k != WRITER_KEY}
        differing = list(setting_differences(stored, self.signature))
        note = older_labels_note(differing).strip()
        return [f'{key}: cache {describe(have)}, this run {describe(want)}'
                for key, have, want in differing] + ([note] if note else [])

    def check_signature(self, writer: bool = True) -> bool:
        """True when the folder was written with this signature, False when it has none yet.

        Raises:
            SettingsRefused: (a ``UserInputError``: the tools' ``error:`` line, exit 2) the folder
                holds labels of another model or generator config (the settings that differ
                are named), or, with ``writer`` (else reading only), of another precision or
                weights variant than ``writer_dtype`` / ``writer_variant``.
        """
        stamp = self._signature_stamp()
        if stamp is not None and stamp == self._checked:
            stored = None if self._writer_checked or not writer else self._stored_signature()
        else:   # not checked yet, or the signature was deleted or written anew meanwhile
            self._checked, self._writer_checked = None, False
            stored = self._stored_signature()
            if stored is None:
                return False
            self._check_settings(stored)
            self._checked = stamp
        if stored is not None and writer and self.writer_dtype is not None:
            differs = writer_difference(stored.get(WRITER_KEY, {}), self.writer_dtype,
                                        self.writer_variant)
            if differs:
                raise _conflict(f'label cache {self.cache_dir} holds {differs[0]}: {differs[1]}, '
                                'or give this config another cache_dir.'
                                + empty_cache_note(self.cache_dir))
            self._writer_checked = True
        return True

    def _check_settings(self, stored: dict) -> None:
        differing = self.signature_differences(stored)
        if differing:
            raise _conflict(missing_model_refusal(self.model, self.cache_dir, differing) or (
                f'label cache {self.cache_dir} holds labels made with other settings:\n  '
                + '\n  '.join(differing)
                + '\nLabels of another model or generator config are never reused: give this '
                'config another cache_dir (the `cache` of LoadPseudoLabel in the train pipeline) '
                'or delete the folder once no run writes into it.'
                + empty_cache_note(self.cache_dir)))

    def sign(self) -> None:
        """Write the signature if the folder has none (else check it), with the writer's
        precision, and the model's config hash where the model was not here when this cache
        object was made (a hub model the first run downloads: its labels serve the same model
        in a local folder later).

        Raises:
            UserInputError: the folder holds labels but no signature (deleted while a run wrote
                into it): labels of unknown origin are never taken over.
        """
        if not self.check_signature():
            unsigned = unsigned_labels(self.cache_dir)
            if unsigned and self._stored_signature() is None:   # (else signed meanwhile)
                raise _conflict(f'{unsigned}; delete the folder once no run writes into it, or '
                                'give this config another cache_dir')
            if self.signature['model'].get('config_hash') is None:
                self.signature['model'] = canonical_json(model_identity(self.model))
            record = dict(self.signature)
            if self.writer_dtype is not None:
                record[WRITER_KEY] = {'dtype': self.writer_dtype, 'variant': self.writer_variant}
            try:
                _atomic_write(self.cache_dir / SIGNATURE_FILE,
                              json.dumps(record, indent=1, sort_keys=True).encode(),
                              replace=False)
            except FileExistsError:   # another process signed it first: check theirs
                pass
            self.check_signature()

    # -- labels ------------------------------------------------------------------------------
    def path(self, key: str) -> Path:
        return label_path(self.cache_dir, key)

    def load(self, key: str) -> Optional[np.ndarray]:
        """The cached ``(H, W)`` uint8 label of the image with content key ``key``, or None when
        there is none or its file is damaged (logged once; :meth:`fetch_or_make` makes it
        again and replaces the file)."""
        if not self.check_signature(writer=False):
            return None
        path = self.path(key)
        label = read_label(path)
        if label is None and path.exists() and path not in self._damaged:
            self._damaged.add(path)
            print_log(f'label cache file {path} is damaged (unreadable or not a single-channel '
                      'PNG): its label is made again', logger='current', level=logging.WARNING)
        return label

    def save(self, key: str, label: np.ndarray) -> Path:
        """Store an ``(H, W)`` label with values in 0..255 (atomic)."""
        self.sign()
        label = np.asarray(label)
        if label.ndim != 2 or not label.size or label.min() < 0 or label.max() > 255:
            span = f'[{label.min()}, {label.max()}]' if label.size else 'empty'
            raise ValueError(f'LabelCache.save: expected an (H, W) label in 0..255, got shape '
                             f'{label.shape}, range {span}')
        ok, png = cv2.imencode('.png', label.astype(np.uint8))
        if not ok:
            raise RuntimeError(f'could not encode the label of {key} as PNG')
        path = self.path(key)
        _atomic_write(path, png.tobytes())
        return path

    def __len__(self) -> int:
        return sum(1 for _ in self.cache_dir.glob('??/*.png'))

    # -- exactly once across processes -------------------------------------------------------
    def _lock_path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f'{key}.lock'

    def _try_claim(self, key: str) -> Optional[int]:
        """The open, exclusively locked lock file of ``key``, or None if another process holds
        it. The owner's host, pid and rank are written into it (for the timeout message)."""
        from ..apis.io import write_error  # here: mmdiffseg.apis imports this module
        path = self._lock_path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # 0o666 less the umask, as the labels: a teammate's run can claim it after this one
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError as err:   # a teammate's lock file left by a stopped run
            fd = self._open_to_lock(path, err)
        except OSError as err:   # a full disk, a read-only cache
            raise write_error(path, err) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError as err:
            os.close(fd)
            raise OSError(f'label cache {self.cache_dir}: cannot lock {path} ({err}); put '
                          'cache_dir on a file system with file locks (a local disk, or NFS '
                          'with locking)') from err
        owner = dict(host=socket.gethostname(), pid=os.getpid(), rank=os.environ.get('RANK'),
                     since=time.time())
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(owner).encode())
        except OSError as err:   # a disk that filled since the open
            if err.errno not in (errno.EBADF, errno.EINVAL):  # (else opened read-only: no owner)
                os.close(fd)
                raise write_error(path, err) from err
        for stale in path.parent.glob(f'.{key}.png*.tmp'):   # left by a killed owner
            stale.unlink(missing_ok=True)
        return fd

    @staticmethod
    def _open_to_lock(path: Path, refused: OSError) -> int:
        """A lock file this user may not write, opened read-only (a lock needs no more)."""
        from ..apis.io import write_error
        try:
            return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            raise write_error(path, refused) from refused

    def _release(self, key: str, fd: int) -> None:
        """Unlock ``key``; its lock file goes once the label exists (never before: a waiter
        that then locks a fresh lock file must find the label)."""
        if self.path(key).exists():
            self._lock_path(key).unlink(missing_ok=True)
        os.close(fd)

    def _owner(self, key: str) -> str:
        """Who holds the claim of ``key`` and for how long, as its lock file records it."""
        try:
            owner = json.loads(self._lock_path(key).read_text())
            held = f', for {time.time() - float(owner["since"]):.0f} s'
            return (f'process {owner["pid"]} on {owner["host"]}'
                    + ('' if owner.get('rank') is None else f' (rank {owner["rank"]})') + held)
        except (OSError, ValueError, KeyError, TypeError):
            return 'an unknown process'

    def fetch_or_make(self, keys: Sequence[str],
                      make: Callable[[List[str]], Sequence[np.ndarray]],
                      prepare: Optional[Callable[[], None]] = None
                      ) -> Tuple[Dict[str, np.ndarray], List[str], List[str]]:
        """The label of every key, each made exactly once across processes.

        Cached labels are loaded; the missing ones this process can claim are made with one
        ``make(claimed keys)`` call per round and stored; labels other processes are making are
        waited for (and made here if their owner died first). ``prepare()`` runs once, at the
        first missing label and before any claim: the slow set-up of ``make`` (loading the
        model) must not hold claims that other processes wait on. What ``make`` gives for a
        key that is not an array (a failed item, :class:`~mmdiffseg.apis.io.ItemFailed`: its
        maps overflowed, or its prompt cannot hold its classes) is returned as it is, neither
        stored nor counted made: tried again on the key's next use.

        Returns:
            ``(labels by key, keys made here, keys waited for)``.

        Raises:
            LabelWaitTimeout: (an ``OutputWriteError``: the tools' one-line error, exit 3) a
                label's owner held it longer than ``wait_timeout`` seconds.
        """
        labels: Dict[str, np.ndarray] = {}
        made: List[str] = []
        waited_since: Dict[str, float] = {}
        pending = list(dict.fromkeys(keys))
        while pending:
            claimed: Dict[str, int] = {}
            try:
                for key in pending:
                    label = self.load(key)
                    if label is None and prepare is not None:
                        prepare()   # no claim is held here
                        prepare = None
                    fd = None if label is not None else self._try_claim(key)
                    if fd is not None:
                        label = self.load(key)   # finished between the look and the claim
                        if label is None:
                            claimed[key] = fd
                            continue
                        self._release(key, fd)
                    if label is None:
                        waited_since.setdefault(key, time.monotonic())
                    else:
                        labels[key] = label
                if claimed:
                    new = list(make(list(claimed)))
                    if len(new) != len(claimed):
                        raise RuntimeError(f'made {len(new)} labels for {len(claimed)} images')
                    for key, label in zip(claimed, new):
                        if isinstance(label, np.ndarray):
                            self.save(key, label)
                            made.append(key)
                        labels[key] = label
            finally:
                for key, fd in claimed.items():
                    self._release(key, fd)
            pending = [key for key in pending if key not in labels]
            if pending and not claimed:
                self._check_wait(pending, waited_since)
                time.sleep(POLL_SECONDS)
        return labels, made, [key for key in waited_since if key not in made]

    def _check_wait(self, pending: Sequence[str], waited_since: Dict[str, float]) -> None:
        from ..apis.io import LabelWaitTimeout  # here: mmdiffseg.apis imports this module
        now = time.monotonic()
        for key in pending:
            if now - waited_since[key] > self.wait_timeout:
                raise LabelWaitTimeout(
                    f'label cache {self.cache_dir}: waited {self.wait_timeout:.0f} s '
                    f'(wait_timeout) for the label of {key}, claimed by {self._owner(key)} '
                    f'({self._lock_path(key)}). If that process is alive and slow (a first '
                    "--compile, a loaded GPU), raise wait_timeout in the config's label cache "
                    '(the `cache` of LoadPseudoLabel in the train pipeline); if it hangs, stop '
                    'it: a stopped owner releases its claim.')
