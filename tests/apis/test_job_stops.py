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


@pytest.mark.parametrize('lost', [('a', 'b'), ('a',)])
def test_outputs_deleted_during_the_run_are_named_after_the_summary(tmp_path, monkeypatch, lost):
    """--out deleted mid-run (here two of its files, or one): the run made the folder again,
    said 'made 4' and exit 0, its split listing the others; a dataset reading it lost those
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
            for name in lost:
                (folder / 'files' / f'{name}.txt').unlink()
        return [ItemOutput({f'files/{it.id}.txt': b'x'}) for it in batch]
    summary = run_job(items, lambda item: None, compute, folder, dict(tool='test'),
                      batch_size=1, workers=0, split_file='train.txt')
    kept = [name for name in 'abcd' if name not in lost]
    assert summary.made == 4 and (folder / 'train.txt').read_text() == '\n'.join(kept) + '\n'
    assert re.search(rf'{len(lost)} of the items counted below as made or done have lost their '
                     rf'files in '
                     rf'{folder} since \(the folder deleted or moved during the run\?\)',
                     '\n'.join(logged)), logged


def test_a_bug_in_load_or_compute_propagates_as_it_is(tmp_path):
    """Only ItemFailed fails an item and only the stop reasons (a failed write, a dead process)
    stop the job with 'rerun to resume': a bug's KeyError in load, or a RuntimeError in compute
    (a CUDA error), must reach the user with its traceback, not as every item failed (exit 0)
    or as 'finished items are kept: rerun the same command' (which meets it again)."""
    def load(item):
        raise KeyError('payload')
    with pytest.raises(KeyError, match='payload'):
        _job(tmp_path / 'load', load, workers=0)
    items = [WorkItem(i) for i in ('a', 'b')]

    def compute(batch, _):
        raise RuntimeError('CUDA error: an illegal memory access was encountered')
    with pytest.raises(RuntimeError, match='illegal memory access') as raised:
        run_job(items, lambda item: None, compute, tmp_path / 'compute', dict(tool='test'),
                batch_size=1, workers=0)
    assert not isinstance(raised.value, JobStopped)


def test_a_manifest_append_that_fails_leaves_its_items_uncounted(tmp_path, monkeypatch):
    """An item is made only once its files and its manifest line are written: a full disk at
    the second append stops the job saying 'made N' with N the records the manifest holds (the
    item of the failed append is redone by the resume, not counted)."""
    from mmdiffseg.apis.manifest import Manifest
    real, appends = Manifest.append_many, []

    def full_at_second(self, records):
        appends.append(len(records))
        if len(appends) == 2:
            raise OutputWriteError('cannot write manifest.jsonl: the disk is full')
        real(self, records)
    monkeypatch.setattr(Manifest, 'append_many', full_at_second)
    with pytest.raises(JobStopped) as stopped:
        _job(tmp_path / 'out', lambda item: None, workers=0)
    records = (tmp_path / 'out' / 'manifest.jsonl').read_text().splitlines()[1:]
    assert stopped.value.summary.made == len(records) == 3   # (b's append failed)
    assert '"id": "b"' not in ''.join(records)
