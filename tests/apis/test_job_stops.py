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


def test_outputs_deleted_during_the_run_are_named_after_the_summary(tmp_path, monkeypatch):
    """--out deleted mid-run (here two of its files): the run made the folder again, said
    'made 4' and exit 0, its split listing 2 items; a dataset reading it lost the others
    silently."""
    import time

    from mmdiffseg.apis import jobs
    logged = []
    monkeypatch.setattr(jobs, 'print_log', lambda message, **kwargs: logged.append(message))
    folder = tmp_path / 'out'
    items = [WorkItem(i) for i in ('a', 'b', 'c', 'd')]

    def compute(batch, _):
        if batch[0].id == 'd':  # a's and b's files, written by then, deleted from outside
            time.sleep(0.5)
            for name in ('a', 'b'):
                (folder / 'files' / f'{name}.txt').unlink()
        return [ItemOutput({f'files/{it.id}.txt': b'x'}) for it in batch]
    summary = run_job(items, lambda item: None, compute, folder, dict(tool='test'),
                      batch_size=1, workers=0, split_file='train.txt')
    assert summary.made == 4 and (folder / 'train.txt').read_text() == 'c\nd\n'
    assert re.search(rf'2 of the items counted below as made or done have lost their files in '
                     rf'{folder} since \(the folder deleted or moved during the run\?\)',
                     '\n'.join(logged)), logged
