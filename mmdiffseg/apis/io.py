"""The output folder of a resumable offline job (run by :func:`.jobs.run_job`): work items,
atomic writes, sharding.

A job is a list of :class:`WorkItem` cut into fixed batches. Each finished item's files are written
atomically (temp file in the same folder, ``fsync``, ``os.replace``) and then its line is appended
to the folder's manifest (:mod:`.manifest`), so after a kill at any instant every file on disk is
complete and an item counts as done only when its manifest line and all its files exist (at their
recorded sizes) and the line was made from the item's current inputs
(:func:`.job_plan.inputs_match`: its recorded ``inputs`` and the fingerprint of its ``source``
file); an item whose inputs changed is redone.
Resuming recomputes a batch that was cut short (same batch composition and per-item seeds, so the
result equals an uninterrupted run) but rewrites only the items that are missing or changed.
Byte-equality needs the same ``--batch-size`` and number of ranks: the U-Net's float results move
at the 1e-8 level with the batch composition, which can flip near-tie pixels.

With several ranks (mmengine / torch.distributed launchers) each rank takes
``items[rank::world_size]``. One job at a time writes into a folder (:mod:`.folder_lock`).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
from mmengine.dist import get_dist_info

from .progress import JobInterrupted, JobSummary  # noqa: F401  (part of this module's API)

TMP_SUFFIX = '.tmp'
#: the longest file name, in bytes, on common file systems (ext4, XFS, Btrfs)
NAME_MAX = 255


class UserInputError(ValueError):
    """Bad arguments or inputs found before any work (unknown class, missing model, ...)."""


class SettingsRefused(UserInputError):
    """A run's settings refused where its work meets them (a label cache of another precision):
    rerunning the same command cannot get further."""


class OutputWriteError(RuntimeError):
    """The output folder cannot be written (read-only, disk full, ...)."""


#: seconds a rank whose collective failed waits before it stops (:func:`collective`)
RANK_STOPPED_WAIT_S = 2
#: the tools' process-group timeout: a rank that finished its share waits this long for the
#: others (the shares of a resume can differ by hours of work)
PEER_TIMEOUT_HOURS = 24
#: what gloo says when a partner's connection is gone
PEER_LOST = ('Connection closed by peer', 'Connection reset by peer', 'Broken pipe')


class JobStopped(OutputWriteError):
    """An error stopped :func:`.jobs.run_job` or the prefill (a write failed, a loader or writer
    process was killed, another rank stopped): ``why``, and ``summary`` (a :class:`JobSummary`,
    or the prefill's) counting the items made, which are complete and recorded (exit status 3);
    rerunning the same job resumes."""

    def __init__(self, why: str, summary):
        super().__init__(why)
        self.why, self.summary = why, summary

    def __str__(self) -> str:
        return (f'{self.why}; so far: {self.summary.line()}; finished items are kept: rerun the '
                'same command to resume')


def stop_reason(exc: BaseException) -> Optional[str]:
    """What stopped a job or the prefill, said for its user (with the counts,
    :class:`JobStopped`): a failed write or another rank's stop as they say it, a killed loader
    or writer process (the out-of-memory killer); None for other errors (raised as they are)."""
    if isinstance(exc, OutputWriteError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return 'a writer process died (killed, e.g. by the out-of-memory killer)'
    first = (str(exc).splitlines() or [''])[0]
    if first.startswith('DataLoader worker (pid'):
        return f'a loader process died ({first}; e.g. the out-of-memory killer)'
    return None


#: a run's first items that may all overflow alone, none made, before it stops: the setting's
SETTING_OVERFLOW_ITEMS = 4


def each_alone_on_overflow(run: Callable[[List[int]], List], count: int,
                           fix: str = '--dtype float32') -> List:
    """``run(indices)`` of a batch's ``count`` items; where its maps overflow (NaN / inf:
    :class:`~mmdiffseg.attention.maps.NonFiniteMaps`), each item alone: those that overflow alone
    are failed items (named, counted), the others made. One such image stopped a dataset's job,
    and every resume at it. Every item of several overflowing alone is a setting's, not an
    image's: the run stops, naming ``fix`` (the option that runs in float32)."""
    from ..attention.maps import NonFiniteMaps
    try:
        return run(list(range(count)))
    except NonFiniteMaps as exc:
        if count == 1:
            failed = ItemFailed(f'{exc}; in float32: {fix}')
            failed.__cause__ = exc
            return [failed]
        first = exc
    made = [each_alone_on_overflow(lambda _, i=i: run([i]), 1, fix)[0] for i in range(count)]
    if all(isinstance(one, ItemFailed) for one in made):
        raise UserInputError(f'{first}, for every image of a batch of {count}: the setting, not '
                             f'an image (float16 on this model?): run in float32 ({fix})')
    return made


class OverflowGuard:
    """:func:`each_alone_on_overflow` over a run's batches: where the run's first
    :data:`SETTING_OVERFLOW_ITEMS` items all overflowed alone and none was made, it stops,
    naming ``fix``. Batches of one never show that every image overflows (float16 on this
    model): each was a failed item, or an all-unsure training label, to the end."""

    def __init__(self, fix: str = '--dtype float32'):
        self.fix, self.made, self.failed = fix, 0, 0

    def __call__(self, run: Callable[[List[int]], List], count: int) -> List:
        results = each_alone_on_overflow(run, count, self.fix)
        failed = [one for one in results if isinstance(one, ItemFailed)]
        self.failed += len(failed)
        self.made += count - len(failed)
        if not self.made and self.failed >= SETTING_OVERFLOW_ITEMS:
            raise UserInputError(f'{failed[0].__cause__}, for each of the first {self.failed} '
                                 'images of this run: the setting, not an image (float16 on '
                                 f'this model?): run in float32 ({self.fix})')
        return results


class RankStopped(OutputWriteError):
    """Another rank stopped with an error (printed by it), so this rank cannot finish the job
    (exit status 3 like a failed write: finished items are kept)."""


class LabelWaitTimeout(OutputWriteError):
    """A label this process needs stayed claimed by another process for longer than the label
    cache's ``wait_timeout`` (exit status 3 like a failed write: what was made is kept)."""


def collective(function, *args, **kwargs):
    """``function(*args, **kwargs)``, a collective of every rank. Where it fails for want of a
    partner, this rank stops with one line (:class:`RankStopped`), not the backend's traceback
    (``DistBackendError`` is a ``RuntimeError``): a rank that stopped with an error (printed
    by it) closed its connections, or a rank did not answer within the process group's
    timeout; another failure keeps the backend's first line. A GPU out of memory passes."""
    try:
        return function(*args, **kwargs)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        cause = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        # stop a moment after the rank at fault, so that a launcher watching both (torchrun)
        # names that one as the root cause (and then stops this one: the same message)
        try:
            time.sleep(RANK_STOPPED_WAIT_S)
        except KeyboardInterrupt:
            pass
        if 'timed out' in cause.lower() or 'timeout' in cause.lower():
            what = ("another rank did not answer within the process group's timeout "
                    f'({PEER_TIMEOUT_HOURS} h for the tools)')
        elif any(lost in cause for lost in PEER_LOST):
            what = 'another rank stopped (see its error above)'
        else:
            what = f'a collective of the ranks failed ({cause})'
        raise RankStopped(f'{what}; finished items are kept: rerun the same command to '
                          'resume') from exc


class ItemFailed(Exception):
    """An input item that cannot be processed (corrupt image...): not made, named and counted as
    failed; the job goes on."""


@dataclass
class WorkItem:
    """One unit of work: ``id`` names its outputs; ``payload`` is what the job needs to make it.

    ``source`` (the input file the outputs are made from: its size, modification time and SHA-1
    are recorded when it is loaded) and ``inputs`` (other JSON values the outputs depend on,
    e.g. the image's class names; recorded) are compared on resume: a change redoes the item.
    """

    id: str
    payload: Dict[str, Any] = field(default_factory=dict)
    source: Optional[str] = None
    inputs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemOutput:
    """What a job made for one item: files (path relative to the output folder -> bytes, or a
    function returning them, called in a writer process, e.g. PNG encoding: a module-level
    function or a ``functools.partial`` of one, so that it pickles) and the manifest record
    (JSON-serialisable)."""

    files: Dict[str, Union[bytes, Callable[[], bytes]]]
    record: Dict[str, Any] = field(default_factory=dict)


def item_seed(base_seed: int, key: str) -> int:
    """A per-item seed that depends only on the run seed and the item's key (31 bits), so an item
    gets the same noise whatever its batch, shard or resume point."""
    digest = hashlib.sha256(f'{int(base_seed)}:{key}'.encode()).digest()
    return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF


#: why a write fails, by errno, where the place written to is at fault
WRITE_ERRORS = {errno.ENOSPC: 'the disk is full', errno.EROFS: 'the file system is read-only',
                errno.EACCES: 'permission denied', errno.EDQUOT: 'disk quota exceeded'}


def write_error(path: Path, exc: OSError) -> OutputWriteError:
    """``exc`` (writing ``path``) as one line with its reason (disk full, read-only...)."""
    reason = WRITE_ERRORS.get(exc.errno, exc.strerror or str(exc))
    return OutputWriteError(f'cannot write {path}: {reason} ({type(exc).__name__}: {exc})')


def tmp_tag() -> str:
    """The suffix of this rank's temp files."""
    return f'.r{get_dist_info()[0]}{TMP_SUFFIX}'


def atomic_write(path, data: bytes, tag: Optional[str] = None, replace: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete: a temp file in
    the same folder (suffix ``tag``, default this rank's :func:`tmp_tag`), fsync, ``os.replace``
    (``replace=False``: a hard link, so only where ``path`` does not exist yet, else
    ``FileExistsError``; a replace where the file system has no hard links). Any other OSError
    becomes :class:`OutputWriteError`."""
    path = Path(path)
    tmp = temp_path(path, tag or tmp_tag())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace or not _hard_linked(tmp, path):
            os.replace(tmp, path)
    except _PathExists:
        tmp.unlink()
        raise FileExistsError(errno.EEXIST, 'File exists', str(path)) from None
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise write_error(path, exc) from exc


def temp_path(path: Path, tag: str) -> Path:
    """``.<name><tag>`` beside ``path``; where that is longer than a file name may be (255 bytes
    on common file systems: an image named with 82 CJK characters), ``.<hash of name><tag>``."""
    name = f'.{path.name}{tag}'
    if len(os.fsencode(name)) > NAME_MAX:
        name = f'.{hashlib.sha1(os.fsencode(path.name)).hexdigest()[:16]}{tag}'
    return path.with_name(name)


class _PathExists(Exception):
    """``atomic_write(replace=False)`` found ``path`` there already."""


def _hard_linked(tmp: Path, path: Path) -> bool:
    """``tmp`` moved to ``path`` by a hard link (:class:`_PathExists` where ``path`` exists);
    False where the file system has none."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _PathExists from None
    except OSError:
        return False
    tmp.unlink()
    return True


def remove_stale_temp_files(folder: Path) -> int:
    """Delete the temp files a killed run left: this rank's, and on rank 0 those of ranks this
    run does not have (a killed run with more ranks; no rank of this run writes them, and the job
    lock keeps other runs out). Returns how many."""
    rank, world_size = get_dist_info()
    removed = 0
    for tmp in Path(folder).rglob(f'.*.r*{TMP_SUFFIX}'):
        owner = re.fullmatch(rf'\..+\.r(\d+){re.escape(TMP_SUFFIX)}', tmp.name)
        if owner and (int(owner[1]) == rank or (rank == 0 and int(owner[1]) >= world_size)):
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


def _describe(item: WorkItem) -> str:
    return item.source or ', '.join(f'{k}={v!r}' for k, v in item.payload.items())


def check_item_ids(items: Sequence[WorkItem]) -> None:
    """Refuse two items with the same id (their outputs would overwrite each other) and an id
    that a split file cannot list: mmseg strips each line of ``train.txt``, so ``' x'`` would
    be trained as ``x``, which does not exist."""
    seen: Dict[str, WorkItem] = {}
    for item in items:
        if item.id != item.id.strip() or '\n' in item.id or '\r' in item.id:
            raise UserInputError(f'{_describe(item)!r}: its id {item.id!r} begins or ends with a '
                                 'space or holds a line break, which a split file (train.txt, '
                                 'read line by line and stripped by mmseg) cannot list; rename '
                                 'it')
        first = seen.setdefault(item.id, item)
        if first is not item:
            hint = (' (ids are file names without their extension): rename or move one of '
                    'them' if item.source else '')
            raise UserInputError(f'two inputs have the id {item.id!r}, so their outputs would '
                                 f'overwrite each other: {_describe(first)} and '
                                 f'{_describe(item)}; item ids must be unique{hint}')


def shard(items: Sequence[WorkItem], rank: int, world_size: int) -> List[WorkItem]:
    """This rank's share: every ``world_size``-th item from ``rank`` (in the given order)."""
    return list(items[rank::world_size])


def check_output_folder(folder) -> Path:
    """Create ``folder`` and prove it writable before any work (clear error otherwise; a file
    in its place is bad input)."""
    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = f'--out {folder}' + ('' if existing == folder else f': {existing}')
        raise UserInputError(f'{what} is a file; --out must be a folder (created if missing): '
                             'give another path')
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(folder, exc) from exc
    probe = folder / f'.write_test.r{get_dist_info()[0]}'
    atomic_write(probe, b'')
    probe.unlink()
    return folder


@contextlib.contextmanager
def output_folder(folder) -> Iterator[Path]:
    """:func:`check_output_folder` for the ``with`` block; when the check or the block raises
    (bad input found at the model load, Ctrl-C), the folders made here (``folder`` and its
    missing parents) are removed again if nothing was written into them. A folder that existed
    before, or that holds anything, is kept."""
    folder = Path(folder)
    made = [path for path in (folder, *folder.parents) if not path.exists()]
    try:
        yield check_output_folder(folder)
    except BaseException:
        for path in made:  # innermost first; os.rmdir removes only an empty folder
            try:
                path.rmdir()
            except OSError:
                break
        raise
