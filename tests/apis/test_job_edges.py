"""run_job at the edges of its batches: a batch whose every input fails to load, a rerun whose only
missing item still fails (no GPU work for the finished ones beside it), a finished item that
cannot be read now, records without a labelled share, the time counted after ``prepare``, a
write error met at the next batches; the folder's upkeep at a job's start and end (a killed
run's temp files and rank manifests, the split file) and a failure's line after the bar."""
import io
import json
import time
from types import SimpleNamespace

import pytest

from mmdiffseg.apis import jobs
from mmdiffseg.apis.io import ItemFailed, ItemOutput, OutputWriteError, WorkItem
from mmdiffseg.apis.jobs import run_job
from test_io import HEADER, _job
from test_progress import Terminal


def test_a_batch_whose_every_input_fails_is_counted_without_collating_nothing(tmp_path):
    """``collate`` gets only the loaded inputs: a batch of unreadable items alone is never
    collated (``stack_work_images`` of nothing would stop the job) and is counted as failed."""
    items, load, compute = _job([])
    collated = []

    def collate(values):
        assert values, 'collate called with no inputs'
        collated.append(list(values))
        return values

    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=1, workers=0,
                      collate=collate)
    assert summary.made == 6
    assert summary.failed == [('item3', 'item3 is corrupt')]
    assert collated == [[v] for v in (0, 1, 2, 4, 5, 6)]


def test_a_rerun_computes_nothing_for_a_batch_whose_only_missing_item_fails_again(tmp_path):
    """Batches are fixed: item2 (done) shares its batch with item3 (unreadable). A rerun reads
    the batch again but hands no finished item to ``compute`` (the GPU work)."""
    calls = []
    items, load, compute = _job(calls)
    run_job(items, load, compute, tmp_path, HEADER, batch_size=2, workers=0)
    assert calls == [['item0', 'item1'], ['item2'], ['item4', 'item5'], ['item6']]
    calls.clear()
    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=2, workers=0)
    assert calls == []
    assert (summary.made, summary.already_done) == (0, 6)
    assert summary.failed == [('item3', 'item3 is corrupt')]


def test_a_finished_item_that_fails_to_load_now_is_kept_and_not_counted_failed(tmp_path):
    """A finished item read again beside a missing one (same batch) and failing this time is
    still done: its output stays, it is not named as failed, the missing one is made."""
    items = [WorkItem(f'item{i}', dict(value=i)) for i in range(2)]
    broken = set()

    def load(item):
        if item.id in broken:
            raise ItemFailed(f'{item.id} unreadable now')
        return item.payload['value']

    def compute(batch, loaded):
        return [ItemOutput({f'{it.id}.txt': str(v).encode()}, dict(value=v))
                for it, v in zip(batch, loaded)]

    run_job(items, load, compute, tmp_path, HEADER, batch_size=2, workers=0)
    (tmp_path / 'item1.txt').unlink()
    broken.add('item0')
    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=2, workers=0)
    assert (summary.made, summary.already_done, summary.failed) == (1, 1, [])
    assert (tmp_path / 'item0.txt').read_text() == '0'
    assert (tmp_path / 'item1.txt').read_text() == '1'


def test_only_a_labelled_share_of_zero_counts_a_label_as_all_unsure(tmp_path):
    """``labelled`` 0 names the item; a positive share or a record without one (a tool that
    records no share) does not."""
    items = [WorkItem(name, dict(share=share))
             for name, share in (('none', None), ('zero', 0.0), ('half', 0.5))]

    def compute(batch, _loaded):
        return [ItemOutput({f'{it.id}.txt': b'x'},
                           {} if it.payload['share'] is None else
                           dict(labelled=it.payload['share'])) for it in batch]

    summary = run_job(items, None, compute, tmp_path, HEADER, batch_size=3, workers=0)
    assert summary.made == 3
    assert summary.unlabelled == ['zero']


def test_the_time_counts_from_the_end_of_prepare(tmp_path, monkeypatch):
    """A slow model load (``prepare``) is not in the summary's time (nor in its rate). The job's
    clock is a fake one that only the model load moves: a wall-clock bound failed on a loaded
    CI machine, where two items' writes and fsyncs took over a second."""
    items, load, compute = _job([])
    clock = [1000.0]
    monkeypatch.setattr(jobs, 'time', SimpleNamespace(time=lambda: clock[0]))

    def slow_prepare():
        clock[0] += 60.0  # a minute of model loading
        return compute

    summary = run_job(items[:2], load, None, tmp_path, HEADER, workers=0, prepare=slow_prepare)
    assert summary.made == 2
    assert summary.seconds == 0.0  # counted from the end of prepare: none of its minute


def test_a_resumed_jobs_progress_counts_only_the_items_left(tmp_path):
    """The progress line's total is what is left to make, not the job's size."""
    items, load, compute = _job([])
    run_job(items, load, compute, tmp_path, HEADER, workers=0, progress_file=io.StringIO())
    (tmp_path / 'out/item5.txt').unlink()
    log = io.StringIO()
    run_job(items, load, compute, tmp_path, HEADER, workers=0, progress_file=log)
    assert log.getvalue().splitlines()[0] == 'progress: 0/2'


def test_an_item_whose_inputs_changed_and_now_fail_loses_its_old_files(tmp_path):
    """Its files were made from the old inputs: they are removed and the item named as failed;
    an unchanged item beside it keeps its files."""
    def items(version):
        return [WorkItem('a', dict(value=1), inputs=dict(v=version)),
                WorkItem('b', dict(value=2), inputs=dict(v=0))]

    def load(item):
        if item.inputs['v'] == 2:
            raise ItemFailed('a is unreadable now')
        return item.payload['value']

    def compute(batch, loaded):
        return [ItemOutput({f'{it.id}.txt': str(v).encode()}, {}) for it, v in zip(batch, loaded)]

    run_job(items(1), load, compute, tmp_path, HEADER, workers=0)
    summary = run_job(items(2), load, compute, tmp_path, HEADER, workers=0)
    assert summary.failed == [('a', 'a is unreadable now')]
    assert not (tmp_path / 'a.txt').exists() and (tmp_path / 'b.txt').read_text() == '2'


def test_a_write_error_stops_the_job_at_its_next_batches(tmp_path):
    """A batch's file cannot be written (its folder is a file): the error is raised within the
    next batches, not after computing every batch of the job (which might take hours on a GPU)."""
    (tmp_path / 'blocked').write_text('')
    items = [WorkItem(f'item{i}', dict(value=i)) for i in range(10)]
    calls = []

    def compute(batch, _loaded):
        calls.append(batch[0].id)
        if len(calls) > 1:
            time.sleep(0.3)  # the GPU work; the writer thread meets the error meanwhile
        folder = 'blocked' if batch[0].id == 'item0' else 'out'
        return [ItemOutput({f'{folder}/{it.id}.txt': b'x'}, {}) for it in batch]

    with pytest.raises(OutputWriteError, match=r'blocked/item0\.txt'):
        run_job(items, None, compute, tmp_path, HEADER, batch_size=1, workers=0)
    assert len(calls) <= 4, calls


def _items():
    return [WorkItem(f'item{i}', dict(value=i)) for i in range(3)]


def _compute(batch, _):
    return [ItemOutput({f'out/{it.id}.txt': b'abc'}, {}) for it in batch]


def test_a_job_removes_the_temp_files_a_killed_run_left(tmp_path):
    """A killed one-process run leaves ``.<name>.r0.tmp`` files; the next run in the folder
    removes them (and a killed 2-rank run's ``.r1.tmp``), but not a user's file named ``*.tmp``."""
    (tmp_path / 'out').mkdir()
    for name in ('out/.item0.txt.r0.tmp', 'out/.item1.txt.r1.tmp', 'keep.tmp'):
        (tmp_path / name).write_bytes(b'a')
    summary = run_job(_items(), None, _compute, tmp_path, HEADER, workers=0)
    assert summary.made == 3
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*tmp*'))
    assert left == ['keep.tmp']


def test_the_split_file_leaves_out_a_damaged_item_that_failed_to_load_again(tmp_path):
    """item1's file was cut short, so it is not done; its image cannot be read on the rerun, so
    it stays not made: the split file (a training ann_file) must not list it."""
    run_job(_items(), None, _compute, tmp_path, HEADER, split_file='ids.txt', workers=0)
    (tmp_path / 'out/item1.txt').write_bytes(b'a')

    def load(item):
        if item.id == 'item1':
            raise ItemFailed('image file is truncated')
        return item.payload
    summary = run_job(_items(), load, _compute, tmp_path, HEADER, split_file='ids.txt',
                      workers=0)
    assert (summary.made, summary.already_done) == (0, 2)
    assert [item_id for item_id, _ in summary.failed] == ['item1']
    assert (tmp_path / 'ids.txt').read_text() == 'item0\nitem2\n'


def _load_failing_item1(item):
    if item.id == 'item1':
        raise ItemFailed('item1 is corrupt')
    return item.payload


def test_a_failed_item_is_logged_on_a_line_of_its_own_after_the_bar(tmp_path, monkeypatch):
    screen = Terminal()
    monkeypatch.setattr(jobs, 'print_log', lambda message, **_: screen.write(message + '\n'))
    run_job(_items(), _load_failing_item1, _compute, tmp_path, HEADER, batch_size=1, workers=0,
            progress_file=screen)
    before, after = screen.getvalue().split('failed item1: item1 is corrupt', 1)
    assert '/3, ' in before and before.endswith('\n')
    assert after.startswith(' (not made; counted as failed)\n')


def test_a_one_process_rerun_merges_the_rank_manifests_a_killed_two_rank_run_left(tmp_path):
    """Its ranks' records are resumed, then written into manifest.jsonl in the items' order and
    the rank files removed, as after a finished distributed run."""
    run_job(_items(), None, _compute, tmp_path, HEADER, workers=0)
    header, *records = (tmp_path / 'manifest.jsonl').read_text().splitlines()
    (tmp_path / 'manifest.jsonl').unlink()
    (tmp_path / 'manifest.rank0.jsonl').write_text('\n'.join([header, records[2]]) + '\n')
    (tmp_path / 'manifest.rank1.jsonl').write_text('\n'.join([header, *records[:2]]) + '\n')
    summary = run_job(_items(), None, _compute, tmp_path, HEADER, split_file='ids.txt',
                      workers=0)
    assert (summary.made, summary.already_done) == (0, 3)
    assert sorted(p.name for p in tmp_path.glob('manifest*')) == ['manifest.jsonl']
    lines = (tmp_path / 'manifest.jsonl').read_text().splitlines()
    assert json.loads(lines[0]) == json.loads(header)
    assert [json.loads(line)['id'] for line in lines[1:]] == ['item0', 'item1', 'item2']
    assert (tmp_path / 'ids.txt').read_text() == 'item0\nitem1\nitem2\n'
