"""What a resumed job trusts and how its folder is kept: per-item seeds, which ranks clear temp
files, torn manifest lines, merging rank manifests, and when a recorded item counts as made from
the current inputs (no model, no job run)."""
import json
import os

import pytest

from mmdiffseg.apis.io import (UserInputError, WorkItem, check_item_ids, item_seed,
                               remove_stale_temp_files)
from mmdiffseg.apis.job_plan import file_fingerprint, inputs_match, is_done
from mmdiffseg.apis.manifest import Manifest, manifest_files

HEADER = dict(tool='test', model='tiny', seed=0)


def test_item_seeds_are_31_bit_for_every_key():
    """Seeds must fit 31 bits (0 <= seed < 2**31) whatever the key, not only for one."""
    seeds = [item_seed(s, f'cat_{i:06d}') for s in (0, 7) for i in range(64)]
    assert all(0 <= seed < 2 ** 31 for seed in seeds)
    assert len(set(seeds)) == len(seeds) and max(seeds) >= 2 ** 30  # spread over the range


def test_a_rank_other_than_0_removes_only_its_own_temp_files(tmp_path, monkeypatch):
    """Rank 1 of 2 removes its own temp files; those of rank 0 (in use) and of ranks beyond the
    run (left to rank 0) stay."""
    import mmdiffseg.apis.io as io
    for name in ('.a.png.r0.tmp', '.b.png.r1.tmp', '.c.png.r2.tmp', '.d.png.r3.tmp'):
        (tmp_path / name).write_bytes(b'x')
    monkeypatch.setattr(io, 'get_dist_info', lambda: (1, 2))
    assert remove_stale_temp_files(tmp_path) == 1
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ['.a.png.r0.tmp', '.c.png.r2.tmp', '.d.png.r3.tmp']


def _records(manifest, *ids):
    manifest.start()
    manifest.append_many([dict(id=i, files=[]) for i in ids])


def test_a_torn_last_line_followed_by_a_blank_line_is_dropped_not_called_damaged(tmp_path):
    """A torn line with only blank lines after it (e.g. an editor added the final newline) is
    still a torn append: dropped and cut off, not refused as a damaged manifest."""
    m = Manifest(tmp_path, HEADER)
    _records(m, 'a')
    good = m.path.read_bytes()
    with open(m.path, 'ab') as f:
        f.write(b'{"id": "b", "fi\n\n')
    assert list(m.load()) == ['a']
    assert m.path.read_bytes() == good


def test_loading_repairs_only_this_ranks_manifest(tmp_path):
    """Rank 0 reads every rank's manifest but cuts a torn line off its own only: rank 1 may be
    appending to its file at that instant."""
    r0, r1 = (Manifest(tmp_path, HEADER, rank=r, world_size=2) for r in (0, 1))
    _records(r0, 'a')
    _records(r1, 'b')
    for m in (r0, r1):
        with open(m.path, 'ab') as f:
            f.write(b'{"id": "torn')
    rank1_bytes = r1.path.read_bytes()
    assert sorted(r0.load()) == ['a', 'b']
    assert r1.path.read_bytes() == rank1_bytes
    assert not r0.path.read_bytes().endswith(b'torn')


def test_merging_rank_manifests_keeps_the_job_order_and_removes_only_the_rank_files(tmp_path):
    """After a 2-rank run, rank 0 writes every record into manifest.jsonl in the items' order
    (ids not in it last, by name) and removes the rank files (each rank, 0 too, appends to its
    own manifest.rank<r>.jsonl while the job runs); the merged file loads."""
    r0, r1 = (Manifest(tmp_path, HEADER, rank=r, world_size=2) for r in (0, 1))
    _records(r0, 'x2', 'x0', 'old')
    _records(r1, 'x1', 'x3')
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ['manifest.rank0.jsonl', 'manifest.rank1.jsonl']
    merged = r0.merge_ranks(['x0', 'x1', 'x2', 'x3'])
    assert [r['id'] for r in merged] == ['x0', 'x1', 'x2', 'x3', 'old']
    assert sorted(p.name for p in tmp_path.iterdir()) == ['manifest.jsonl']
    lines = [json.loads(line) for line in (tmp_path / 'manifest.jsonl').read_text().splitlines()]
    assert lines[0]['tool'] == 'test' and [r['id'] for r in lines[1:]] == [r['id'] for r in merged]
    assert list(Manifest(tmp_path, HEADER).load()) == ['x0', 'x1', 'x2', 'x3', 'old']


def test_a_merge_that_cannot_write_keeps_the_rank_manifests(tmp_path, monkeypatch):
    """The rank files go only once manifest.jsonl holds their records: removed first, a full
    disk at the merge lost every rank's records (the next run redid the whole job)."""
    import mmdiffseg.apis.manifest as manifest_module
    r0, r1 = (Manifest(tmp_path, HEADER, rank=r, world_size=2) for r in (0, 1))
    _records(r0, 'x0')
    _records(r1, 'x1')

    def full_disk(path, data):
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(manifest_module, 'atomic_write', full_disk)
    with pytest.raises(OSError):
        r0.merge_ranks(['x0', 'x1'])
    assert sorted(p.name for p in tmp_path.iterdir()) == ['manifest.rank0.jsonl',
                                                         'manifest.rank1.jsonl']


def test_a_source_of_another_size_is_changed_even_at_the_recorded_time(tmp_path):
    """The size is compared first: a file rewritten with other content of another size and its
    old modification time set back (a copy that keeps times) is a changed input."""
    path = tmp_path / 'a.txt'
    path.write_text('abc')
    record = dict(source=file_fingerprint(path))
    item = WorkItem('a', source=str(path))
    assert inputs_match(item, record) is True
    path.write_text('abcd')
    os.utime(path, ns=(record['source']['mtime_ns'], record['source']['mtime_ns']))
    assert inputs_match(item, record) is False


def test_inputs_are_compared_as_the_json_the_manifest_holds(tmp_path):
    """A tuple input is recorded as a JSON list: read back, it is the same input (not redone
    on every run); a missing key is unknown (None: an older record), a different value False."""
    item = WorkItem('a', inputs=dict(classes=('cat', 'dog'), size=(512, 512)))
    record = json.loads(json.dumps(dict(id='a', files=[], **item.inputs)))
    assert inputs_match(item, record) is True
    assert inputs_match(item, {k: v for k, v in record.items() if k != 'classes'}) is None
    assert inputs_match(item, dict(record, classes=['cat'])) is False
    # one input unrecorded (older) and another changed: changed, not unknown
    older = {k: v for k, v in record.items() if k != 'classes'}
    assert inputs_match(item, dict(older, size=[256, 256])) is False


def test_the_same_input_listed_twice_is_refused():
    """Two equal items (one image listed twice) would also write one output twice."""
    with pytest.raises(UserInputError, match=r"two inputs have the id 'x'.*imgs/x.jpg and "
                                             r"imgs/x.jpg"):
        check_item_ids([WorkItem('x', source='imgs/x.jpg'), WorkItem('x', source='imgs/x.jpg')])


def test_an_id_a_split_file_cannot_list_is_refused():
    """mmseg strips each line of a split file: an image ' lead.jpg' would be listed as 'lead'
    and not found when training; refused before any work, naming the file."""
    for name in (' lead', 'trail ', 'two\nlines'):
        with pytest.raises(UserInputError) as error:
            check_item_ids([WorkItem('ok', source='imgs/ok.jpg'),
                            WorkItem(name, source=f'imgs/{name}.jpg')])
        assert str(error.value) == (
            f'{f"imgs/{name}.jpg"!r}: its id {name!r} begins or ends with a space or holds a line '
            'break, which a split file (train.txt, read line by line and stripped by mmseg) '
            'cannot list; rename it')
    check_item_ids([WorkItem('with inner space', source='imgs/with inner space.jpg')])


def test_a_header_without_a_tool_is_refused_by_its_settings_not_as_another_tools(tmp_path):
    """Only two named tools that differ are "made by another tool"; a header that names none
    differs in the setting 'tool', named as such."""
    Manifest(tmp_path, dict(model='tiny', seed=0)).start()
    with pytest.raises(UserInputError) as error:
        Manifest(tmp_path, HEADER).load()
    assert 'made by' not in str(error.value)
    assert 'tool: folder has <absent>, this run has "test"' in str(error.value)


def test_only_the_manifest_and_rank_manifests_are_the_folders(tmp_path):
    """Copies whose names merely start like a manifest's are not read."""
    names = ['manifest.jsonl', 'manifest.rank1.jsonl', 'manifest.jsonl.bak.jsonl',
             'manifest.rank1.jsonl.old.jsonl', 'manifest_old.jsonl']
    for name in names:
        (tmp_path / name).write_text('')
    assert [p.name for p in manifest_files(tmp_path)] == names[:2]
    assert [p.name for p in manifest_files(tmp_path, ranks_only=True)] == names[1:2]


def test_an_output_file_longer_or_shorter_than_recorded_is_not_done(tmp_path):
    """A file replaced by another copy is redone whether it grew or shrank; a record without
    sizes (older) is checked for the files alone."""
    (tmp_path / 'a.png').write_bytes(b'12345')
    record = dict(id='a', files=['a.png'], sizes={'a.png': 5})
    assert is_done(tmp_path, record)
    for size in (4, 6):
        assert not is_done(tmp_path, dict(record, sizes={'a.png': size}))
    assert is_done(tmp_path, dict(id='a', files=['a.png']))
    assert not is_done(tmp_path, dict(id='a', files=['a.png', 'b.png']))
    assert not is_done(tmp_path, None)


def test_items_without_a_source_are_named_by_their_payload_without_the_file_name_hint():
    """Synthesised items have no file: named by their payload, and no advice to rename files."""
    with pytest.raises(UserInputError) as error:
        check_item_ids([WorkItem('cat_0', dict(prompt='a cat', seed=1)),
                        WorkItem('cat_0', dict(prompt='a cat', seed=2))])
    assert str(error.value) == (
        "two inputs have the id 'cat_0', so their outputs would overwrite each other: "
        "prompt='a cat', seed=1 and prompt='a cat', seed=2; item ids must be unique")
