"""What a resumable job reports: a progress bar that never shares its line with a message, the
summary (made, already done, failed, time) and the interruption that carries it; how Ctrl-C reaches
only the main process of a job (its loader and writer processes leave it to the main one)."""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from mmengine.utils import ProgressBar

#: the failed items and the all-unsure labels a summary names by id (each failure was also
#: logged when it happened)
SHOWN_IN_SUMMARY = 20


@dataclass
class JobSummary:
    """What a job did, as its final line says (:meth:`line`): items made, already done (left
    as they were), failed (id, reason), and the time from the end of the model load."""

    made: int = 0
    #: items found finished (made from the same inputs) and left as they are
    already_done: int = 0
    failed: List[Tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: of ``made``: items redone because their inputs changed since they were made
    redone: int = 0
    #: of ``already_done``: items whose records predate input checks (kept unchecked)
    unchecked: int = 0
    #: of ``made``: items whose label is all unsure (255), e.g. no proposal or seed was found
    unlabelled: List[str] = field(default_factory=list)
    #: of ``made``, the others: synthetic masks without a pixel of their own class (no seed)
    classless: List[str] = field(default_factory=list)

    def line(self) -> str:
        rate = self.made / self.seconds if self.seconds > 0 else 0.0
        notes = [f'redone {self.redone} (inputs changed)'] if self.redone else []
        if self.unlabelled:
            notes.append(f'{len(self.unlabelled)} of the labels made all unsure (255)')
        if self.classless:
            notes.append(f'{len(self.classless)} of the masks made without a pixel of their '
                         'class')
        if self.unchecked:
            notes.append(f'{self.unchecked} of the already-done items not checked for changed '
                         'inputs (made by an older version)')
        return '; '.join([f'made {self.made}, already done {self.already_done}, '
                          f'failed {len(self.failed)}, {self.seconds:.1f} s ({rate:.2f} items/s)']
                         + notes)

    def details(self) -> List[str]:
        """The lines after :meth:`line`: the first :data:`SHOWN_IN_SUMMARY` failed items with
        their reasons and all-unsure labels (the manifest's ``labelled`` names every one)."""
        lines = [f'failed: {item_id}: {reason}'
                 for item_id, reason in self.failed[:SHOWN_IN_SUMMARY]]
        if len(self.failed) > SHOWN_IN_SUMMARY:
            lines.append(f'failed: {len(self.failed) - SHOWN_IN_SUMMARY} more (each named in the '
                         'log above)')
        if self.unlabelled:
            more = len(self.unlabelled) - SHOWN_IN_SUMMARY
            lines.append('all unsure (255): ' + ', '.join(self.unlabelled[:SHOWN_IN_SUMMARY]) +
                         (f' and {more} more' if more > 0 else '') +
                         ' (the manifest records each label\'s labelled share as "labelled")')
        if self.classless:
            more = len(self.classless) - SHOWN_IN_SUMMARY
            lines.append('no pixel of their class (trained as background where the label set '
                         'has one): ' + ', '.join(self.classless[:SHOWN_IN_SUMMARY]) +
                         (f' and {more} more' if more > 0 else '') +
                         ' (the manifest records each mask\'s "class_share")')
        return lines


class JobInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`.jobs.run_job`: the items written so far are complete and recorded;
    ``summary`` counts them. Rerunning the same job resumes. ``abandoned``: a second Ctrl-C
    stopped the writes still in flight (those items are not made)."""

    def __init__(self, summary: JobSummary, abandoned: bool = False):
        super().__init__(summary)
        self.summary, self.abandoned = summary, abandoned

    def __str__(self) -> str:
        how = ('interrupted without waiting for the writes in flight (their items are not made)'
               if self.abandoned else 'interrupted')
        return (f'{how}: {self.summary.line()}; rerun the same command to resume (finished '
                'items are kept)')


#: a terminal's bar is redrawn at most this often (a redraw per item costs a write + flush)
REDRAW_SECONDS = 0.2
#: elsewhere (a log file, a batch system's output) one plain line this often, and at the end
LOG_SECONDS = 30.0
PR_SET_PDEATHSIG = 1


def clock_time(seconds: float) -> str:
    """A duration as ``h:mm:ss`` (``7:31:30``; days as ``1 day, 2:00:00``)."""
    return str(datetime.timedelta(seconds=round(seconds)))


class ProgressLine:
    """Progress of ``total`` items (none when 0), from :meth:`start`. On a terminal: mmengine's
    ``ProgressBar``, redrawn at most every :data:`REDRAW_SECONDS`, on a line of its own
    (:meth:`end_line` before any other output, e.g. a failed item, and on leaving the ``with``
    block: the summary, an error). Elsewhere (``file`` is not a terminal): a plain line at the
    start, every ``log_seconds`` and at the last item (done/total, rate, elapsed, ETA), so a log
    holds lines, not one line of carriage returns per item. ``ranks``: the process group's
    size, where it is more than one: the first line says the progress is rank 0's share."""

    def __init__(self, total: int, file, log_seconds: float = LOG_SECONDS, ranks: int = 1):
        self.file, self.total, self.log_seconds = file, total, log_seconds
        self.ranks = ranks
        self.terminal = bool(getattr(file, 'isatty', lambda: False)())
        self.bar, self.open = None, False
        self.done = self.pending = 0
        self.started = self.shown = None

    def start(self) -> None:
        if self.total:
            self.started = self.shown = time.monotonic()
            if self.ranks > 1:
                self.file.write(f"progress of rank 0's share (the job has {self.ranks} ranks; "
                                'the others go at about its pace):\n')
            if self.terminal:
                self.bar = ProgressBar(self.total, file=self.file)
                self.open = True
            else:
                self.file.write(f'progress: 0/{self.total}\n')
                self.file.flush()

    def update(self) -> None:
        if self.started is None:
            return
        self.done += 1
        self.pending += 1
        now = time.monotonic()
        every = REDRAW_SECONDS if self.terminal else self.log_seconds
        if now - self.shown >= every or self.done == self.total:
            self._show(now)

    def skip(self) -> None:
        """An item found done already (a resumed prefill's cached label): out of the total, so
        the rate and ETA are those of the items still to make."""
        if self.started is None:
            return
        self.total -= 1
        if self.terminal:
            self.bar.task_num -= 1
        if self.done == self.total and self.total:
            self._show(time.monotonic())

    def _show(self, now: float) -> None:
        if self.terminal:
            self.bar.update(self.pending)
            self.open = True
        else:
            elapsed = now - self.started
            rate = self.done / elapsed if elapsed > 0 else 0.0
            eta = clock_time((self.total - self.done) / rate) if rate > 0 else '-'
            self.file.write(f'progress: {self.done}/{self.total} '
                            f'({100 * self.done / self.total:.1f}%), {rate:.2f} items/s, '
                            f'elapsed {clock_time(elapsed)}, ETA {eta}\n')
            self.file.flush()
        self.pending, self.shown = 0, now

    def end_line(self) -> None:
        if self.pending and self.terminal:
            self._show(time.monotonic())
        if self.open:
            self.file.write('\n')
            self.file.flush()
            self.open = False

    def __enter__(self) -> 'ProgressLine':
        return self

    def __exit__(self, *exc_info) -> None:
        self.end_line()


class HoldInterrupt:
    """Ctrl-C in the ``with`` block is held (:attr:`caught`) instead of raised, so the enclosing
    blocks stop the loaders and finish the writes already handed over before the job raises
    :class:`JobInterrupted`."""

    def __init__(self):
        self.caught = False

    def __enter__(self) -> 'HoldInterrupt':
        return self

    def __exit__(self, kind, value, traceback) -> bool:
        if kind is not None and issubclass(kind, KeyboardInterrupt):
            self.caught = True
            return True
        return False


#: what stops a job as Ctrl-C does (SIGTERM: torchrun's right after it forwards a Ctrl-C, and
#: SLURM's scancel's and ``kill``'s; torchrun sends SIGKILL 30 s later, time enough to finish the
#: writes in flight); they reach the worker processes too (torchrun signals a rank's process group)
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def sigint_blocked():
    """SIGINT and SIGTERM blocked in this thread while the block forks worker processes: they
    inherit the mask and ignore both before unblocking them, so a Ctrl-C at that instant prints
    no traceback in a half-started worker; the main process gets it right after the block."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def start_worker(parent_pid: int, _worker_id: Optional[int] = None) -> None:
    """First thing in every loader / writer process: Ctrl-C and SIGTERM are left to the main
    process (no traceback here, and a loader does not die under it; the process was forked with
    both blocked, so none slips in before this) and the process dies with the main process
    (Linux). (OpenCV's thread count is left alone: ``cv2.setNumThreads`` in a process forked
    after OpenCV started its threads never returns.)"""
    for signum in STOP_SIGNALS:  # after torch's loader worker set its own SIGTERM handler
        signal.signal(signum, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if sys.platform.startswith('linux'):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent_pid:  # the main process died before the line above
            os._exit(1)


def total_summary(parts: List[JobSummary]) -> JobSummary:
    """All ranks' summaries as one (time = the slowest rank's)."""
    return JobSummary(made=sum(p.made for p in parts),
                      already_done=sum(p.already_done for p in parts),
                      failed=[f for p in parts for f in p.failed],
                      seconds=max(p.seconds for p in parts),
                      redone=sum(p.redone for p in parts),
                      unchecked=sum(p.unchecked for p in parts),
                      unlabelled=[u for p in parts for u in p.unlabelled],
                      classless=[u for p in parts for u in p.classless])
