"""What a tool does under torchrun / a batch system: SIGTERM (torchrun's after a forwarded Ctrl-C,
SLURM's scancel, ``kill``) stops a job as Ctrl-C does, and a signal that follows at once is the
same interruption; a label cache of another precision is bad input (exit 2), not a traceback;
warnings, notes and the contact sheet come from rank 0 only."""
import io
import logging
import os
import signal
import sys
import time

import pytest
from mmengine.logging import MMLogger, print_log

import mmdiffseg.datasets.label_cache as label_cache
from apis.test_ctrl_c import SLOW_JOB, _start, _wait_for
from mmdiffseg.apis import cli
from mmdiffseg.apis.io import JobSummary, UserInputError
from mmdiffseg.datasets import LabelCache
from tool_modules import load_tool


def _interrupt(tmp_path, *signals, gap=0.0):
    """SLOW_JOB stopped by ``signals``, sent to its whole process group ``gap`` seconds apart
    (torchrun sends its ranks SIGINT then SIGTERM at once) once two items are made."""
    proc = _start(SLOW_JOB, tmp_path)
    manifest = tmp_path / 'manifest.jsonl'
    _wait_for(lambda: manifest.is_file() and len(manifest.read_text().splitlines()) >= 3)
    time.sleep(0.5)
    for i, signum in enumerate(signals):
        time.sleep(gap if i else 0)
        os.killpg(proc.pid, signum)
    output = proc.communicate(timeout=120)[0]
    return proc, output


@pytest.mark.parametrize('signals, gap', [
    ((signal.SIGTERM,), 0), ((signal.SIGINT, signal.SIGTERM), 0),
    ((signal.SIGTERM, signal.SIGINT), 0), ((signal.SIGINT, signal.SIGTERM), 0.3)],
    ids=['SIGTERM', 'SIGINT+SIGTERM', 'SIGTERM+SIGINT', 'SIGINT, 0.3 s, SIGTERM'])
def test_sigterm_and_a_signal_right_after_the_first_stop_the_job_as_one_ctrl_c(tmp_path,
                                                                               signals, gap):
    """The main process finishes the writes handed over, prints the summary (not "without
    waiting": the second signal is the same interruption, even after the job stopped: 0.3 s
    later was a kill, status -15) and exits 130; the loader and writer processes, which got the
    signals too, neither die before it nor print a traceback."""
    proc, output = _interrupt(tmp_path, *signals, gap=gap)
    assert proc.returncode == 130, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert 'error: interrupted: made 2, already done 0, failed 0' in output, output
    assert 'rerun the same command to resume' in output
    assert sorted(p.name for p in tmp_path.glob('item*')) == ['item0.txt', 'item1.txt']
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the whole group is gone


def test_a_stop_signal_within_the_window_is_the_same_interruption(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(cli.time, 'monotonic', lambda: clock[0])
    handler = cli._StopHandler()
    with pytest.raises(KeyboardInterrupt):
        handler(signal.SIGINT, None)
    clock[0] += cli.SAME_INTERRUPTION_SECONDS / 2
    handler(signal.SIGTERM, None)  # torchrun's SIGTERM right after the forwarded SIGINT
    clock[0] += cli.SAME_INTERRUPTION_SECONDS
    with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C
        handler(signal.SIGINT, None)
    handler.pid = os.getpid() + 1  # a forked worker process leaves it to the main process
    clock[0] += 10
    handler(signal.SIGTERM, None)


def test_run_cli_turns_sigterm_into_the_interruption_and_restores_the_handlers(capsys):
    before = {s: signal.getsignal(s) for s in cli.STOP_SIGNALS}

    def tool(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail('SIGTERM did not stop the tool')

    assert cli.run_cli(tool) == cli.EXIT_INTERRUPTED
    assert 'error: interrupted before this run made any item' in capsys.readouterr().err
    assert {s: signal.getsignal(s) for s in cli.STOP_SIGNALS} == before


def test_a_cache_of_another_precision_is_bad_input_with_one_line(tmp_path, capsys):
    """Two prefills of a new cache, float32 and bfloat16: both pass the pre-flight (no
    signature yet); the second finds the first's signature mid-run: an ``error:`` line and exit
    status 2 (a ValueError still, for library callers)."""
    spec = dict(cache_dir=str(tmp_path / 'cache'), model='stabilityai/stable-diffusion-2-1-base',
                generator=dict(type='ISeg'))
    LabelCache(**spec, writer_dtype='float32').sign()
    cache = LabelCache(**spec, writer_dtype='bfloat16')
    with pytest.raises(UserInputError, match='holds labels made in float32, and this run would '
                                             'add labels made in bfloat16'):
        cache.check_signature()
    assert issubclass(UserInputError, ValueError)
    assert cli.run_cli(lambda argv: LabelCache(**spec, writer_dtype='bfloat16').sign()) == 2
    err = capsys.readouterr().err
    assert err.startswith(f'error: label cache {tmp_path / "cache"} holds labels made in float32')
    assert 'Traceback' not in err
    other = dict(spec, generator=dict(type='ISeg', iters=3))
    with pytest.raises(UserInputError, match='holds labels made with other settings'):
        LabelCache(**other, writer_dtype='float32').check_signature()
    from mmdiffseg.apis.io import SettingsRefused   # a UserInputError no rerun gets past
    assert label_cache._conflict('x').__class__ is SettingsRefused
    assert issubclass(SettingsRefused, UserInputError)


@pytest.fixture(autouse=True)
def loggers_left_as_they_were():
    """Console levels that a test as rank 1 lowered (:func:`cli.quiet_other_ranks` changes
    every MMLogger made so far) come back after it, and the loggers it made are dropped: the
    next test's tool prints its summary through the same ``current`` logger."""
    instances = MMLogger._instance_dict
    before = dict(instances)
    levels = {h: h.level for logger in before.values() for h in logger.handlers}
    yield
    for handler, level in levels.items():
        handler.setLevel(level)
    for name in set(instances) - set(before):
        for handler in instances.pop(name).handlers:
            handler.close()


def as_rank_1(monkeypatch):
    """This process as rank 1 of a joined process group (nothing joined)."""
    import mmengine.dist
    import torch.distributed
    monkeypatch.setattr(torch.distributed, 'init_process_group', lambda *a, **k: None)
    monkeypatch.setattr(mmengine.dist, 'get_rank', lambda *a, **k: 1)
    return monkeypatch


@pytest.fixture
def rank_1(monkeypatch):
    return as_rank_1(monkeypatch)


def test_after_joining_only_rank_0_prints_warnings(monkeypatch, tmp_path):
    """The tools make their MMLogger before torchrun's ranks join the group, so mmengine gave
    every rank's console handler rank 0's level; once joined, rank 1's show errors only (its
    file handlers are left as they are)."""
    logger = MMLogger.get_instance(f'rank-test-{time.time()}', log_file=str(tmp_path / 'x.log'))
    as_rank_1(monkeypatch)
    stream = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    assert stream and stream[0].level == logging.INFO
    file_levels = [h.level for h in files]
    cli.start_launcher('pytorch', 'cpu')
    assert [h.level for h in stream] == [logging.ERROR] * len(stream)
    assert [h.level for h in files] == file_levels
    console = io.StringIO()
    previous = stream[0].setStream(console)
    try:
        print_log('a warning', logger=logger.instance_name, level=logging.WARNING)
        print_log('an error', logger=logger.instance_name, level=logging.ERROR)
    finally:
        stream[0].setStream(previous)
    assert 'an error' in console.getvalue() and 'a warning' not in console.getvalue()
    assert 'a warning' in (tmp_path / 'x.log').read_text()  # the file log keeps everything


def test_rank_0_alone_draws_and_announces_the_contact_sheet(rank_1, tmp_path, capsys):
    segment_tool = load_tool('segment')
    api_segment = sys.modules['mmdiffseg.apis.segment']  # the package's `segment` is the function
    visualize = sys.modules['mmdiffseg.apis.visualize']
    drawn = []
    rank_1.setattr(api_segment, 'segment', lambda *a, **k: JobSummary(made=2))
    rank_1.setattr(sys.modules['mmdiffseg.apis.image_inputs'], 'path_items', lambda *a, **k: [])
    rank_1.setattr(visualize, 'write_contact_sheet', lambda *a, **k: drawn.append(a))
    args = [str(tmp_path / 'images'), '--classes', 'cat,', '--model', str(tmp_path), '--out',
            str(tmp_path / 'out'), '--launcher', 'pytorch']
    env = dict(RANK='1', LOCAL_RANK='1', WORLD_SIZE='2', MASTER_ADDR='x', MASTER_PORT='1')
    for name, value in env.items():
        rank_1.setenv(name, value)
    rank_1.setattr(sys, 'argv', ['segment.py'])
    assert segment_tool.main(args) == 0
    assert drawn == [] and 'contact sheet' not in capsys.readouterr().out
    import mmengine.dist
    rank_1.setattr(mmengine.dist, 'get_rank', lambda *a, **k: 0)
    assert segment_tool.main(args) == 0
    assert len(drawn) == 1 and 'contact sheet: ' in capsys.readouterr().out


def test_a_rank_whose_partner_failed_after_the_job_stops_with_one_line(monkeypatch, capsys):
    """segment.py: rank 0 draws the contact sheet while rank 1 leaves; a failed sheet left rank 1
    with gloo's traceback in the barrier of leave_process_group."""
    import torch.distributed as dist
    from mmdiffseg.apis import io as job_io
    monkeypatch.setattr(job_io, 'RANK_STOPPED_WAIT_S', 0)
    destroyed = []
    monkeypatch.setattr(dist, 'is_initialized', lambda: True)
    monkeypatch.setattr(dist, 'destroy_process_group', lambda: destroyed.append(1))

    def barrier():
        raise RuntimeError('[pair.cc:561] Connection closed by peer [127.0.0.1]:1')
    monkeypatch.setattr(dist, 'barrier', barrier)
    assert cli.run_cli(lambda argv: 0) == cli.EXIT_WRITE_FAILED
    assert capsys.readouterr().err == (
        'error: another rank stopped (see its error above); finished items are kept: rerun the '
        'same command to resume\n')
    assert destroyed == [1]


def test_ctrl_c_while_waiting_for_the_other_ranks_keeps_this_rank_s_summary(
        tmp_path, monkeypatch):
    """Rank 0 finished its share and waits for rank 1 when Ctrl-C comes: it said "interrupted
    before any item was made"; its share is complete and counted."""
    from mmdiffseg.apis import jobs
    from mmdiffseg.apis.io import ItemOutput, JobInterrupted, WorkItem
    gathered = []

    def all_gather_object(obj):
        gathered.append(obj)
        if len(gathered) == 2:  # the job's end (the first: the ranks' settings)
            raise KeyboardInterrupt
        return [obj, obj]
    monkeypatch.setattr(jobs, 'get_dist_info', lambda: (0, 2))
    monkeypatch.setattr(jobs, 'all_gather_object', all_gather_object)
    monkeypatch.setattr(jobs, 'broadcast_object_list', lambda objects, src: None)
    monkeypatch.setattr('mmdiffseg.apis.folder_lock.get_dist_info', lambda: (0, 2))
    monkeypatch.setattr('mmdiffseg.apis.folder_lock.broadcast_object_list',
                        lambda objects, src: None)
    items = [WorkItem(i) for i in 'abcd']
    with pytest.raises(JobInterrupted) as stop:
        jobs.run_job(items, None, lambda batch, data: [
            ItemOutput({f'{it.id}.txt': b'x'}) for it in batch], tmp_path / 'out',
            dict(tool='test'), workers=0)
    assert stop.value.summary.made == 2  # a and c, rank 0's share
