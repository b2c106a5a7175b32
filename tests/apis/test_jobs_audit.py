"""A job's folder upkeep at its start and end (temp files left by a killed run are removed; the
split file leaves out an item whose output is damaged and could not be made again) and a failed
item's message on a terminal, on a line of its own after the progress bar."""
import io

from mmdiffseg.apis.io import ItemFailed, ItemOutput, WorkItem
from mmdiffseg.apis import jobs
from mmdiffseg.apis.jobs import run_job

HEADER = dict(tool='test', model='tiny', seed=0)


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


class Terminal(io.StringIO):
    def isatty(self):
        return True


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
    import json
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
