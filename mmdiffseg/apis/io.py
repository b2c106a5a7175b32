"""Resumable offline jobs: atomic writes, a JSON-lines manifest, sharding, progress and summary.

A job is a list of :class:`WorkItem` cut into fixed batches. Each finished item's files are written
atomically (temp file in the same folder, ``fsync``, ``os.replace``) and then one manifest line is
appended (``flush`` + ``fsync``), so after a kill at any instant every file on disk is complete and
an item counts as done only when its manifest line and all its files exist. Resuming recomputes the
one batch that was cut short (same batch composition and per-item seeds, so the result equals an
uninterrupted run) but rewrites only the items that are missing. Byte-equality needs the same
``--batch-size`` and number of ranks: the U-Net's float results move at the 1e-8 level with the
batch composition, which can flip near-tie pixels.

The manifest's first line is a header with every setting that changes the output (model, generator
config, prompts, seed...); resuming into a folder whose header differs is refused. With several
ranks (mmengine / torch.distributed launchers) each rank takes ``items[rank::world_size]`` and keeps
its own ``manifest.rank<r>.jsonl``; rank 0 merges them into ``manifest.jsonl`` at the end.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from mmengine.dist import all_gather_object, barrier, get_dist_info
from mmengine.logging import print_log

from ..provenance import describe, setting_differences
from .progress import HoldInterrupt, JobInterrupted, JobSummary, ProgressLine, total_summary

MANIFEST_NAME = 'manifest.jsonl'
MANIFEST_VERSION = 1
TMP_SUFFIX = '.tmp'


class UserInputError(ValueError):
    """Bad arguments or inputs found before any work (unknown class, missing model, ...)."""


class OutputWriteError(RuntimeError):
    """The output folder cannot be written (read-only, disk full, ...)."""


class ItemSkipped(Exception):
    """An input item that cannot be processed (corrupt image...): skipped, named and counted."""


@dataclass
class WorkItem:
    """One unit of work: ``id`` names its outputs; ``payload`` is what the job needs to make it."""

    id: str
    payload: Dict[str, Any] = field(default_factory=dict)


@dataclass
class ItemOutput:
    """What a job made for one item: files (path relative to the output folder -> bytes, or a
    function returning them, called in the writer thread, e.g. PNG encoding) and the manifest
    record (JSON-serialisable)."""

    files: Dict[str, Union[bytes, Callable[[], bytes]]]
    record: Dict[str, Any] = field(default_factory=dict)


def item_seed(base_seed: int, key: str) -> int:
    """A per-item seed that depends only on the run seed and the item's key (31 bits), so an item
    gets the same noise whatever its batch, shard or resume point."""
    digest = hashlib.sha256(f'{int(base_seed)}:{key}'.encode()).digest()
    return int.from_bytes(digest[:4], 'little') & 0x7FFFFFFF


def _write_error(path: Path, exc: OSError) -> OutputWriteError:
    reason = {errno.ENOSPC: 'the disk is full', errno.EROFS: 'the file system is read-only',
              errno.EACCES: 'permission denied', errno.EDQUOT: 'disk quota exceeded'}.get(
                  exc.errno, exc.strerror or str(exc))
    return OutputWriteError(f'cannot write {path}: {reason} ({type(exc).__name__}: {exc})')


def _tmp_tag() -> str:
    return f'.r{get_dist_info()[0]}{TMP_SUFFIX}'


def atomic_write(path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that ``path`` is either absent/old or complete: a temp file in
    the same folder, fsync, ``os.replace``. OSError becomes :class:`OutputWriteError`."""
    path = Path(path)
    tmp = path.with_name(f'.{path.name}{_tmp_tag()}')
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise _write_error(path, exc) from exc


def remove_stale_temp_files(folder: Path) -> int:
    """Delete this rank's temp files left by a killed run; returns how many."""
    removed = 0
    tag = _tmp_tag()
    for tmp in Path(folder).rglob(f'.*{tag}'):
        tmp.unlink()
        removed += 1
    return removed


class Manifest:
    """The JSON-lines manifest of an output folder: a header line, then one line per finished
    item (``{"id": ..., "files": [...], ...}``)."""

    def __init__(self, folder, header: Dict[str, Any], rank: int = 0, world_size: int = 1):
        self.folder = Path(folder)
        self.header = json.loads(json.dumps(
            dict(header, manifest='mmdiffseg', version=MANIFEST_VERSION), sort_keys=True))
        name = MANIFEST_NAME if world_size == 1 else f'manifest.rank{rank}.jsonl'
        self.path = self.folder / name

    # -- reading ------------------------------------------------------------------------------
    def _read(self, path: Path, repair: bool) -> List[Dict]:
        """Records of one manifest file after checking its header; a torn last line (a kill
        during the append) is dropped, and cut off the file when ``repair``."""
        raw = path.read_bytes()
        lines = raw.split(b'\n')
        good_end, records, header = 0, [], None
        for i, line in enumerate(lines):
            if not line.strip():
                good_end += len(line) + 1
                continue
            try:
                value = json.loads(line)
            except ValueError:
                if i < len(lines) - 1 and any(rest.strip() for rest in lines[i + 1:]):
                    raise UserInputError(f'{path}: line {i + 1} is not JSON; the manifest is '
                                         'damaged (not by an interrupted append)') from None
                break
            if i == len(lines) - 1:   # complete JSON but no newline: torn before the '\n'
                break
            if header is None:
                header = value
                self._check_header(path, header)
            else:
                records.append(value)
            good_end += len(line) + 1
        if header is None:
            raise UserInputError(f'{path} has no header line; remove the folder or pick another '
                                 '--out')
        if repair and good_end < len(raw):
            with open(path, 'r+b') as f:
                f.truncate(good_end)
                os.fsync(f.fileno())
        return records

    def _check_header(self, path: Path, found: Dict) -> None:
        diffs = [f'  {key}: folder has {describe(have)}, this run has {describe(want)}'
                 for key, have, want in setting_differences(found, self.header)]
        if not diffs:
            return
        raise UserInputError(
            f'refusing to resume into {self.folder}: its manifest ({path.name}) was made with '
            'different settings:\n' + '\n'.join(diffs) +
            '\nUse another --out folder, or rerun with the same settings.')

    def load(self) -> Dict[str, Dict]:
        """id -> record of every finished item in the folder (all rank files), checking headers
        and repairing this rank's torn last line."""
        records: Dict[str, Dict] = {}
        for path in sorted(self.folder.glob('manifest*.jsonl')):
            for record in self._read(path, repair=(path == self.path)):
                records[record['id']] = record
        return records

    # -- writing ------------------------------------------------------------------------------
    def start(self) -> None:
        """Create this rank's manifest with its header if absent."""
        if not self.path.exists():
            atomic_write(self.path, (json.dumps(self.header, sort_keys=True) + '\n').encode())

    def append(self, record: Dict) -> None:
        line = (json.dumps(record, sort_keys=True) + '\n').encode()
        try:
            with open(self.path, 'ab') as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise _write_error(self.path, exc) from exc

    def merge_ranks(self, order: Sequence[str]) -> List[Dict]:
        """Rank 0 after a distributed run: all records into ``manifest.jsonl`` (in ``order``),
        written atomically; the rank files are removed after."""
        records = self.load()
        rank = {item_id: i for i, item_id in enumerate(order)}
        merged = sorted(records.values(), key=lambda r: (rank.get(r['id'], len(rank)), r['id']))
        text = ''.join(json.dumps(r, sort_keys=True) + '\n' for r in [self.header] + merged)
        atomic_write(self.folder / MANIFEST_NAME, text.encode())
        for path in self.folder.glob('manifest.rank*.jsonl'):
            path.unlink()
        return merged


def is_done(folder: Path, record: Optional[Dict]) -> bool:
    return record is not None and all((folder / f).is_file() for f in record.get('files', []))


def shard(items: Sequence[WorkItem], rank: int, world_size: int) -> List[WorkItem]:
    """This rank's share: every ``world_size``-th item from ``rank`` (in the given order)."""
    return list(items[rank::world_size])


def check_output_folder(folder) -> Path:
    """Create ``folder`` and prove it writable before any work (clear error otherwise)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(folder, exc) from exc
    probe = folder / f'.write_test.r{get_dist_info()[0]}'
    atomic_write(probe, b'')
    probe.unlink()
    return folder


def check_resumable(out_dir, header: Dict[str, Any]) -> None:
    """Before loading any model: the output folder is writable and, if it holds a manifest,
    was made with the same settings (:class:`OutputWriteError` / :class:`UserInputError`)."""
    rank, world_size = get_dist_info()
    Manifest(check_output_folder(out_dir), header, rank, world_size).load()


LoadFn = Callable[[WorkItem], Any]
ComputeFn = Callable[[List[WorkItem], List[Any]], List[ItemOutput]]


def run_job(items: Sequence[WorkItem], load: LoadFn, compute: ComputeFn, out_dir,
            header: Dict[str, Any], batch_size: int = 1, split_file: Optional[str] = None,
            num_loaders: int = 2, progress_file=None) -> JobSummary:
    """Run ``compute`` over ``items`` in fixed batches, resumably, on this rank's shard.

    Args:
        items: every item of the job (all ranks), in a deterministic order.
        load: reads one item's inputs (runs in loader threads, one batch ahead of ``compute``);
            raises :class:`ItemSkipped` for an unusable input (named and counted, not fatal).
        compute: the loaded batch -> one :class:`ItemOutput` per item (the GPU work).
        out_dir: output folder (created; must be writable).
        header: the settings that determine the output, recorded in and checked against the
            manifest header.
        split_file: path (relative to ``out_dir``) of a file listing the ids of all finished
            items, rewritten at the end (e.g. ``ImageSets/Segmentation/train.txt``).

    Returns:
        The :class:`JobSummary` of all ranks (printed by rank 0 as the final line).

    Raises:
        UserInputError: the folder's manifest was made with other settings.
        OutputWriteError: a write failed (read-only folder, full disk): the run stops.
        JobInterrupted: Ctrl-C; it carries the summary of what was made (all complete).
    """
    start = time.time()
    progress_file = sys.stdout if progress_file is None else progress_file
    rank, world_size = get_dist_info()
    folder = check_output_folder(out_dir)
    manifest = Manifest(folder, header, rank, world_size)
    done = manifest.load()
    remove_stale_temp_files(folder)
    manifest.start()

    mine = shard(items, rank, world_size)
    batches = [mine[i:i + batch_size] for i in range(0, len(mine), batch_size)]
    summary = JobSummary()
    todo_count = sum(not is_done(folder, done.get(it.id)) for it in mine)
    summary.skipped = len(mine) - todo_count
    bar = ProgressLine(todo_count if rank == 0 else 0, progress_file)

    def load_batch(batch):
        if all(is_done(folder, done.get(it.id)) for it in batch):
            return None
        loaded = []
        for it in batch:
            try:
                loaded.append((it, load(it)))
            except ItemSkipped as exc:
                loaded.append((it, exc))
        return loaded

    def write(item: WorkItem, output: ItemOutput) -> None:
        """Files first (atomically), then the manifest line: the item is done only after both."""
        for rel, data in output.files.items():
            atomic_write(folder / rel, data() if callable(data) else data)
        record = dict(output.record, id=item.id, files=sorted(output.files))
        manifest.append(record)
        done[item.id] = record
        summary.made += 1
        bar.update()

    # loaders read one or two batches ahead; one writer thread encodes and writes (in order)
    # while the next batch computes; a failed write stops the run at the next batch; Ctrl-C
    # stops it after the writes already handed to the writer (every item counted is complete)
    with bar, ThreadPoolExecutor(max(1, num_loaders)) as pool, ThreadPoolExecutor(1) as writer, \
            HoldInterrupt(pool) as interrupt:
        pending = [pool.submit(load_batch, b) for b in batches[:2]]
        writes = []
        for index in range(len(batches)):
            loaded = pending.pop(0).result()
            if index + 2 < len(batches):
                pending.append(pool.submit(load_batch, batches[index + 2]))
            for future in [w for w in writes if w.done()]:
                writes.remove(future)
                future.result()
            if loaded is None:
                continue
            good = [(it, data) for it, data in loaded if not isinstance(data, ItemSkipped)]
            for it, data in loaded:
                if isinstance(data, ItemSkipped) and not is_done(folder, done.get(it.id)):
                    summary.failed.append((it.id, str(data)))
                    bar.end_line()
                    print_log(f'skipped {it.id}: {data}', logger='current')
                    bar.update()
            if not good or all(is_done(folder, done.get(it.id)) for it, _ in good):
                continue
            outputs = compute([it for it, _ in good], [data for _, data in good])
            writes += [writer.submit(write, it, output) for (it, _), output in zip(good, outputs)
                       if not is_done(folder, done.get(it.id))]
        for future in writes:
            future.result()
    if interrupt.caught:
        summary.seconds = time.time() - start
        raise JobInterrupted(summary) from None

    if world_size > 1:
        barrier()
    if rank == 0:
        rank_files = list(folder.glob('manifest.rank*.jsonl'))
        finished = (manifest.merge_ranks([it.id for it in items]) if rank_files else
                    list(manifest.load().values()))
        if split_file:
            order = {it.id: i for i, it in enumerate(items)}
            ids = sorted((r['id'] for r in finished if is_done(folder, r)),
                         key=lambda i: (order.get(i, len(order)), i))
            atomic_write(folder / split_file, ''.join(i + '\n' for i in ids).encode())
    summary.seconds = time.time() - start
    if world_size > 1:
        summary = total_summary(all_gather_object(summary))
    if rank == 0:
        print_log(f'summary: {summary.line()}', logger='current')
        for item_id, reason in summary.failed:
            print_log(f'failed: {item_id}: {reason}', logger='current')
    return summary
