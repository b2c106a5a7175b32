"""The summary's rate for a job under a second, and a terminal line ended early (before a
message) that is not ended again on leaving."""
import io

from mmdiffseg.apis import progress
from mmdiffseg.apis.progress import JobSummary, ProgressLine


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_job_under_a_second_reports_its_true_rate():
    assert JobSummary(made=3, seconds=0.5).line() == (
        'made 3, already done 0, failed 0, 0.5 s (6.00 items/s)')


def test_a_terminal_line_ended_before_a_message_is_not_ended_again_on_leaving(monkeypatch):
    """A failed item logged last (the bar's line ended for it): no blank line after it."""
    clock = [0.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    screen = Terminal()
    with ProgressLine(10, screen) as bar:
        bar.start()
        for _ in range(3):
            clock[0] += 1.0
            bar.update()
        bar.end_line()
        screen.write('failed: x\n')
    assert ' 3/10,' in screen.getvalue()
    assert screen.getvalue().count('\n') == 2 and screen.getvalue().endswith('\nfailed: x\n')
