"""A job's summary line and recap, the ranks' total, and the progress line's edge cases (no items,
a job stopped part-way on a terminal and in a log, a line ended early for a message), the
rate of a job under a second, and how a loader / writer process starts (Ctrl-C, parent death)."""
import ctypes
import io
import os
import signal
import sys

import pytest

from mmdiffseg.apis import progress
from mmdiffseg.apis.progress import JobInterrupted, JobSummary, ProgressLine, total_summary


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_summary_line_counts_made_items_per_second_to_a_tenth_of_a_second():
    summary = JobSummary(made=6, already_done=4, failed=[('x', 'truncated')], seconds=2.5)
    assert summary.line() == 'made 6, already done 4, failed 1, 2.5 s (2.40 items/s)'
    assert JobSummary().line() == 'made 0, already done 0, failed 0, 0.0 s (0.00 items/s)'
    assert JobSummary(made=3, seconds=0.5).line() == (  # under a second: its true rate
        'made 3, already done 0, failed 0, 0.5 s (6.00 items/s)')


def test_the_summary_line_adds_each_note_in_order():
    summary = JobSummary(made=3, already_done=5, seconds=1.0, redone=1, unchecked=2,
                         unlabelled=['a', 'b'])
    assert summary.line() == (
        'made 3, already done 5, failed 0, 1.0 s (3.00 items/s); redone 1 (inputs changed); '
        '2 of the labels made all unsure (255); 2 of the already-done items not checked for '
        'changed inputs (made by an older version)')


def test_synthetic_masks_without_a_pixel_of_their_class_are_counted_and_named():
    """A mask with a background class and no seed is all background, not all unsure: counted
    apart, and merged over ranks."""
    ranks = [JobSummary(made=2, classless=['cat_00001']), JobSummary(made=1, classless=['dog_3'])]
    summary = progress.total_summary(ranks)
    assert summary.line().endswith('; 2 of the masks made without a pixel of their class')
    assert summary.details() == ['no pixel of their class (trained as background where the label '
                                 'set has one): cat_00001, dog_3 (the manifest records each '
                                 'mask\'s "class_share")']


def test_exactly_twenty_failures_and_unsure_labels_are_all_named_with_no_more_line():
    ids = [f'i{n}' for n in range(progress.SHOWN_IN_SUMMARY)]
    lines = JobSummary(failed=[(i, 'bad') for i in ids], unlabelled=ids).details()
    assert lines[:-1] == [f'failed: {i}: bad' for i in ids]
    assert lines[-1] == ('all unsure (255): ' + ', '.join(ids) + ' (the manifest records each '
                         'label\'s labelled share as "labelled")')


@pytest.mark.parametrize('abandoned', [False, True])
def test_an_interruption_says_what_was_made_and_whether_writes_were_dropped(abandoned):
    text = str(JobInterrupted(JobSummary(made=2, seconds=1.0), abandoned))
    how = ('interrupted without waiting for the writes in flight (their items are not made)'
           if abandoned else 'interrupted')
    assert text == (f'{how}: made 2, already done 0, failed 0, 1.0 s (2.00 items/s); rerun the '
                    'same command to resume (finished items are kept)')


def test_the_ranks_total_adds_every_count_and_takes_the_slowest_time():
    ranks = [JobSummary(made=2, already_done=3, failed=[('a', 'x')], seconds=4.0, redone=1,
                        unchecked=2, unlabelled=['u']),
             JobSummary(made=5, already_done=1, seconds=9.0, redone=2, unchecked=0),
             JobSummary(made=1, already_done=0, failed=[('b', 'y')], seconds=1.0, unchecked=4)]
    assert total_summary(ranks) == JobSummary(made=8, already_done=4,
                                              failed=[('a', 'x'), ('b', 'y')], seconds=9.0,
                                              redone=3, unchecked=6, unlabelled=['u'])


@pytest.mark.parametrize('screen', [Terminal, io.StringIO])
def test_a_job_with_nothing_to_do_shows_no_progress(screen):
    file = screen()
    with ProgressLine(0, file) as bar:
        bar.start()
        bar.update()
    assert file.getvalue() == ''


def test_a_log_stopped_part_way_ends_on_its_last_timed_line(monkeypatch):
    """A failure mid-job in a log: no extra line and no stray newline before the error."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    log = io.StringIO()
    with ProgressLine(10, log, log_seconds=2.0) as bar:
        bar.start()
        for _ in range(5):
            clock[0] += 1.0
            bar.update()
    assert log.getvalue() == (
        'progress: 0/10\n'
        'progress: 2/10 (20.0%), 1.00 items/s, elapsed 0:00:02, ETA 0:00:08\n'
        'progress: 4/10 (40.0%), 1.00 items/s, elapsed 0:00:04, ETA 0:00:06\n')


@pytest.mark.parametrize('screen', [Terminal, io.StringIO])
def test_items_found_done_leave_the_total_so_the_eta_is_of_the_rest(monkeypatch, screen):
    """A resumed prefill finds its first labels cached in no time: they leave the total (the
    rate counted them as made, an ETA of 2 min for 6 left)."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    file = screen()
    with ProgressLine(10, file, log_seconds=2.0) as bar:
        bar.start()
        for _ in range(6):
            bar.skip()
        for _ in range(2):
            clock[0] += 1.0
            bar.update()
    last = file.getvalue().replace('\r', '\n').strip().splitlines()[-1]
    assert ('2/4 (50.0%), 1.00 items/s, elapsed 0:00:02, ETA 0:00:02' in last if
            screen is io.StringIO else '] 2/4, ' in last), last   # (mmengine's bar: its clock)


def test_a_terminal_bar_stopped_part_way_shows_every_item_done(monkeypatch):
    """Items done since the last redraw are drawn before the line ends (e.g. on an error)."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    screen = Terminal()
    with ProgressLine(10, screen) as bar:
        bar.start()
        for _ in range(7):
            clock[0] += 0.15  # a redraw every other item
            bar.update()
    draws = screen.getvalue().split('\r')
    assert ' 7/10,' in draws[-1] and screen.getvalue().endswith('\n')
    assert [n for n in range(11) if any(f' {n}/10,' in d for d in draws)] == [0, 2, 4, 6, 7]


def test_only_ctrl_c_is_held_and_any_other_error_goes_through():
    with progress.HoldInterrupt() as held:
        raise KeyboardInterrupt
    assert held.caught
    with pytest.raises(ValueError, match='bad batch'):
        with progress.HoldInterrupt() as held:
            raise ValueError('bad batch')
    assert not held.caught


def test_ctrl_c_is_blocked_only_inside_the_fork_block():
    import signal

    def blocked():
        return signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert not blocked()
    with progress.sigint_blocked():
        assert blocked()
    assert not blocked()


def test_a_terminal_line_ended_before_a_message_is_not_ended_again_on_leaving():
    """A failed item logged last (the bar's line ended for it): no blank line after it."""
    screen = Terminal()
    with ProgressLine(10, screen) as bar:
        bar.start()
        for _ in range(3):
            bar.update()
        bar.end_line()
        screen.write('failed: x\n')
    assert ' 3/10,' in screen.getvalue()
    assert screen.getvalue().count('\n') == 2 and screen.getvalue().endswith('\nfailed: x\n')


def _in_worker(parent_pid):
    """Fork as the loaders and writers are forked (SIGINT blocked), run ``start_worker`` in
    the child; its exit status and what it found: SIGINT ignored, SIGINT unblocked, and the
    signal the kernel sends it when its parent dies (``PR_GET_PDEATHSIG``)."""
    read_end, write_end = os.pipe()
    with progress.sigint_blocked():
        pid = os.fork()
        if pid == 0:  # the child, still in the block: never returns into pytest
            try:
                progress.start_worker(parent_pid)
                death = ctypes.c_int(0)
                ctypes.CDLL(None).prctl(2, ctypes.byref(death))  # PR_GET_PDEATHSIG
                found = (signal.getsignal(signal.SIGINT) == signal.SIG_IGN,
                         signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []),
                         death.value)
                os.write(write_end, repr(found).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as reader:
        found = reader.read()
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), found


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='prctl: Linux')
def test_a_worker_ignores_ctrl_c_and_dies_with_its_parent():
    """Ctrl-C is the main process's (ignored, then unblocked: none stays pending to kill the
    worker later), and a SIGKILL is asked for when the main process dies."""
    assert _in_worker(os.getpid()) == (0, repr((True, False, int(signal.SIGKILL))))


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='prctl: Linux')
def test_a_worker_whose_parent_is_already_gone_exits_at_once():
    """The main process died before the worker asked for the SIGKILL: its parent is another
    process now, so it exits (status 1) instead of running on as an orphan."""
    assert _in_worker(-1) == (1, '')


def test_a_long_jobs_log_gives_elapsed_time_and_eta_as_hours_minutes_seconds(monkeypatch):
    """2 million items at 74 a second: the ETA is 7:13:47 (h:mm:ss), not 26027 s."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    log = io.StringIO()
    with ProgressLine(2_000_000, log, log_seconds=100.0) as bar:
        bar.start()
        for _ in range(73_999):
            bar.update()
        clock[0] = 1000.0
        bar.update()
    assert log.getvalue().splitlines()[-1] == (
        'progress: 74000/2000000 (3.7%), 74.00 items/s, elapsed 0:16:40, ETA 7:13:47')


@pytest.mark.parametrize('screen', [Terminal, io.StringIO])
def test_the_progress_of_several_ranks_says_it_is_rank_0s_share(screen):
    """Under torchrun the progress line counts rank 0's share (8 of 15 items) and did not say
    so; one line says it first. A single process's progress is as before."""
    for ranks, first in ((2, "progress of rank 0's share (the job has 2 ranks; the others go at "
                          'about its pace):\n'), (1, '')):
        file = screen()
        with ProgressLine(8, file, ranks=ranks) as bar:
            bar.start()
        assert file.getvalue().startswith(first)
        assert file.getvalue().count('share') == (ranks > 1)   # said once, and only for ranks
