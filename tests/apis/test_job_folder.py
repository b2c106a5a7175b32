"""What a resumed job trusts in its output folder: one run at a time (the folder's lock), files at
their recorded sizes, the folder's own manifests only, and a split file of this job's items."""
import contextlib
import json
import multiprocessing
import time

import pytest

from mmdiffseg.apis.folder_lock import LOCK_NAME, job_lock
from mmdiffseg.apis.io import ItemOutput, UserInputError, WorkItem
from mmdiffseg.apis.jobs import run_job

HEADER = dict(tool='test', model='tiny', seed=0)


def _job(calls, files_per_item=1):
    items = [WorkItem(f'item{i}', dict(value=i)) for i in range(5)]

    def compute(batch, _):
        calls.append([it.id for it in batch])
        return [ItemOutput({f'out{k}/{it.id}.txt': str(it.payload['value'] ** 2).encode() * 3
                            for k in range(files_per_item)}, {}) for it in batch]
    return items, compute


def _hold_lock(folder, ready):
    with job_lock(folder):
        ready.set()
        time.sleep(120)  # until killed


@contextlib.contextmanager
def lock_holder(hold, folder):
    """A forked process that holds ``folder``'s lock through ``hold`` until it is killed (as by
    kill -9), at the latest when the block ends."""
    context = multiprocessing.get_context('fork')
    ready = context.Event()
    holder = context.Process(target=hold, args=(folder, ready))
    holder.start()
    try:
        assert ready.wait(60)
        yield holder
    finally:
        holder.kill()
        holder.join(60)


def test_a_second_run_into_a_folder_in_use_is_refused_before_any_work(tmp_path):
    """Two runs in one --out did the work twice, and one with other settings wrote its labels
    under the first one's header; now the second is refused, naming the first run's process.
    The lock goes with its holder (kill -9 too: the kernel drops it) and leaves no file."""
    with lock_holder(_hold_lock, tmp_path) as holder:
        calls = []
        items, compute = _job(calls)
        with pytest.raises(UserInputError, match=rf'another run is writing into {tmp_path} '
                                                 rf'\(pid {holder.pid} on .*, started .*\): two '
                                                 'runs in one folder would do the work twice'):
            run_job(items, None, compute, tmp_path, HEADER)
        assert calls == [] and not (tmp_path / 'manifest.jsonl').exists()
        holder.kill()  # as kill -9: no cleanup ran, the file stays, its lock does not
        holder.join(60)
        assert (tmp_path / LOCK_NAME).exists()
        assert run_job(items, None, compute, tmp_path, HEADER).made == 5
        assert not (tmp_path / LOCK_NAME).exists()


def test_a_file_system_without_locks_runs_the_job_unguarded(tmp_path, monkeypatch):
    """Where the lock cannot be taken at all (ENOLCK: some network file systems) the job runs,
    with a warning, and leaves no lock file; a held lock is told by EACCES / EAGAIN only."""
    import errno

    from mmdiffseg.apis import folder_lock

    def no_locks(*args):
        raise OSError(errno.ENOLCK, 'No locks available')
    monkeypatch.setattr(folder_lock.fcntl, 'lockf', no_locks)
    warned = []
    monkeypatch.setattr(folder_lock, 'print_log', lambda message, **_: warned.append(message))
    items, compute = _job([])
    assert run_job(items, None, compute, tmp_path, HEADER).made == 5
    assert [m.endswith('a second run into this folder would not be stopped') for m in warned] \
        == [True]
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_damaged_or_missing_output_file_is_made_again(tmp_path):
    """An output cut short (a disk error, a bad copy) counted as done and stayed listed in the
    split file; its recorded size now sends it back to the job, as a missing file does (also one
    of several files of an item)."""
    calls = []
    items, compute = _job(calls, files_per_item=2)
    run_job(items, None, compute, tmp_path, HEADER, split_file='ids.txt')
    record = json.loads((tmp_path / 'manifest.jsonl').read_text().splitlines()[2])
    assert record['sizes'] == {'out0/item1.txt': 3, 'out1/item1.txt': 3}
    good = (tmp_path / 'out0/item1.txt').read_bytes()
    (tmp_path / 'out0/item1.txt').write_bytes(good[:1])
    (tmp_path / 'out1/item3.txt').unlink()
    calls.clear()
    summary = run_job(items, None, compute, tmp_path, HEADER, split_file='ids.txt')
    assert (summary.made, summary.already_done) == (2, 3)
    assert calls == [['item1'], ['item3']]
    assert (tmp_path / 'out0/item1.txt').read_bytes() == good
    assert (tmp_path / 'out1/item3.txt').is_file()


def test_only_the_folders_own_manifests_are_read(tmp_path):
    """A backup copy (manifest_old.jsonl) was read as the folder's manifest: its stale records
    won (the item was redone on every rerun) and a merge folded it in."""
    calls = []
    items, compute = _job(calls)
    run_job(items, None, compute, tmp_path, HEADER)
    lines = (tmp_path / 'manifest.jsonl').read_text().splitlines()
    stale = json.loads(lines[1])
    stale['files'] = ['out0/gone.txt']  # a record no file backs
    (tmp_path / 'manifest_old.jsonl').write_text('\n'.join([lines[0], json.dumps(stale)]) + '\n')
    calls.clear()
    summary = run_job(items, None, compute, tmp_path, HEADER)
    assert (summary.made, summary.already_done, calls) == (0, 5, [])


def test_the_split_file_lists_this_jobs_items(tmp_path):
    """After an input is removed, the split file (a training config's ann_file) kept listing
    it; it now lists the finished items of this run's inputs, in their order."""
    calls = []
    items, compute = _job(calls)
    run_job(items, None, compute, tmp_path, HEADER, split_file='ids.txt')
    summary = run_job(items[:2] + items[3:], None, compute, tmp_path, HEADER,
                      split_file='ids.txt')
    assert (summary.made, summary.already_done) == (0, 4)
    assert (tmp_path / 'ids.txt').read_text().split() == ['item0', 'item1', 'item3', 'item4']


def test_outputs_of_earlier_runs_on_other_inputs_left_out_of_the_split_are_named(tmp_path,
                                                                                monkeypatch):
    """One folder filled by a run per Cityscapes city: each run's split file listed its own
    city only, without a word; the last run names the earlier runs' outputs it leaves out, and
    the fix."""
    import mmdiffseg.apis.jobs as jobs
    logged = []
    monkeypatch.setattr(jobs, 'print_log', lambda msg, **kwargs: logged.append(msg))
    calls = []
    items, compute = _job(calls)
    run_job(items[:2], None, compute, tmp_path, HEADER, split_file='ids.txt')
    assert not [m for m in logged if 'not in it' in m]
    run_job(items[2:], None, compute, tmp_path, HEADER, split_file='ids.txt')
    assert (tmp_path / 'ids.txt').read_text().split() == ['item2', 'item3', 'item4']
    warned, = [m for m in logged if 'not in it' in m]
    assert warned == (f"{tmp_path / 'ids.txt'} lists the 3 finished items of this run's inputs; "
                      f'2 made in {tmp_path} by earlier runs on other inputs (item0, item1) are '
                      'not in it, so a dataset reading that split leaves them out: give every '
                      "input to one run (pseudo_label.py: --dataset-config with the dataset's "
                      'mmseg config, --split train; synthesize.py: --classes and '
                      '--images-per-class that cover them), or each run its own --out')
    run_job(items[1:], None, compute, tmp_path, HEADER, split_file='ids.txt')  # one left out
    assert [m for m in logged if 'not in it' in m][-1].startswith(
        f"{tmp_path / 'ids.txt'} lists the 4 finished items of this run's inputs; 1 made in "
        f'{tmp_path} by earlier runs on other inputs (item0) are not in it')


def test_the_split_file_keeps_the_items_order_one_id_a_line(tmp_path):
    """The split file lists ids in the items' order (not sorted: item10 before item2), each line
    ended, as mmseg's ann_file reader expects."""
    items = [WorkItem(f'item{i}', dict(value=i)) for i in (10, 2, 1)]
    run_job(items, None, lambda batch, _: [ItemOutput({f'{it.id}.txt': b'x'}, {}) for it in batch],
            tmp_path, HEADER, split_file='ids.txt')
    assert (tmp_path / 'ids.txt').read_text() == 'item10\nitem2\nitem1\n'


def _hold_empty_lock(folder, ready):
    import fcntl
    import os
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    ready.set()
    time.sleep(120)  # until killed


@pytest.mark.timeout(120)
def test_a_lock_held_without_a_name_is_refused_as_another_process(tmp_path):
    """A holder that wrote nothing (yet) into the lock file is named 'another process'."""
    with lock_holder(_hold_empty_lock, tmp_path):
        with pytest.raises(UserInputError, match=rf'writing into {tmp_path} \(another process\)'):
            with job_lock(tmp_path):
                pass


@pytest.mark.timeout(120)
def test_the_holder_is_named_without_what_the_lock_file_held_before(tmp_path):
    """A longer text left in the lock file (a killed run) is replaced, not overwritten in part."""
    (tmp_path / LOCK_NAME).write_text('x' * 150)
    with lock_holder(_hold_lock, tmp_path) as holder:
        with pytest.raises(UserInputError, match=rf'\(pid {holder.pid} on [^,]+, started '
                                                 r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\): two'):
            with job_lock(tmp_path):
                pass


def test_the_lock_is_held_until_the_split_and_the_merge_are_written(tmp_path, monkeypatch):
    """Rank 0 waits in the finish for the other ranks' shares, then merges their manifests: a
    second run let in meanwhile would redo their work and remove their files. Another process
    trying the lock while the split file is written is refused."""
    import subprocess
    import sys

    from mmdiffseg.apis import jobs
    tried = []

    def write_and_try(path, data):
        probe = ('import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n'
                 'try:\n    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); print("locked")\n'
                 'except OSError:\n    print("refused")')
        tried.append(subprocess.run([sys.executable, '-c', probe, str(tmp_path / LOCK_NAME)],
                                    capture_output=True, text=True).stdout.strip())
        return atomic_write(path, data)
    atomic_write = jobs.atomic_write
    monkeypatch.setattr(jobs, 'atomic_write', write_and_try)
    items, compute = _job([])
    run_job(items, None, compute, tmp_path, HEADER, split_file='ids.txt')
    assert tried == ['refused'] and not (tmp_path / LOCK_NAME).exists()


def test_records_for_a_manifest_removed_meanwhile_follow_its_header(tmp_path):
    """A rank's manifest removed under it (by hand): its next records start a file with the
    header, which a resume reads, not a file of records that every resume refuses."""
    from mmdiffseg.apis.manifest import Manifest
    manifest = Manifest(tmp_path, HEADER)
    manifest.start()
    manifest.append_many([dict(id='a', files=[])])
    manifest.path.unlink()
    manifest.append_many([dict(id='b', files=[])])
    assert list(Manifest(tmp_path, HEADER).load()) == ['b']
