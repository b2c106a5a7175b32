"""The resumable job runner: atomic writes, manifest (torn line, header check), resume, errors."""
import json

import numpy as np
import pytest

from mmdiffseg.apis.io import (ItemOutput, ItemSkipped, Manifest, OutputWriteError,
                               UserInputError, WorkItem, atomic_write, item_seed, run_job, shard)
from unwritable import full_folder, readonly_folder

HEADER = dict(tool='test', model='tiny', seed=0)


@pytest.fixture
def readonly_dir(tmp_path):
    with readonly_folder(tmp_path / 'readonly') as path:
        yield path


@pytest.fixture
def full_dir(tmp_path):
    with full_folder(tmp_path / 'full') as path:
        yield path


def _job(calls):
    items = [WorkItem(f'item{i}', dict(value=i)) for i in range(7)]

    def load(item):
        if item.payload['value'] == 3:
            raise ItemSkipped('item3 is corrupt')
        return item.payload['value']

    def compute(batch, loaded):
        calls.append([it.id for it in batch])
        return [ItemOutput({f'out/{it.id}.txt': str(v * v).encode()}, dict(square=v * v))
                for it, v in zip(batch, loaded)]

    return items, load, compute


def test_run_job_resumes_without_redoing(tmp_path):
    calls = []
    items, load, compute = _job(calls)
    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=3, split_file='ids.txt')
    assert (summary.made, summary.skipped, [f[0] for f in summary.failed]) == (6, 0, ['item3'])
    assert calls == [['item0', 'item1', 'item2'], ['item4', 'item5'], ['item6']]
    assert (tmp_path / 'out/item5.txt').read_text() == '25'
    assert (tmp_path / 'ids.txt').read_text().split() == [f'item{i}' for i in (0, 1, 2, 4, 5, 6)]

    # lose one output and tear the manifest's last line, as a kill would
    (tmp_path / 'out/item5.txt').unlink()
    path = tmp_path / 'manifest.jsonl'
    path.write_bytes(path.read_bytes()[:-7])
    calls.clear()
    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=3)
    # the batch holding item5 is recomputed whole (same composition), only item5 and item6 written
    assert calls == [['item4', 'item5'], ['item6']]
    assert (summary.made, summary.skipped) == (2, 4)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # item5's old record (its file is gone) is superseded by the new one
    assert [r['id'] for r in lines[1:]] == ['item0', 'item1', 'item2', 'item4', 'item5', 'item5',
                                             'item6']
    assert lines[-1] == dict(id='item6', files=['out/item6.txt'], square=36)
    assert not list(tmp_path.rglob('*.tmp'))


def test_header_mismatch_is_refused_with_the_difference(tmp_path):
    calls = []
    items, load, compute = _job(calls)
    run_job(items[:1], load, compute, tmp_path, HEADER)
    with pytest.raises(UserInputError, match=r'seed: folder has 0, this run has 1'):
        run_job(items, load, compute, tmp_path, dict(HEADER, seed=1))
    assert calls == [['item0']]


def test_torn_line_without_newline_is_dropped_and_repaired(tmp_path):
    m = Manifest(tmp_path, HEADER)
    m.start()
    m.append(dict(id='a', files=[]))
    with open(m.path, 'ab') as f:
        f.write(b'{"id": "b", "files": []}')  # complete JSON, newline never written
    assert list(m.load()) == ['a']
    m.append(dict(id='c', files=[]))
    assert list(Manifest(tmp_path, HEADER).load()) == ['a', 'c']


def test_damaged_middle_line_is_an_error(tmp_path):
    m = Manifest(tmp_path, HEADER)
    m.start()
    with open(m.path, 'ab') as f:
        f.write(b'{"id": "a", \n{"id": "b", "files": []}\n')
    with pytest.raises(UserInputError, match='line 2 is not JSON'):
        m.load()


def test_item_seed_depends_only_on_seed_and_key():
    assert item_seed(0, 'cat_000001') == item_seed(0, 'cat_000001')
    assert len({item_seed(0, 'a'), item_seed(1, 'a'), item_seed(0, 'b')}) == 3
    assert 0 <= item_seed(123, 'x') < 2 ** 31


def test_shard_is_a_partition():
    items = [WorkItem(str(i)) for i in range(10)]
    parts = [shard(items, r, 3) for r in range(3)]
    assert sorted(int(it.id) for p in parts for it in p) == list(range(10))
    assert [it.id for it in parts[1]] == ['1', '4', '7']


def test_readonly_output_is_reported(readonly_dir):
    items, load, compute = _job([])
    with pytest.raises(OutputWriteError, match=str(readonly_dir)):
        run_job(items, load, compute, readonly_dir / 'out', HEADER)


def test_full_disk_is_reported_and_leaves_no_partial_file(full_dir):
    big = np.random.RandomState(0).bytes(40 * 1024)
    atomic_write(full_dir / 'a.bin', big)
    with pytest.raises(OutputWriteError, match='disk is full'):
        atomic_write(full_dir / 'b.bin', big)
    assert sorted(p.name for p in full_dir.iterdir()) == ['a.bin']


def test_full_disk_stops_the_job_with_a_clear_error(full_dir):
    items = [WorkItem(f'item{i}') for i in range(6)]
    blob = np.random.RandomState(0).bytes(20 * 1024)

    def compute(batch, loaded):
        return [ItemOutput({f'{it.id}.bin': blob}) for it in batch]

    with pytest.raises(OutputWriteError, match='disk is full'):
        run_job(items, lambda it: None, compute, full_dir, HEADER, batch_size=2)
    records = Manifest(full_dir, HEADER).load()
    assert records and all((full_dir / f'{i}.bin').stat().st_size == len(blob) for i in records)
    assert not list(full_dir.glob('.*.tmp'))
