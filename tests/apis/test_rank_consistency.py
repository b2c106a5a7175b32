"""Several ranks of one job (:func:`mmdiffseg.apis.jobs.run_job`): an item redone in a resume
with another number of ranks keeps its new record (not the killed run's), ranks started with
other settings or other inputs are refused on every rank before any work, and a rank whose
partner stopped with an error stops with one line (not the backend's traceback)."""
import logging
import json
import re
import shutil
import time

import pytest
from apis.gloo_ranks import two_ranks
from mmengine.logging import MMLogger

from mmdiffseg.apis import folder_lock
from mmdiffseg.apis import io as job_io
from mmdiffseg.apis.io import ItemFailed, ItemOutput, OutputWriteError, WorkItem
from mmdiffseg.apis.jobs import run_job

SPLIT = 'train.txt'


def _run(folder, version=1, header=None, ids=('a', 'b'), fail=None, corrupt=(), slow=0):
    """A job writing ``<id>.txt`` per item; ``version`` is item ``a``'s input (its file's size
    follows it); an item named ``fail`` cannot be written, those in ``corrupt`` cannot be read;
    each batch takes ``slow`` seconds."""
    items = [WorkItem(i, inputs={'v': version if i == 'a' else 1}) for i in ids]
    prepared = []

    def load(item):
        if item.id in corrupt:
            raise ItemFailed(f'{item.id}.jpg is truncated')

    def compute(batch, _):
        time.sleep(slow)
        if any(it.id == fail for it in batch):
            raise OutputWriteError(f'cannot write {fail}.txt: the disk is full')
        return [ItemOutput({f'{it.id}.txt': b'x' * it.inputs['v']}) for it in batch]

    def prepare():
        prepared.append(1)
        return compute
    summary = run_job(items, load, None, folder, header or dict(tool='test'), split_file=SPLIT,
                      workers=0, prepare=prepare)
    return summary, prepared


def _records(folder):
    lines = (folder / 'manifest.jsonl').read_text().splitlines()[1:]
    return {r['id']: r for r in map(json.loads, lines)}


def test_an_item_redone_by_a_one_process_resume_keeps_its_new_record(tmp_path):
    """A killed two-rank run left its records in the rank manifests; a one-process resume redoes
    ``a`` (its input changed) into ``manifest.jsonl``, which is read before the rank files: the
    merge keeps the new record, the split file lists both items and a rerun has nothing to do."""
    folder = tmp_path / 'out'
    _run(folder, version=1)
    (folder / 'manifest.jsonl').rename(folder / 'manifest.rank0.jsonl')
    summary, _ = _run(folder, version=2)
    assert (summary.made, summary.redone, summary.already_done) == (1, 1, 1)
    assert _records(folder)['a']['v'] == 2
    assert (folder / SPLIT).read_text() == 'a\nb\n'
    summary, prepared = _run(folder, version=2)
    assert (summary.made, summary.already_done, prepared) == (0, 2, [])


def _two_ranks(tmp_path, folder, kwargs0=None, kwargs1=None, timeout=60):
    """What each of two ranks ended with (a line), running ``_run(folder, **kwargs<rank>)``
    in a process group of that ``timeout`` (seconds). Their log lines also go to
    ``rank<rank>.log`` beside the group's store (``tmp_path/ranks<n>``)."""
    def work(rank, folder_of_run):
        log = logging.FileHandler(folder_of_run / f'rank{rank}.log')
        MMLogger.get_current_instance().addHandler(log)
        summary, prepared = _run(folder, **[kwargs0 or {}, kwargs1 or {}][rank])
        return f'made {summary.made}, prepared {len(prepared)}'
    return two_ranks(tmp_path, work, timeout)


@pytest.mark.parametrize('rank0_file', [False, True])
def test_an_item_redone_by_another_rank_keeps_its_new_record(tmp_path, rank0_file):
    """The killed run's record of ``a`` is in ``manifest.rank1.jsonl`` (read after rank 0's, which
    redoes ``a`` now): the merge keeps rank 0's new record, also where rank 0's file was there
    already (its first new line starts where the file ended)."""
    folder = tmp_path / 'out'
    _run(folder, version=1)
    if rank0_file:
        shutil.copy(folder / 'manifest.jsonl', folder / 'manifest.rank0.jsonl')
    (folder / 'manifest.jsonl').rename(folder / 'manifest.rank1.jsonl')
    assert _two_ranks(tmp_path, folder, dict(version=2), dict(version=2)) == [
        'made 1, prepared 1', 'made 1, prepared 0']
    assert _records(folder)['a']['v'] == 2
    assert (folder / SPLIT).read_text() == 'a\nb\n'
    assert _two_ranks(tmp_path, folder, dict(version=2), dict(version=2)) == [
        'made 0, prepared 0'] * 2


@pytest.mark.parametrize('kwargs1, problem', [
    (dict(header=dict(tool='test', classes=['cat'])),
     'rank 1 has other settings (classes: rank 0 has <absent>, rank 1 has ["cat"])'),
    (dict(ids=('a',)), 'rank 1 lists 1 items, rank 0 lists 2'),
    (dict(ids=('a', 'c')), 'rank 1 lists other items than rank 0 (or in another order)'),
    (dict(ids=('b', 'a')), 'rank 1 lists other items than rank 0 (or in another order)'),
])
def test_ranks_with_other_settings_or_items_are_refused_before_any_work(tmp_path, kwargs1,
                                                                        problem):
    """Each rank would label its share of its own list (half the images left out, exit 0), or
    the merge would refuse the other header after all the work: both ranks stop at once, naming
    what differs and the fix; no model is prepared, nothing is written."""
    folder = tmp_path / 'new'
    expected = (f'UserInputError: the ranks of this run do not agree: {problem}. Start every '
                'rank with the same command and the same inputs (the same files on every '
                'node); nothing was written')
    assert _two_ranks(tmp_path, folder, {}, kwargs1) == [expected, expected]
    assert not folder.exists() or not any(folder.iterdir())  # (which rank made it: a race)
    (folder / 'keep').mkdir(parents=True)
    assert _two_ranks(tmp_path, folder, {}, kwargs1) == [expected, expected]
    assert [p.name for p in folder.iterdir()] == ['keep']
    shutil.rmtree(folder)
    assert _two_ranks(tmp_path, folder) == ['made 2, prepared 1'] * 2


def test_a_rank_whose_partner_stopped_stops_with_one_line(tmp_path, monkeypatch):
    """Rank 1 cannot write its item: it stops with its error; rank 0, which finished its share,
    stops with one line (status 3, like a failed write) instead of the backend's error; the
    finished item is kept and a rerun resumes."""
    monkeypatch.setattr(job_io, 'RANK_STOPPED_WAIT_S', 0)
    folder = tmp_path / 'out'
    stopped, failed = _two_ranks(tmp_path, folder, {}, dict(fail='b'))
    assert stopped == ('RankStopped: another rank stopped (see its error above); finished items '
                       'are kept: rerun the same command to resume')
    # the failed write with what the run made (it said neither what was kept nor how to resume)
    assert re.fullmatch(r'JobStopped: cannot write b.txt: the disk is full; so far: made 0, '
                        r'already done 0, failed 0, [\d.]+ s \([\d.]+ items/s\); finished items '
                        r'are kept: rerun the same command to resume', failed), failed
    from mmdiffseg.apis.io import RankStopped
    assert issubclass(RankStopped, OutputWriteError)  # the tools' exit status 3
    assert _two_ranks(tmp_path, folder) == ['made 1, prepared 0', 'made 1, prepared 1']
    assert (folder / SPLIT).read_text() == 'a\nb\n'


def test_a_rank_waiting_for_the_folder_lock_of_a_failed_rank_0_stops_with_one_line(
        tmp_path, monkeypatch):
    """Rank 0 takes the folder's lock for every rank; when it cannot (here: the file system
    refuses), rank 1, waiting to learn whether it could, stops with one line too."""
    monkeypatch.setattr(job_io, 'RANK_STOPPED_WAIT_S', 0)

    def refused(folder):
        raise OutputWriteError(f'cannot lock {folder}: read-only file system')
    monkeypatch.setattr(folder_lock, '_try_lock', refused)
    folder = tmp_path / 'out'
    assert _two_ranks(tmp_path, folder) == [
        f'OutputWriteError: cannot lock {folder}: read-only file system',
        'RankStopped: another rank stopped (see its error above); finished items are kept: '
        'rerun the same command to resume']


def test_rank_0_names_the_items_another_rank_could_not_read(tmp_path):
    """Only rank 0's console shows notes (cli.quiet_other_ranks): the other ranks' failed items
    were named nowhere once the summary had listed its first ones."""
    ids = ('a', 'b', 'c', 'd')
    kwargs = dict(ids=ids, corrupt={'b', 'd'})  # rank 1's share: b, d
    assert _two_ranks(tmp_path, tmp_path / 'out', kwargs, kwargs) == ['made 2, prepared 1'] * 2
    log = (tmp_path / 'ranks0/rank0.log').read_text()
    for item in 'bd':
        assert log.count(f'failed {item}: {item}.jpg is truncated, on rank 1 (not made; '
                         'counted as failed)') == 1, log


def test_a_rank_that_waits_past_the_timeout_says_so(tmp_path, monkeypatch):
    """Rank 0 finished its share; rank 1 is still working past the process group's timeout:
    rank 0 names the timeout (not "another rank stopped"), rank 1 then finds rank 0 gone."""
    monkeypatch.setattr(job_io, 'RANK_STOPPED_WAIT_S', 0)
    assert _two_ranks(tmp_path, tmp_path / 'out', {}, dict(slow=6), timeout=2) == [
        "RankStopped: another rank did not answer within the process group's timeout (24 h for "
        'the tools); finished items are kept: rerun the same command to resume',
        'RankStopped: another rank stopped (see its error above); finished items are kept: '
        'rerun the same command to resume']


@pytest.mark.parametrize('error, line', [
    (RuntimeError('[pair.cc:561] Connection closed by peer [127.0.0.1]:1. GLHF'),
     'another rank stopped (see its error above)'),
    (RuntimeError('Timed out waiting 4000ms for send operation to complete'),
     "another rank did not answer within the process group's timeout"),
    (RuntimeError('Tensors must be contiguous\nmore detail'),
     'a collective of the ranks failed (Tensors must be contiguous)'),
])
def test_a_failed_collective_names_its_cause(monkeypatch, error, line):
    monkeypatch.setattr(job_io, 'RANK_STOPPED_WAIT_S', 0)

    def collective_op():
        raise error
    with pytest.raises(job_io.RankStopped, match=re.escape(line)):
        job_io.collective(collective_op)
    import torch
    oom = torch.cuda.OutOfMemoryError('CUDA out of memory')

    def out_of_memory():
        raise oom
    with pytest.raises(torch.cuda.OutOfMemoryError):  # the tools' own message for it
        job_io.collective(out_of_memory)


def test_ranks_that_write_into_different_folders_are_refused_before_any_work(tmp_path,
                                                                             monkeypatch):
    """Two nodes with node-local disks (each rank its own --out): rank 0 said 'made 2' and
    exited 0, its folder held its share alone and rank 1's labels and manifest stayed on rank
    1's node, out of the merge. Both ranks stop, naming the rank apart; nothing is written."""
    monkeypatch.setattr(folder_lock, 'SHARED_FOLDER_WAIT_S', 2)  # (a minute, for NFS)

    def work(rank, _):
        summary, prepared = _run(tmp_path / f'node{rank}' / 'out')
        return f'made {summary.made}, prepared {len(prepared)}'
    for rank, ended in enumerate(two_ranks(tmp_path, work)):
        assert ended.startswith(f'UserInputError: rank(s) 1 do not see the folder rank 0 writes '
                                f'into ({tmp_path}/node{rank}/out: its lock file is not there')
        assert 'give every rank one --out on a file system that all nodes share' in ended
    assert not list(tmp_path.glob('node*/out'))
    assert _two_ranks(tmp_path, tmp_path / 'shared') == ['made 2, prepared 1'] * 2
