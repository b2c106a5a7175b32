"""Resumable offline jobs that keep the GPU fed: :func:`run_job`.

The main process keeps only the GPU work: it takes a loaded batch, runs ``compute`` and hands the
outputs over. Batches are read in loader processes (a torch ``DataLoader``: decoding and resizing
never hold the main process's GIL; batches pinned on CUDA), and an
:class:`~.output_writer.OutputWriter` encodes and writes finished items in a pool of processes
while later batches compute, then commits each batch's manifest lines (one append, one ``fsync``)
once every file of the batch is on disk (the folder's rules: :mod:`.io`). Worker processes never
touch CUDA, ignore Ctrl-C (the main process finishes the writes already handed over, see
:mod:`.progress`; a second Ctrl-C meanwhile abandons them) and die with the main process, so
after a ``kill -9`` no writer outlives the run.

With several ranks (mmengine / torch.distributed launchers) each rank takes
``items[rank::world_size]`` and keeps its own ``manifest.rank<r>.jsonl``; rank 0 merges them into
``manifest.jsonl`` at the end.

Resuming leaves the finished items made from the same inputs as they are
(:func:`.job_plan.plan_job`, decided before the model is built: a rerun of a finished job builds
none) and redoes those whose inputs changed (a corrected label list, an image edited in place): a
loader process records each item's source file fingerprint and path as it reads the file; another
file under a finished item's name is refused while the first is still there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
import os
import sys
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple,
                    Union)

from mmengine.dist import all_gather_object, barrier, broadcast_object_list, get_dist_info
from mmengine.logging import print_log
from torch.utils.data import DataLoader, Dataset

from ..provenance import describe, setting_differences
from .folder_lock import job_lock
from .folders import foreign_folder_refusal
from .io import (ItemFailed, ItemOutput, JobStopped, UserInputError, WorkItem, atomic_write,
                 check_item_ids, collective, output_folder, remove_stale_temp_files, shard,
                 stop_reason, tmp_tag)
from .job_plan import check_sources_distinct, file_fingerprint, is_done, plan_job
from .manifest import Manifest, manifest_files
from .output_writer import OutputWriter
from .progress import (HoldInterrupt, JobInterrupted, JobSummary, ProgressLine, sigint_blocked,
                       start_worker, total_summary)

#: the most loader (and writer) processes chosen by default
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """``min(8, CPUs this process may use / ranks on this node)`` (torchrun's
    ``LOCAL_WORLD_SIZE``), at least 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    ranks = max(1, int(os.environ.get('LOCAL_WORLD_SIZE', '1')))
    return max(1, min(MAX_DEFAULT_WORKERS, (cpus or 1) // ranks))


# -- loading ------------------------------------------------------------------------------------
class LoadedBatch(NamedTuple):
    """One batch as ``compute`` gets it: the items that loaded, ``collate`` of their data (its
    tensors pinned on CUDA) and the items that could not be read, with the reason."""

    items: List[WorkItem]
    data: Any
    failed: List[Tuple[WorkItem, str]]


class _ItemReader(Dataset):
    """``load`` of one item, in a loader process, and the item with its ``source`` file's
    fingerprint in its ``inputs`` (the file was just read: its bytes come from the page cache);
    an unreadable input becomes its :class:`ItemFailed` (named and counted by the main
    process, not fatal). No ``__len__``: the DataLoader indexes it by its ``batch_sampler``."""

    def __init__(self, items: Sequence[WorkItem], load: Callable[[WorkItem], Any]):
        self.items, self.load = items, load

    def __getitem__(self, index: int):
        item = self.items[index]
        try:
            data = self.load(item)
            if item.source is not None:
                item = replace(item, inputs=dict(item.inputs,
                                                 source=file_fingerprint(item.source)))
            return item, data
        except ItemFailed as exc:
            return item, exc


def _collate(pairs, collate: Callable[[List[Any]], Any]) -> LoadedBatch:
    good = [(item, data) for item, data in pairs if not isinstance(data, ItemFailed)]
    failed = [(item, str(data)) for item, data in pairs if isinstance(data, ItemFailed)]
    return LoadedBatch([item for item, _ in good],
                       collate([data for _, data in good]) if good else None, failed)


class BatchLoader:
    """The ``batches`` (lists of indices into ``items``), loaded in order, iterated once: ``load``
    per item and ``collate`` (default ``list``) per batch in ``workers`` processes (``0``: here,
    when iterated), each batch by one process, two batches ahead per process. The processes start
    here and begin reading at once. Without ``load``, the batches' items as they are."""

    def __init__(self, items: Sequence[WorkItem], batches: Sequence[List[int]],
                 load: Optional[Callable[[WorkItem], Any]],
                 collate: Optional[Callable[[List[Any]], Any]] = None, workers: int = 0,
                 pin_memory: bool = False):
        if load is None:
            self.iterator = iter([LoadedBatch([items[i] for i in b], None, []) for b in batches])
            return
        loader = DataLoader(_ItemReader(items, load), batch_sampler=batches,
                            collate_fn=partial(_collate, collate=collate or list),
                            num_workers=workers, pin_memory=pin_memory,
                            worker_init_fn=partial(start_worker, os.getpid()) if workers else None,
                            multiprocessing_context='fork' if workers else None)
        with sigint_blocked():
            self.iterator = iter(loader)

    def __iter__(self) -> Iterator[LoadedBatch]:
        return self.iterator

    def __enter__(self) -> 'BatchLoader':
        return self

    def __exit__(self, *exc_info) -> None:
        """Stop the loader processes (the DataLoader's iterator does when it is dropped)."""
        self.iterator = iter(())


# -- the job ------------------------------------------------------------------------------------
LoadFn = Callable[[WorkItem], Any]
ComputeFn = Callable[[List[WorkItem], Any], List[Union[ItemOutput, ItemFailed]]]


def check_job_sizes(batch_size, workers) -> None:
    """Refuse a batch size below 1 and a negative worker count before any work (they failed in
    the job's plan or its process pool, in words of their own)."""
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or \
            batch_size < 1:
        raise UserInputError(f'batch_size (--batch-size) must be an integer of 1 or more, got '
                             f'{batch_size!r}')
    if workers is not None and (not isinstance(workers, numbers.Integral) or
                                isinstance(workers, bool) or workers < 0):
        raise UserInputError(f'workers (--workers) must be None (the default), 0 (load and '
                             f'write in this process) or more, got {workers!r}')


def run_job(items: Sequence[WorkItem], load: Optional[LoadFn], compute: Optional[ComputeFn],
            out_dir, header: Dict[str, Any], batch_size: int = 1,
            split_file: Optional[str] = None, workers: Optional[int] = None,
            collate: Optional[Callable[[List[Any]], Any]] = None, pin_memory: bool = False,
            prepare: Optional[Callable[[], ComputeFn]] = None, progress_file=None) -> JobSummary:
    """Run ``compute`` over ``items`` in fixed batches, resumably, on this rank's shard.

    Args:
        items: every item of the job (all ranks), in a deterministic order.
        load: reads one item's inputs in a loader process (``None``: the job reads nothing);
            raises :class:`ItemFailed` for an unusable input (named and counted, not fatal).
        compute: ``(items, collate(their loaded inputs))`` -> one :class:`ItemOutput` per item
            (the GPU work, in this process), or an :class:`ItemFailed` for an item that cannot
            be made (named and counted as failed, as an unreadable input).
        out_dir: output folder (created; must be writable).
        header: the settings that determine the output, recorded in and checked against the
            manifest header.
        split_file: path (relative to ``out_dir``) of a file listing the ids of the finished
            ``items`` (not of other records in the folder), rewritten at the end (e.g.
            ``ImageSets/Segmentation/train.txt``).
        workers: loader processes and writer processes each (``0``: load here, write in one
            thread; ``None``: :func:`default_workers`). The output does not depend on it.
        collate: the loaded inputs of a batch -> what ``compute`` gets (default: the list),
            run in the loader process; ``pin_memory`` pins its tensors (CUDA).
        prepare: instead of ``compute``, a function returning it, called once the loader and
            writer processes run and before anything is written: the tools load the model here,
            so the processes start from a process without it and the first batches are read
            meanwhile; not called when every item is done (no model is built). An error there
            leaves the folder as it was (one this run created is removed again). It may
            complete ``header`` (:func:`~.builders.complete_model_settings`): the folder is
            checked again with it, and it is what the manifest records.

    Resuming leaves an item as it is (counted as ``already_done``) only when its record was made
    from the item's current ``source`` and ``inputs`` (:func:`plan_job`); an item whose inputs
    changed is redone (counted as ``redone``; if it cannot be loaded now, its old files are
    removed and it is named as failed), and a record older than these checks is kept (counted
    as ``unchecked``).

    Returns:
        The :class:`JobSummary` of all ranks (printed by rank 0 as the final line); its time
        counts from the end of ``prepare``.

    Raises:
        UserInputError: ``batch_size`` or ``workers`` out of range, two items have the same
            id, ``out_dir`` is a file, another run is
            writing into it (:mod:`.folder_lock`), its manifest was made with other settings, or
            it has none but holds files the job would replace (a dataset's labels, a split file:
            :func:`.folders.foreign_folder_refusal`), an item's id names outputs made from
            another file (:func:`~.job_plan.check_sources_distinct`), or the ranks were started
            with other settings or list other items (every rank, before any work).
        JobStopped: (an ``OutputWriteError``) a write failed (read-only folder, full disk), a
            loader or writer process died, another rank stopped: the run stops; its ``summary``
            counts what was made.
        RankStopped: another rank stopped with an error (one line, not the backend's).
        JobInterrupted: Ctrl-C; it carries the summary of what was made (all complete).
    """
    progress_file = sys.stdout if progress_file is None else progress_file
    check_job_sizes(batch_size, workers)
    rank, world_size = get_dist_info()
    check_item_ids(items)
    with output_folder(out_dir) as folder, job_lock(folder):
        _check_ranks_agree(header, items)
        _check_job_folder(folder, header, items, split_file)
        manifest = Manifest(folder, header, rank, world_size)
        done = manifest.load()
        check_sources_distinct(done, items)
        remove_stale_temp_files(folder)
        plan = plan_job(folder, done, shard(items, rank, world_size), batch_size)
        summary = JobSummary(already_done=len(plan.finished), unchecked=plan.unchecked)
        bar = ProgressLine(len(plan.mine) - len(plan.finished) if rank == 0 else 0,
                           progress_file, ranks=world_size)
        workers = default_workers() if workers is None else workers

        def made(item: WorkItem, record: Dict) -> None:
            done[item.id] = record
            summary.made += 1
            summary.redone += item.id in plan.changed
            if record.get('labelled') == 0:
                summary.unlabelled.append(item.id)
            elif record.get('class_share') == 0:
                summary.classless.append(item.id)
            bar.update()

        def failed(item: WorkItem, reason: str) -> None:
            if item.id in plan.changed:  # its files were made from the old inputs
                for rel in done[item.id].get('files', []):
                    (folder / rel).unlink(missing_ok=True)
            summary.failed.append((item.id, reason))
            bar.end_line()
            _log_failed(item.id, reason)
            bar.update()

        start = time.time()
        writer = OutputWriter(folder, manifest, workers, tmp_tag(), made, failed)
        # Ctrl-C: the loaders stop, the writer commits what was handed over, then JobInterrupted;
        # a second Ctrl-C meanwhile: the writer abandons the writes in flight
        try:
            with bar, writer, BatchLoader(plan.mine, plan.todo, load, collate, workers,
                                          pin_memory) as loaded, HoldInterrupt() as interrupt:
                if prepare is not None and plan.todo:  # nothing to compute: no model is built
                    compute = prepare()
                    manifest.complete(header)
                    start = time.time()
                manifest.start()
                bar.start()
                for batch in loaded:
                    writer.raise_error()
                    new = [it.id not in plan.finished for it in batch.items]
                    outputs = compute(batch.items, batch.data) if any(new) else []
                    mine = [(it, out) for it, out, is_new in zip(batch.items, outputs, new)
                            if is_new]
                    writer.submit([(it, out) for it, out in mine
                                   if not isinstance(out, ItemFailed)],
                                  [(it, why) for it, why in batch.failed
                                   if it.id not in plan.finished]
                                  + [(it, str(out)) for it, out in mine
                                     if isinstance(out, ItemFailed)])
        except KeyboardInterrupt:
            summary.seconds = time.time() - start
            raise JobInterrupted(summary, abandoned=writer.abandoned) from None
        except RuntimeError as exc:  # OutputWriteError and BrokenProcessPool are RuntimeErrors
            why = stop_reason(exc)
            if why is None:
                raise
            summary.seconds = time.time() - start
            raise JobStopped(why, summary) from exc
        summary.seconds = time.time() - start
        if interrupt.caught:
            raise JobInterrupted(summary) from None
        # under the lock: rank 0 waits there for the other ranks' shares, then merges
        return _finish(folder, manifest, items, split_file, summary, done)


def _check_ranks_agree(header: Dict[str, Any], items: Sequence[WorkItem]) -> None:
    """Refuse, on every rank and before any work, ranks started with other settings (e.g.
    another ``--classes`` on one node) or listing other items (a node's copy of the images
    lacks a file): each rank would work on its share of its own list, and the merge would
    refuse the other headers only at the end."""
    rank, world_size = get_dist_info()
    if world_size == 1:
        return
    ids = '\n'.join(it.id for it in items).encode()
    mine = (json.loads(json.dumps(header)), hashlib.sha1(ids).hexdigest(), len(items))
    ranks = collective(all_gather_object, mine)
    (header0, digest0, count0), problems = ranks[0], []
    for other, (theirs, digest, count) in enumerate(ranks):
        differing = [f'{key}: rank 0 has {describe(want)}, rank {other} has {describe(have)}'
                     for key, have, want in setting_differences(theirs, header0)]
        if differing:
            problems.append(f'rank {other} has other settings ({"; ".join(differing)})')
        elif count != count0:
            problems.append(f'rank {other} lists {count} items, rank 0 lists {count0}')
        elif digest != digest0:
            problems.append(f'rank {other} lists other items than rank 0 (or in another order)')
    if problems:
        raise UserInputError(
            'the ranks of this run do not agree: ' + '; '.join(problems) + '. Start every rank '
            'with the same command and the same inputs (the same files on every node); '
            'nothing was written')


def _check_job_folder(folder: Path, header: Dict[str, Any], items: Sequence[WorkItem],
                      split_file: Optional[str]) -> None:
    """Refuse a folder that is no job folder but holds files the job would replace
    (:func:`.folders.foreign_folder_refusal`). Rank 0 looks and tells the others, which wait
    for its answer, so no rank has written into the folder yet."""
    rank, world_size = get_dist_info()
    refusal = [foreign_folder_refusal(folder, header.get('tool'), [it.id for it in items],
                                      split_file) if rank == 0 else None]
    if world_size > 1:
        collective(broadcast_object_list, refusal, src=0)
    if refusal[0]:
        raise UserInputError(refusal[0])


def _log_failed(item_id: str, reason: str) -> None:
    print_log(f'failed {item_id}: {reason} (not made; counted as failed)', logger='current',
              level=logging.WARNING)   # (a log searched for warnings finds it)


def _warn_unlisted(folder: Path, split_file: str, listed: int, unlisted: Sequence[str]) -> None:
    """Name the finished outputs of earlier runs on other inputs, which ``split_file`` (this
    run's inputs) leaves out: one folder filled by a run per Cityscapes city lists the last city
    only."""
    if unlisted:
        print_log(f'{folder / split_file} lists the {listed} finished items of this run\'s '
                  f'inputs; {len(unlisted)} made in {folder} by earlier runs on other inputs '
                  f'({", ".join(unlisted[:3])}{", ..." if len(unlisted) > 3 else ""}) are not in '
                  f'it, so a dataset reading that split leaves them out: give every input to one '
                  f"run (pseudo_label.py: --dataset-config with the dataset's mmseg config, "
                  f'--split train; synthesize.py: --classes and --images-per-class that cover '
                  f'them), or each run its own --out', logger='current',
                  level=logging.WARNING)


def _finish(folder: Path, manifest: Manifest, items: Sequence[WorkItem],
            split_file: Optional[str], summary: JobSummary, done: Dict[str, Dict]) -> JobSummary:
    """After every rank's share: rank 0 merges the rank manifests (one process: ``done``, the
    records loaded and made, is the manifest) and rewrites the split file (every finished item
    of ``items``, in their order) and prints the summary of all ranks (returned)."""
    rank, world_size = get_dist_info()
    # every rank's summary and where its run's records start in its manifest (Manifest.load)
    parts = [(summary, manifest.path.name, manifest.start_size)]
    if world_size > 1:  # (after every rank's share)
        try:
            parts = collective(all_gather_object, parts[0])
        except KeyboardInterrupt:  # waiting for the others: this rank's share is complete
            raise JobInterrupted(summary) from None
        summary = total_summary([part[0] for part in parts])
    if rank == 0:
        for other, part in enumerate(parts[1:], start=1):  # their consoles show errors only
            for item_id, reason in part[0].failed:  # (cli.quiet_other_ranks)
                _log_failed(item_id, f'{reason}, on rank {other}')
        rank_files = manifest_files(folder, ranks_only=True)
        merged = (manifest.merge_ranks([it.id for it in items], [p[1:] for p in parts])
                  if rank_files else list(done.values()))
        if split_file:  # this job's finished items (not those of inputs gone since)
            order = {it.id: i for i, it in enumerate(items)}
            finished = [r['id'] for r in merged if is_done(folder, r)]
            ids = sorted((i for i in finished if i in order), key=order.get)
            atomic_write(folder / split_file, ''.join(i + '\n' for i in ids).encode())
            _warn_unlisted(folder, split_file, len(ids), [i for i in finished if i not in order])
            lost = summary.made + summary.already_done - len(ids)
            if lost > 0:  # the folder (or files in it) deleted or moved while the run wrote
                print_log(f'{lost} of the items counted below as made or done have lost their '
                          f'files in {folder} since (the folder deleted or moved during the '
                          f'run?): {folder / split_file} leaves them out; rerun the same command '
                          'to make them again', logger='current', level=logging.WARNING)
    if world_size > 1:  # every rank returns once the folder is complete
        collective(barrier)
    if rank == 0:
        print_log(f'summary: {summary.line()}', logger='current')
        for line in summary.details():
            print_log(line, logger='current')
    return summary
