"""The writer that commits a job's finished items (OutputWriter, no job run): which items are
committed when some cannot be written, which error is raised, and nothing committed after it is
abandoned."""
import threading

import pytest

from mmdiffseg.apis.io import ItemOutput, OutputWriteError, WorkItem
from mmdiffseg.apis.manifest import Manifest
from mmdiffseg.apis.output_writer import OutputWriter

HEADER = dict(tool='test', model='tiny', seed=0)


def _writer(folder, workers, made):
    manifest = Manifest(folder, HEADER)
    manifest.start()
    writer = OutputWriter(folder, manifest, workers, '.t.tmp',
                          lambda item, record: made.append(item.id), lambda item, reason: None)
    return writer, manifest


def test_the_items_written_are_committed_and_the_first_write_error_is_raised(tmp_path):
    """In one batch, i0 is written and i1, i2 cannot be (their folders are files): i0 is
    committed (manifest line, reported made); the error raised names i1's file, the first."""
    for name in ('f1', 'f2'):
        (tmp_path / name).write_text('')
    made = []
    outputs = [(WorkItem(f'i{k}'), ItemOutput({f'f{k}/x.bin': b'x'})) for k in (0, 1, 2)]
    with pytest.raises(OutputWriteError, match=r'cannot write .*/f1/x\.bin'):
        with _writer(tmp_path, 0, made)[0] as writer:
            writer.submit(outputs, [])
    assert made == ['i0'] and list(Manifest(tmp_path, HEADER).load()) == ['i0']
    assert (tmp_path / 'f0/x.bin').read_bytes() == b'x'


def test_an_error_of_the_job_is_not_replaced_by_a_write_error(tmp_path):
    """When the job itself fails while a write error is pending, the job's error is raised."""
    (tmp_path / 'f1').write_text('')
    with pytest.raises(ZeroDivisionError):
        with _writer(tmp_path, 0, [])[0] as writer:
            writer.submit([(WorkItem('i1'), ItemOutput({'f1/x.bin': b'x'}))], [])
            1 / 0


def test_a_batch_that_cannot_reach_a_writer_process_is_an_error_not_skipped(tmp_path):
    """Files a writer process cannot receive (a lambda does not pickle) fail the batch with an
    error; the items are not committed, and not silently dropped."""
    made = []
    with pytest.raises(Exception, match='pickle'):
        with _writer(tmp_path, 1, made)[0] as writer:
            writer.submit([(WorkItem('a'), ItemOutput({'a.bin': lambda: b'x'}))], [])
    assert made == [] and Manifest(tmp_path, HEADER).load() == {}


def test_nothing_is_committed_after_the_writer_is_abandoned(tmp_path):
    """A batch still being written when the writer is abandoned (second Ctrl-C) is not committed,
    even if its files get written after."""
    release, made = threading.Event(), []

    def slow():
        release.wait(10)
        return b'x'
    writer, manifest = _writer(tmp_path, 0, made)
    writer.submit([(WorkItem('a'), ItemOutput({'a.bin': slow}))], [])
    writer.abandon()
    release.set()
    writer.__exit__(None, None, None)   # the committer takes the batch, then stops
    assert made == [] and manifest.load() == {}


def test_each_record_holds_its_own_files_sizes_and_inputs_and_failed_items_are_reported(
        tmp_path):
    """A record lists its item's files (sorted), the size of each, and the item's inputs, and
    nothing of the other items of its batch; an item that could not be loaded is reported."""
    manifest = Manifest(tmp_path, HEADER)
    manifest.start()
    made, failed = [], []
    outputs = [(WorkItem('a', inputs=dict(classes=['cat'])),
                ItemOutput({'z/a.png': b'xx', 'a/a.jpg': b'x'}, dict(labelled=0.5))),
               (WorkItem('b'), ItemOutput({'z/b.png': b'xyz'}))]
    with OutputWriter(tmp_path, manifest, 0, '.t.tmp', lambda item, record: made.append(record),
                      lambda item, reason: failed.append((item.id, reason))) as writer:
        writer.submit(outputs, [(WorkItem('c'), 'c.jpg is truncated')])
    expected = {'a': dict(id='a', files=['a/a.jpg', 'z/a.png'], classes=['cat'], labelled=0.5,
                          sizes={'a/a.jpg': 1, 'z/a.png': 2}),
                'b': dict(id='b', files=['z/b.png'], sizes={'z/b.png': 3})}
    assert Manifest(tmp_path, HEADER).load() == expected
    assert made == list(expected.values())
    assert failed == [('c', 'c.jpg is truncated')]


def test_the_first_batchs_write_error_is_raised_not_a_later_ones(tmp_path):
    for name in ('f1', 'f2'):
        (tmp_path / name).write_text('')
    with pytest.raises(OutputWriteError, match=r'cannot write .*/f1/x\.bin'):
        with _writer(tmp_path, 0, [])[0] as writer:
            for k in (1, 2):
                writer.submit([(WorkItem(f'i{k}'), ItemOutput({f'f{k}/x.bin': b'x'}))], [])


def test_leaving_the_block_on_a_ctrl_c_abandons_the_writes_in_flight(tmp_path):
    """A Ctrl-C out of the block (the second one: the job holds the first) does not wait for the
    batch still being written, commits nothing of it, and goes on as KeyboardInterrupt."""
    release, made = threading.Event(), []

    def slow():
        release.wait(10)
        return b'x'
    writer, manifest = _writer(tmp_path, 0, made)
    try:
        with pytest.raises(KeyboardInterrupt):
            with writer:
                writer.submit([(WorkItem('a'), ItemOutput({'a.bin': slow}))], [])
                raise KeyboardInterrupt
        assert writer.abandoned and not release.is_set()  # left before the write ended
    finally:
        release.set()
    writer.pending.put(None)  # the committer stops once it has taken the batch (not committed)
    writer.thread.join(10)
    assert made == [] and manifest.load() == {}


def test_abandoning_kills_the_writer_processes_by_the_pools_own_call_where_it_has_one(tmp_path):
    """Python 3.14's ProcessPoolExecutor.kill_workers is used when there (no private process
    table read); pending tasks are cancelled without waiting."""
    calls = []

    class Pool:
        _processes = None  # (read only by the fallback, which would fail on it)

        def kill_workers(self):
            calls.append('kill_workers')

        def shutdown(self, wait, cancel_futures):
            calls.append(('shutdown', wait, cancel_futures))
    writer, _ = _writer(tmp_path, 0, [])
    writer.pool.shutdown()
    writer.pool = Pool()
    writer.abandon()
    assert calls == ['kill_workers', ('shutdown', False, True)]
    writer.pending.put(None)
    writer.thread.join(10)
