"""One job at a time in an output folder: an exclusive lock held by rank 0 for the whole job; the
ranks of a job see rank 0's lock file, so they write into one folder.

Two runs writing into one ``--out`` would do the work twice, and a run with other settings could
write its labels under the first run's manifest header (the header is written once the model has
loaded, minutes after the check). The lock is taken before the manifest is read, so the second run
is refused before any work, naming the process that holds it. It is a POSIX record lock
(``lockf``): the kernel releases it when its process ends, however it ends (``kill -9`` included),
and the job's loader and writer processes do not inherit it (an ``flock`` would be held until the
last of them had died), so a stale lock file never blocks a rerun. The holder removes the file
before releasing it, and a process that locked a file since removed tries again, so the folder is
left as it was and two runs never hold two files. On a file system without locks the job runs
unguarded, with a warning.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from typing import Iterator, Optional

from mmengine.dist import all_gather_object, broadcast_object_list, get_dist_info
from mmengine.logging import print_log

from .io import UserInputError, collective

LOCK_NAME = '.mmdiffseg-job.lock'
#: how long a rank looks for rank 0's lock file: NFS clients cache a folder's listing for up to a
#: minute (``acdirmax``), so another node may see a new file that late
SHARED_FOLDER_WAIT_S = 60


def _try_lock(folder: Path) -> tuple:
    """``(fd, None)`` holding the folder's lock, or ``(None, who holds it)``."""
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 200, 0).decode(errors='replace').strip() or 'another process'
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                return None, holder
            path.unlink(missing_ok=True)
            print_log(f'cannot lock {path} ({exc}): a second run into this folder would not be '
                      'stopped', logger='current', level=logging.WARNING)
            return None, None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # its holder removed it meanwhile: lock the file there now
    started = datetime.datetime.now().isoformat(timespec='seconds')
    os.ftruncate(fd, 0)
    os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()}, started {started}'.encode(), 0)
    os.fsync(fd)  # the other nodes' ranks read it (:func:`_check_one_folder`)
    return fd, None


def _read_mark(folder: Path) -> Optional[str]:
    try:
        return (folder / LOCK_NAME).read_text(errors='replace')
    except OSError:
        return None


def _check_one_folder(folder: Path, mark: str, holds: bool) -> None:
    """Refuse, on every rank, ranks whose ``folder`` is not rank 0's (node-local disks: each
    node its own ``--out``): rank 0's lock file, which names its process, is not there. Their
    labels would stay on their nodes and their manifests out of the merge, with exit 0. The
    rank that ``holds`` the lock does not open the file (that would release the lock)."""
    deadline = time.monotonic() + SHARED_FOLDER_WAIT_S
    while not holds and _read_mark(folder) != mark and time.monotonic() < deadline:
        time.sleep(1)
    seen = collective(all_gather_object, holds or _read_mark(folder) == mark)
    apart = [rank for rank, same in enumerate(seen) if not same]
    if apart:
        raise UserInputError(
            f'rank(s) {", ".join(map(str, apart))} do not see the folder rank 0 writes into '
            f'({folder}: its lock file is not there; a node-local disk?): their labels would '
            "stay apart from rank 0's and out of its manifest; give every rank one --out on a "
            'file system that all nodes share (nothing was written)')


@contextlib.contextmanager
def job_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s job lock for the ``with`` block (rank 0 takes it; every rank learns
    whether it could, so all of them stop).

    Raises:
        UserInputError: another run holds it, named with its process and start time.
    """
    rank, world_size = get_dist_info()
    fd: Optional[int] = None
    holder = mark = None
    if rank == 0:
        fd, holder = _try_lock(folder)
        # read through the held descriptor: closing any other one of this file drops the lock
        mark = None if fd is None else os.pread(fd, 200, 0).decode(errors='replace')
    if world_size > 1:
        shared = [holder, mark]
        collective(broadcast_object_list, shared, src=0)
        holder, mark = shared
    if holder is not None:
        raise UserInputError(
            f'another run is writing into {folder} ({holder}): two runs in one folder would do '
            'the work twice; wait for it to end (or stop it), then rerun to resume, or give '
            'this run another --out')
    try:
        if world_size > 1 and mark is not None:
            _check_one_folder(folder, mark, holds=fd is not None)
        yield
    finally:
        if fd is not None:
            (folder / LOCK_NAME).unlink(missing_ok=True)  # while held: see the module's note
            os.close(fd)
