"""Writing a job's finished items while later batches compute: :class:`OutputWriter`.

Files are encoded and written atomically in a pool of processes; a batch's manifest lines are
appended once all its files are on disk (the folder's rules: :mod:`.io`). A second Ctrl-C while a
job stops abandons the writes still in flight instead of waiting for them.
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .io import ItemOutput, WorkItem, atomic_write
from .manifest import Manifest
from .progress import sigint_blocked, start_worker

__all__ = ['OutputWriter', 'PENDING_BATCHES']

#: batches handed to the writer and not yet committed before the main process waits
PENDING_BATCHES = 4


def write_items(folder: str, items_files: List[Dict[str, Any]],
                tmp_tag: str) -> List[Union[Dict[str, int], BaseException]]:
    """Some items' files, each atomically (in a writer process: encoding happens here); per item
    the size of each file written (recorded, so that a resume finds a damaged file), or the
    error that stopped its writing."""
    results: List[Union[Dict[str, int], BaseException]] = []
    for files in items_files:
        try:
            sizes = {}
            for rel, data in files.items():
                data = data() if callable(data) else data
                atomic_write(Path(folder) / rel, data, tmp_tag)
                sizes[rel] = len(data)
            results.append(sizes)
        except Exception as exc:  # noqa: B902  (reported by the committer, item by item)
            results.append(exc)
    return results


class OutputWriter:
    """Encodes and writes finished items while later batches compute, and commits them.

    Files go to a pool: ``workers`` processes (one thread with ``0``), each batch cut into one
    task per process. A committer thread takes the batches in order; for each it reports the
    items that failed to load, waits for the batch's files, then appends the manifest lines (the
    output's record and the item's ``inputs``) of the items whose files were all written in one
    write with one ``fsync`` and reports them made. An item is done only after both. The first
    write error is kept and raised by :meth:`raise_error` (the job stops at its next batch) or on
    leaving the ``with`` block, after every batch handed over is committed.

    Leaving the block on a Ctrl-C, or getting one while the last batches commit, means a second
    Ctrl-C (the job holds the first inside the block and stops its loaders, see
    :class:`~.progress.HoldInterrupt`): the writes in flight are abandoned (:meth:`abandon`).

    Args:
        made: called with ``(item, record)`` for each committed item (committer thread).
        failed: called with ``(item, reason)`` for each item that could not be loaded.
    """

    def __init__(self, folder: Path, manifest: Manifest, workers: int, tmp_tag: str,
                 made: Callable[[WorkItem, Dict], None],
                 failed: Callable[[WorkItem, str], None]):
        self.folder, self.manifest, self.tmp_tag = folder, manifest, tmp_tag
        self.made, self.failed = made, failed
        self.tasks_per_batch = max(1, workers)
        self.pool = self._pool(workers)
        self.pending: queue.Queue = queue.Queue(maxsize=PENDING_BATCHES)
        self.error: Optional[BaseException] = None
        self.abandoned = False
        self.thread = threading.Thread(target=self._commit_batches, name='mmdiffseg-commit',
                                       daemon=True)
        self.thread.start()

    @staticmethod
    def _pool(workers: int) -> Executor:
        if not workers:
            return ThreadPoolExecutor(1)
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context('fork'),
                                   initializer=start_worker, initargs=(os.getpid(),))
        with sigint_blocked():  # forks every process now, before any other thread of the job
            pool.submit(int)
        return pool

    def submit(self, outputs: List[Tuple[WorkItem, ItemOutput]],
               failed: List[Tuple[WorkItem, str]]) -> None:
        """Hand over one batch: its finished outputs and the items that could not be loaded
        (waits while :data:`PENDING_BATCHES` batches are not committed yet)."""
        size = -(-len(outputs) // self.tasks_per_batch)
        chunks = [outputs[i:i + size] for i in range(0, len(outputs), size)] if outputs else []
        futures = [self.pool.submit(write_items, str(self.folder),
                                    [output.files for _, output in chunk], self.tmp_tag)
                   for chunk in chunks]
        self.pending.put((chunks, futures, failed))

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _commit_batches(self) -> None:
        while True:
            batch = self.pending.get()
            if batch is None:
                return
            try:
                self._commit(*batch)
            except BaseException as exc:  # noqa: B902  (kept; raised by the main thread)
                self.error = self.error or exc

    def _commit(self, chunks, futures, failed) -> None:
        for item, reason in failed:
            self.failed(item, reason)
        written, error = [], None
        for chunk, future in zip(chunks, futures):
            try:
                results = future.result()
            except BaseException as exc:  # noqa: B902  (a writer process died...)
                results = [exc] * len(chunk)
            for (item, output), result in zip(chunk, results):
                if isinstance(result, BaseException):
                    error = error or result
                    continue
                written.append((item, dict(output.record, **item.inputs, id=item.id,
                                           files=sorted(output.files), sizes=result)))
        if self.abandoned:
            return
        self.manifest.append_many([record for _, record in written])
        for item, record in written:
            self.made(item, record)
        if error is not None:
            raise error

    def __enter__(self) -> 'OutputWriter':
        return self

    def __exit__(self, kind, value, traceback) -> None:
        """Commit every batch handed over, stop the pool; raise a write error unless another
        exception is already on its way. On a Ctrl-C, :meth:`abandon` instead."""
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.abandon()
            return
        try:
            self.pending.put(None)
            self.thread.join()
        except KeyboardInterrupt:
            self.abandon()
            raise
        self.pool.shutdown(wait=True)
        if kind is None:
            self.raise_error()

    def abandon(self) -> None:
        """Stop now: the writer processes are killed and nothing more is committed. The items
        they were writing are not made (the next run removes their temporary files and redoes
        them); the items committed before are kept."""
        self.abandoned = True
        # ProcessPoolExecutor has no public way to stop a running task before Python 3.14
        kill = getattr(self.pool, 'kill_workers', None)
        if kill is not None:
            kill()
        else:
            for process in list((getattr(self.pool, '_processes', None) or {}).values()):
                process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
