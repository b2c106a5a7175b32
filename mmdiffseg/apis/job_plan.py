"""What of a resumable job is still to do (:func:`plan_job`): an item counts as done when its
manifest line's files are all there at their recorded sizes (:func:`is_done`) and the line was made
from the item's current inputs (:func:`inputs_match`: the recorded ``inputs`` and the fingerprint
of its ``source`` file, :func:`file_fingerprint`).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Set, Tuple

from .io import ItemFailed, UserInputError, WorkItem


def is_done(folder: Path, record: Optional[Dict]) -> bool:
    """Whether every file of a finished item's ``record`` is there, at its recorded size (a
    file cut short or replaced by a damaged copy is redone; records older than the sizes are
    checked for the files alone)."""
    if record is None:
        return False
    sizes = record.get('sizes') or {}
    for rel in record.get('files', []):
        try:
            size = (folder / rel).stat().st_size
        except OSError:
            return False
        if rel in sizes and size != sizes[rel]:
            return False
    return True


def _sha1(path) -> Tuple[os.stat_result, str]:
    with open(path, 'rb') as f:
        return os.fstat(f.fileno()), hashlib.sha1(f.read()).hexdigest()


def file_fingerprint(path) -> Dict[str, Any]:
    """``{size, mtime_ns, sha1, path}`` of a file (an item's ``source``, recorded as
    ``source``; ``path`` absolute); :class:`ItemFailed` when it cannot be read."""
    try:
        stat, digest = _sha1(path)
    except OSError as exc:
        raise ItemFailed(f'cannot read {path}: {exc}') from exc
    return dict(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha1=digest,
                path=os.path.abspath(path))


def source_unchanged(path, recorded: Dict[str, Any]) -> bool:
    """Whether the file ``path`` still has the recorded :func:`file_fingerprint`: the same size
    and modification time (a ``stat``, as ``make`` and ``git`` check), or else the same SHA-1
    (the file is read only when its time changed, e.g. after a copy)."""
    try:
        stat = os.stat(path)
        if stat.st_size != recorded.get('size'):
            return False
        return (stat.st_mtime_ns == recorded.get('mtime_ns')
                or _sha1(path)[1] == recorded.get('sha1'))
    except OSError:  # gone or unreadable: not the recorded input
        return False


def check_sources_distinct(done: Dict[str, Dict], items: List[WorkItem]) -> None:
    """Refuse, before any work, an item whose id names finished outputs made from another file
    that is still there as recorded (two cameras' ``IMG_0001.jpg`` labelled into one folder):
    redoing it would overwrite them. The same file changed, or moved, is redone as before;
    records older than the recorded path are not checked."""
    for it in items:
        recorded = (done.get(it.id) or {}).get('source') or {}
        path = recorded.get('path')
        if it.source is None or path is None or os.path.abspath(it.source) == path:
            continue
        if source_unchanged(path, recorded) and not source_unchanged(it.source, recorded):
            raise UserInputError(
                f'{it.source} has the id {it.id!r} of finished outputs in this folder made from '
                f'another file, {path}, still there: outputs are named by the file name, so '
                f'making it would overwrite them; give it another --out (or rename it)')


def inputs_match(item: WorkItem, record: Dict) -> Optional[bool]:
    """Whether ``record`` (a finished item's manifest line) was made from ``item``'s current
    ``inputs`` and ``source``; ``None`` when the record lacks some of them (made before they
    were recorded), so it cannot be told."""
    unknown = False
    for key, value in item.inputs.items():
        if key not in record:
            unknown = True
        elif record[key] != json.loads(json.dumps(value)):
            return False
    if item.source is not None:
        if 'source' not in record:
            unknown = True
        elif not source_unchanged(item.source, record['source']):
            return False
    return None if unknown else True


class JobPlan(NamedTuple):
    """This rank's share of a job (``mine``) against its output folder: the ids made from the
    same inputs (``finished``) or from other ones (``changed``: redone), how many of
    ``finished`` could not be checked (``unchecked``), and the batches still to compute
    (``todo``: lists of indices into ``mine``)."""

    mine: List[WorkItem]
    finished: Set[str]
    changed: Set[str]
    unchecked: int
    todo: List[List[int]]


def plan_job(folder: Path, done: Dict[str, Dict], mine: List[WorkItem],
             batch_size: int) -> JobPlan:
    """What of ``mine`` is done: a record in ``done`` (the folder's manifest) whose files all
    exist (:func:`is_done`) and that was made from the item's current inputs
    (:func:`inputs_match`: recorded ``inputs`` and the ``source`` file's size and time, its
    SHA-1 only when the time changed); decided before any model is built. ``mine`` is cut in
    fixed batches of ``batch_size``: a batch of finished items is never read, one cut short is
    recomputed whole."""
    finished, changed, unchecked = set(), set(), 0
    for it in mine:
        if is_done(folder, done.get(it.id)):
            same = inputs_match(it, done[it.id])
            (changed if same is False else finished).add(it.id)
            unchecked += same is None
    batches = [list(range(i, min(i + batch_size, len(mine))))
               for i in range(0, len(mine), batch_size)]
    todo = [b for b in batches if any(mine[i].id not in finished for i in b)]
    return JobPlan(mine, finished, changed, unchecked, todo)
