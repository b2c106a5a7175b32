"""The resumable job runner: atomic writes, manifest (torn line, header check), resume, errors."""
import io
import json
import os

import numpy as np
import pytest

from mmdiffseg.apis.io import (ItemOutput, ItemFailed, OutputWriteError,
                               UserInputError, WorkItem, atomic_write, item_seed,
                               remove_stale_temp_files, shard)
from mmdiffseg.apis.job_plan import file_fingerprint, source_unchanged
from mmdiffseg.apis.jobs import run_job
from mmdiffseg.apis.manifest import Manifest
from test_progress import Terminal
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
            raise ItemFailed('item3 is corrupt')
        return item.payload['value']

    def compute(batch, loaded):
        calls.append([it.id for it in batch])
        return [ItemOutput({f'out/{it.id}.txt': str(v * v).encode()}, dict(square=v * v))
                for it, v in zip(batch, loaded)]

    return items, load, compute


def test_temp_files_of_a_killed_run_are_removed_by_the_ranks_that_could_not_be_writing(
        tmp_path, monkeypatch):
    """A kill leaves each rank's temp files (``.<name>.r<rank>.tmp``). A rank removes its own; rank
    0 also those of ranks the new run does not have (a 2-rank run resumed by one process): no rank
    of this run writes them. Another rank's own temp files may be in use: they stay."""
    import mmdiffseg.apis.io as io
    names = ['.a.png.r0.tmp', 'sub/.b.png.r1.tmp', '.c.png.r2.tmp', 'keep.tmp', '.d.r1.tmp.png']
    for name in names:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b'x')
    monkeypatch.setattr(io, 'get_dist_info', lambda: (0, 2))   # rank 0 of 2
    assert remove_stale_temp_files(tmp_path) == 2
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob('*') if p.is_file())
    assert left == ['.d.r1.tmp.png', 'keep.tmp', 'sub/.b.png.r1.tmp']
    monkeypatch.setattr(io, 'get_dist_info', lambda: (0, 1))   # one process resumes
    assert remove_stale_temp_files(tmp_path) == 1
    assert not (tmp_path / 'sub/.b.png.r1.tmp').exists() and (tmp_path / 'keep.tmp').exists()


def test_run_job_resumes_without_redoing(tmp_path):
    calls = []
    items, load, compute = _job(calls)
    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=3, split_file='ids.txt')
    assert (summary.made, summary.already_done, [f[0] for f in summary.failed]) == (6, 0, ['item3'])
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
    assert (summary.made, summary.already_done) == (2, 4)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    # item5's old record (its file is gone) is superseded by the new one
    assert [r['id'] for r in lines[1:]] == ['item0', 'item1', 'item2', 'item4', 'item5', 'item5',
                                             'item6']
    assert lines[-1] == dict(id='item6', files=['out/item6.txt'], sizes={'out/item6.txt': 2},
                            square=36)
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
    m.append_many([dict(id='a', files=[])])
    with open(m.path, 'ab') as f:
        f.write(b'{"id": "b", "files": []}')  # complete JSON, newline never written
    assert list(m.load()) == ['a']
    m.append_many([dict(id='c', files=[])])
    assert list(Manifest(tmp_path, HEADER).load()) == ['a', 'c']


def test_damaged_middle_line_is_an_error(tmp_path):
    m = Manifest(tmp_path, HEADER)
    m.start()
    with open(m.path, 'ab') as f:
        f.write(b'{"id": "a", \n{"id": "b", "files": []}\n')
    with pytest.raises(UserInputError, match='line 2 is not JSON'):
        m.load()
    # made with other settings: that is the refusal to see (its fix: another --out)
    with pytest.raises(UserInputError, match=r'different settings:\n  seed: folder has 0, '
                                             r'this run has 1'):
        Manifest(tmp_path, dict(HEADER, seed=1)).load()


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


def test_a_file_named_up_to_the_longest_name_is_written_and_resumed(tmp_path, monkeypatch):
    """The temp file beside an output is 8 bytes longer than its name: an image named with 82 CJK
    characters (a 248-byte label name) failed its write on every rerun ('File name too long')."""
    import mmdiffseg.apis.io as io
    long = '猫' * 82                       # 246 bytes in UTF-8
    items = [WorkItem(long, dict(value=3)), WorkItem('short', dict(value=2))]
    summary = run_job(items, lambda item: item.payload['value'],
                      lambda batch, values: [ItemOutput({f'{it.id}.png': bytes([v])}, {})
                                             for it, v in zip(batch, values)],
                      tmp_path, HEADER, batch_size=2)
    assert (summary.made, summary.failed) == (2, [])
    assert (tmp_path / f'{long}.png').read_bytes() == b'\x03'
    left = io.temp_path(tmp_path / f'{long}.png', io.tmp_tag())   # as a kill would leave it
    left.write_bytes(b'x')
    assert len(os.fsencode(left.name)) <= io.NAME_MAX
    monkeypatch.setattr(io, 'get_dist_info', lambda: (0, 1))
    assert remove_stale_temp_files(tmp_path) == 1 and not left.exists()
    # two long names alike but for their ends: one temp file each (writers run in parallel)
    tag = io.tmp_tag()
    assert io.temp_path(tmp_path / f'{long}a.png', tag) != io.temp_path(tmp_path / f'{long}b.png',
                                                                       tag)


def test_a_write_under_a_file_or_onto_an_existing_file_is_told_apart(tmp_path):
    """A parent that is a file (``--out-json afile/x.json``) is a write error, as before the
    hard-link mode; only ``replace=False`` onto an existing file is a FileExistsError, and
    neither leaves a temp file."""
    (tmp_path / 'afile').write_text('')
    with pytest.raises(OutputWriteError, match=f'cannot write {tmp_path}/afile/x.json'):
        atomic_write(tmp_path / 'afile' / 'x.json', b'{}')
    atomic_write(tmp_path / 'once', b'first', replace=False)
    with pytest.raises(FileExistsError):
        atomic_write(tmp_path / 'once', b'second', replace=False)
    assert (tmp_path / 'once').read_bytes() == b'first'
    atomic_write(tmp_path / 'once', b'third')
    assert (tmp_path / 'once').read_bytes() == b'third'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['afile', 'once']


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


def test_header_mismatch_names_only_the_nested_options_that_differ(tmp_path):
    items, load, compute = _job([])
    generator = dict(type='ISeg', iters=3, ent=0.015, token_enhance=1.6, classes=['a', 'b'])
    run_job(items[:1], load, compute, tmp_path, dict(HEADER, generator=generator))
    with pytest.raises(UserInputError) as error:
        run_job(items, load, compute, tmp_path, dict(HEADER, generator=dict(generator, iters=4)))
    lines = str(error.value).splitlines()
    assert [line for line in lines if line.startswith('  ')] == [
        '  generator.iters: folder has 3, this run has 4']


def test_a_header_naming_the_model_folder_resumes_under_the_model_identity(tmp_path):
    """Headers record the model's identity (config hash): the same model in another folder, or
    a folder made when headers held the model's path, resumes; another model is refused."""
    from mmdiffseg.provenance import model_identity

    def sd_folder(path, pipeline):
        path.mkdir(parents=True)
        (path / 'model_index.json').write_text(f'{{"_class_name": "{pipeline}"}}')
        return path

    model = sd_folder(tmp_path / 'models' / 'sd', 'StableDiffusionPipeline')
    copy = sd_folder(tmp_path / 'node2' / 'sd-copy', 'StableDiffusionPipeline')
    other = sd_folder(tmp_path / 'other' / 'sd', 'OtherPipeline')
    out = tmp_path / 'out'
    Manifest(out, dict(HEADER, model=str(model))).start()  # an older folder's header
    assert Manifest(out, dict(HEADER, model=model_identity(model))).load() == {}
    assert Manifest(out, dict(HEADER, model=model_identity(copy))).load() == {}
    with pytest.raises(UserInputError, match=r'  model: folder has ".*sd", this run has .*"sd-'):
        Manifest(out, dict(HEADER, model=model_identity(other))).load()


def test_ctrl_c_keeps_what_was_made_and_reports_it(tmp_path):
    from mmdiffseg.apis.io import JobInterrupted
    calls = []
    items, load, compute = _job(calls)

    def interrupted_compute(batch, loaded):
        if len(calls) == 1:
            raise KeyboardInterrupt
        return compute(batch, loaded)

    with pytest.raises(JobInterrupted) as error:
        run_job(items, load, interrupted_compute, tmp_path, HEADER, batch_size=3)
    assert error.value.summary.made == 3
    assert 'made 3' in str(error.value) and 'rerun the same command to resume' in str(error.value)
    assert sorted(Manifest(tmp_path, HEADER).load()) == ['item0', 'item1', 'item2']
    summary = run_job(items, load, compute, tmp_path, HEADER, batch_size=3)
    assert (summary.made, summary.already_done) == (3, 3)


@pytest.mark.parametrize('terminal', [True, False])
def test_progress_is_a_throttled_bar_on_a_terminal_and_timed_lines_in_a_log(terminal,
                                                                             monkeypatch):
    """A terminal gets mmengine's bar, redrawn at most every 0.2 s; a log file (Slurm, nohup) a
    plain line at the start, every 30 s and at the last item, never a carriage return per item."""
    from mmdiffseg.apis import progress
    clock = [0.0]
    monkeypatch.setattr(progress.time, 'monotonic', lambda: clock[0])
    screen = Terminal() if terminal else io.StringIO()
    with progress.ProgressLine(1000, screen) as bar:
        bar.start()
        for _ in range(1000):
            clock[0] += 0.125    # 8 items/s: 125 s in all
            bar.update()
    text = screen.getvalue()
    if terminal:
        assert 490 <= text.count('\r') <= 501 and text.endswith('\n')   # every other item
        assert '1000/1000' in text.split('\r')[-1]
    else:
        assert '\r' not in text
        lines = text.splitlines()
        assert [line.split()[1] for line in lines] == ['0/1000', '240/1000', '480/1000',
                                                       '720/1000', '960/1000', '1000/1000']
        assert lines[1] == 'progress: 240/1000 (24.0%), 8.00 items/s, elapsed 0:00:30, ETA 0:01:35'


def test_an_error_during_the_job_starts_on_a_fresh_line(full_dir):
    import contextlib

    from mmdiffseg.apis import cli
    items = [WorkItem(f'item{i}') for i in range(6)]
    blob = np.random.RandomState(0).bytes(20 * 1024)
    screen = Terminal()  # stdout and stderr as a terminal shows them

    def main(argv):
        run_job(items, lambda it: None, lambda b, _: [ItemOutput({f'{it.id}.bin': blob})
                                                     for it in b],
                full_dir, HEADER, batch_size=1, progress_file=screen)

    with contextlib.redirect_stderr(screen), contextlib.redirect_stdout(screen):
        assert cli.run_cli(main) == cli.EXIT_WRITE_FAILED
    text = screen.getvalue()
    assert '/6, ' in text  # the progress bar was drawn
    assert '\nerror: cannot write' in text and 'disk is full' in text


def _file_job(folder, calls, labels):
    """Items made from the files in ``folder`` (``source``) and a label each (``inputs``);
    each output holds the file's text and the label."""
    items = [WorkItem(p.stem, dict(path=str(p)), source=str(p), inputs=dict(label=labels[p.stem]))
             for p in sorted(folder.glob('*.txt'))]

    def load(item):
        text = open(item.payload['path']).read()
        if text == 'corrupt':
            raise ItemFailed(f'{item.id} is corrupt')
        return text

    def compute(batch, loaded):
        calls.extend(it.id for it in batch)
        return [ItemOutput({f'out/{it.id}.txt': f'{text}:{it.inputs["label"]}'.encode()})
                for it, text in zip(batch, loaded)]
    return items, load, compute


def test_an_item_whose_inputs_changed_is_redone_and_counted(tmp_path):
    import hashlib
    import os
    src, out = tmp_path / 'src', tmp_path / 'out'
    src.mkdir()
    for name in 'abcd':
        (src / f'{name}.txt').write_text(name * 3)
    labels, calls = dict(a=['x'], b=['x'], c=['y'], d=['y']), []
    summary = run_job(*_file_job(src, calls, labels), out, HEADER, batch_size=2,
                      split_file='ids.txt')
    record = Manifest(out, HEADER).load()['c']
    assert record['label'] == ['y'] and record['source']['size'] == 3
    assert record['source']['sha1'] == hashlib.sha1(b'ccc').hexdigest()

    # same inputs, the files touched (a copy): nothing is redone
    for path in src.iterdir():
        os.utime(path, ns=(1, 1))
    calls.clear()
    summary = run_job(*_file_job(src, calls, labels), out, HEADER, batch_size=2)
    assert (summary.made, summary.already_done, summary.redone, calls) == (0, 4, 0, [])
    assert 'redone' not in summary.line() and 'not checked' not in summary.line()

    # b's label corrected, c's file replaced by one of the same size: both redone, only they
    (src / 'c.txt').write_text('CCC')
    calls.clear()
    summary = run_job(*_file_job(src, calls, dict(labels, b=['z'])), out, HEADER, batch_size=2)
    assert calls == ['a', 'b', 'c', 'd']  # their batches, recomputed whole
    assert (summary.made, summary.already_done, summary.redone) == (2, 2, 2)
    assert 'made 2, already done 2, failed 0' in summary.line()
    assert summary.line().endswith('; redone 2 (inputs changed)')
    assert (out / 'out/b.txt').read_text() == 'bbb:[\'z\']'
    assert (out / 'out/c.txt').read_text() == 'CCC:[\'y\']'
    assert Manifest(out, HEADER).load()['c']['source']['sha1'] == hashlib.sha1(b'CCC').hexdigest()

    # d's file replaced by a corrupt one: named as failed; its old output is removed, and it
    # is out of the split
    (src / 'd.txt').write_text('corrupt')
    summary = run_job(*_file_job(src, [], dict(labels, b=['z'])), out, HEADER, batch_size=2,
                      split_file='ids.txt')
    assert [item_id for item_id, _ in summary.failed] == ['d'] and summary.redone == 0
    assert not (out / 'out/d.txt').exists()
    assert (out / 'ids.txt').read_text().split() == ['a', 'b', 'c']


def test_records_from_before_input_checks_are_kept_and_counted_unchecked(tmp_path):
    src, out = tmp_path / 'src', tmp_path / 'out'
    src.mkdir()
    for name in 'ab':
        (src / f'{name}.txt').write_text(name)
    labels, calls = dict(a=['x'], b=['x']), []
    run_job(*_file_job(src, calls, labels), out, HEADER)
    path = out / 'manifest.jsonl'  # as an older version wrote it: no source fingerprint
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text(''.join(json.dumps({k: v for k, v in line.items() if k != 'source'}) + '\n'
                            for line in lines))
    (src / 'a.txt').write_text('A')  # cannot be told
    calls.clear()
    summary = run_job(*_file_job(src, calls, dict(labels, b=['z'])), out, HEADER)
    assert calls == ['b']  # its label is recorded, so its change is seen
    assert (summary.made, summary.already_done, summary.redone, summary.unchecked) == (1, 1, 1, 1)
    assert summary.line().endswith('; redone 1 (inputs changed); 1 of the already-done items not checked '
                                   'for changed inputs (made by an older version)')


@pytest.mark.parametrize('text', ['', '\n\n', '{"tool": "test"}'])
def test_a_manifest_without_a_complete_header_line_is_refused(tmp_path, text):
    """Empty, blank, or a header cut before its newline: not a folder of this tool's making."""
    (tmp_path / 'manifest.jsonl').write_text(text)
    with pytest.raises(UserInputError) as error:
        Manifest(tmp_path, HEADER).load()
    assert str(error.value) == (f'{tmp_path / "manifest.jsonl"} has no header line; remove the '
                                'folder or pick another --out')


@pytest.mark.skipif(not os.path.exists('/dev/full'), reason='needs /dev/full')
def test_a_manifest_append_that_fails_is_a_write_error_naming_the_manifest(tmp_path):
    """The disk fills at the manifest line (after the item's files): the run stops with the
    reason, as for the files."""
    manifest = Manifest(tmp_path, HEADER)
    manifest.path.symlink_to('/dev/full')
    with pytest.raises(OutputWriteError, match=f'^cannot write {manifest.path}: the disk is full '
                                               r'\(OSError: \[Errno 28\]'):
        manifest.append_many([dict(id='a')])


def test_another_file_under_a_finished_items_name_is_refused_while_the_first_is_there(
        tmp_path):
    """Two cameras' IMG_0001 into one folder: the second overwrote the first's outputs ("redone,
    inputs changed"). Now refused before any work, naming both files; once the first file is gone
    (moved), the item is redone as a changed input."""
    cam_a, cam_b, out, calls = tmp_path / 'camA', tmp_path / 'camB', tmp_path / 'out', []
    for cam, text in ((cam_a, 'aaa'), (cam_b, 'bbbb')):
        cam.mkdir()
        (cam / 'IMG_0001.txt').write_text(text)
    run_job(*_file_job(cam_a, calls, dict(IMG_0001=['x'])), out, HEADER)
    with pytest.raises(UserInputError) as error:
        run_job(*_file_job(cam_b, calls, dict(IMG_0001=['x'])), out, HEADER)
    assert str(error.value) == (
        f"{cam_b / 'IMG_0001.txt'} has the id 'IMG_0001' of finished outputs in this folder made "
        f"from another file, {cam_a / 'IMG_0001.txt'}, still there: outputs are named by the file "
        'name, so making it would overwrite them; give it another --out (or rename it)')
    assert calls == ['IMG_0001'] and (out / 'out/IMG_0001.txt').read_text() == "aaa:['x']"
    (cam_a / 'IMG_0001.txt').unlink()
    summary = run_job(*_file_job(cam_b, calls, dict(IMG_0001=['x'])), out, HEADER)
    assert (summary.made, summary.redone) == (1, 1)
    # the same file again: finished
    assert run_job(*_file_job(cam_b, calls, dict(IMG_0001=['x'])), out, HEADER).already_done == 1


def test_a_source_that_cannot_be_read_fails_its_item_only(tmp_path):
    """The source is fingerprinted after the load (here a load that does not read it): one
    that is gone by then names the item as failed; the job goes on."""
    (tmp_path / 'a.txt').write_text('a')
    items = [WorkItem(name, source=str(tmp_path / f'{name}.txt')) for name in 'ab']
    summary = run_job(items, lambda item: item.id, lambda batch, _: [
        ItemOutput({f'{it.id}.out': b'x'}) for it in batch], tmp_path / 'out', HEADER, workers=0)
    assert summary.made == 1 and [item_id for item_id, _ in summary.failed] == ['b']
    assert summary.failed[0][1].startswith(f'cannot read {tmp_path / "b.txt"}: [Errno 2] ')
    with pytest.raises(ItemFailed, match=f'^cannot read {tmp_path / "b.txt"}: '):
        file_fingerprint(tmp_path / 'b.txt')


def test_a_source_gone_or_unreadable_is_not_the_recorded_one(tmp_path):
    """Checked on resume: a missing file, or a folder now where the file was (same size, other
    time, no bytes to hash), answers False rather than stopping the run."""
    path = tmp_path / 'a.txt'
    path.write_text('a')
    recorded = file_fingerprint(path)
    assert source_unchanged(path, recorded)
    path.unlink()
    assert not source_unchanged(path, recorded)
    path.mkdir()
    assert not source_unchanged(path, dict(recorded, size=os.stat(path).st_size))
