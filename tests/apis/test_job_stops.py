"""A job stopped by a killed loader or writer process (the out-of-memory killer) or a failed
write ends with one line saying what stopped it, what was made and how to resume (exit status
3), not a traceback (exit 1) or a message without the counts."""
import os
import re
import signal

import pytest

from mmdiffseg.apis.io import ItemOutput, JobStopped, OutputWriteError, WorkItem
from mmdiffseg.apis.jobs import run_job


def _job(folder, load, workers=1):
    items = [WorkItem(i) for i in ('a', 'b', 'c', 'd')]

    def compute(batch, _):
        return [ItemOutput({f'{it.id}.txt': b'x'}) for it in batch]
    return run_job(items, load, compute, folder, dict(tool='test'), batch_size=1, workers=workers)


def _killed_at(name):
    def load(item):
        if item.id == name:
            os.kill(os.getpid(), signal.SIGKILL)
    return load


def test_a_killed_loader_process_stops_the_job_with_the_counts_and_the_way_to_resume(tmp_path):
    with pytest.raises(JobStopped) as stopped:
        _job(tmp_path / 'out', _killed_at('c'))
    assert isinstance(stopped.value, OutputWriteError)  # the tools' exit status 3
    assert re.fullmatch(r'a loader process died \(DataLoader worker \(pid.* \d+\) .*; e\.g\. the '
                        r'out-of-memory killer\); so far: made \d, '
                        r'.*; finished items are kept: rerun the same command to resume',
                        str(stopped.value)), str(stopped.value)
    summary = _job(tmp_path / 'out', lambda item: None)
    assert summary.made + summary.already_done == 4 and summary.already_done >= 1
