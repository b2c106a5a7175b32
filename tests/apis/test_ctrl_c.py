"""Ctrl-C on a tool's command line: the loader and writer processes leave it to the main process,
which finishes the writes handed over, reports and exits 130; a second Ctrl-C meanwhile stops at
once, abandoning the writes in flight. Rerunning resumes."""
import os
import signal
import subprocess
import sys
import time

import pytest

from apis.test_jobs import children_of

SLOW_JOB = '''
import os, sys, time
from mmdiffseg.apis import cli
from mmdiffseg.apis.io import ItemOutput, WorkItem
from mmdiffseg.apis.jobs import run_job

def slow_bytes():  # encoded in a writer process
    open(os.path.join(sys.argv[1], 'writing'), 'w').close()
    time.sleep(60)
    return b'y'

def compute(batch, loaded):
    if batch[0].id == 'item2' and os.environ.get('SLOW_WRITE'):
        return [ItemOutput({f'{it.id}.txt': slow_bytes}) for it in batch]
    if batch[0].id != 'item0' and not os.environ.get('FAST'):
        time.sleep(60)
    return [ItemOutput({f'{it.id}.txt': b'x'}) for it in batch]

def main(argv):
    run_job([WorkItem(f'item{i}') for i in range(8)], lambda it: it.id, compute, sys.argv[1],
            dict(tool='test'), batch_size=2, workers=2)

sys.exit(cli.run_cli(main))
'''


def _start(script: str, folder, **env) -> subprocess.Popen:
    """The job in a session of its own, SIGINT at its default, as a terminal starts a command (a
    background job of a non-interactive shell, e.g. a CI runner's, inherits it ignored, and so
    would the job)."""
    return subprocess.Popen([sys.executable, '-c', script, str(folder)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED='1', **env),
                            start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _wait_for(condition, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline and not condition():
        time.sleep(0.05)
    assert condition()


@pytest.mark.parametrize('to_group', [False, True], ids=['kill -INT', 'terminal Ctrl-C'])
def test_ctrl_c_on_the_command_line_prints_a_summary_and_exits_130(tmp_path, to_group):
    """SIGINT to the main process, or to every process of the job as a terminal's Ctrl-C: the
    loader and writer processes leave it to the main process (no traceback anywhere), which
    finishes the writes handed over, reports and exits 130, leaving no process behind."""
    proc = _start(SLOW_JOB, tmp_path)
    manifest = tmp_path / 'manifest.jsonl'
    _wait_for(lambda: manifest.is_file() and len(manifest.read_text().splitlines()) >= 3)
    time.sleep(0.5)
    assert len(children_of(proc.pid)) >= 4  # two loader and two writer processes
    if to_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert 'error: interrupted: made 2, already done 0, failed 0' in output
    assert 'rerun the same command to resume' in output
    assert sorted(p.name for p in tmp_path.glob('item*')) == ['item0.txt', 'item1.txt']
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the whole group is gone


def test_a_second_ctrl_c_abandons_the_writes_in_flight_and_a_rerun_redoes_them(tmp_path):
    """The first Ctrl-C waits for a writer busy with items 2-3; the second kills the writers
    and exits 130 at once, naming what was made; the rerun makes exactly the rest."""
    proc = _start(SLOW_JOB, tmp_path, SLOW_WRITE='1')
    _wait_for((tmp_path / 'writing').is_file)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(1.0)
    os.killpg(proc.pid, signal.SIGINT)
    second = time.time()
    output = proc.communicate(timeout=120)[0]
    assert time.time() - second < 20, output  # not the writer's 60 s
    assert proc.returncode == 130, output
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output
    assert ('error: interrupted without waiting for the writes in flight (their items are not '
            'made): made 2, already done 0, failed 0') in output
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # the killed writers too
    assert sorted(p.name for p in tmp_path.glob('item*')) == ['item0.txt', 'item1.txt']

    rerun = subprocess.run([sys.executable, '-c', SLOW_JOB, str(tmp_path)], text=True,
                           capture_output=True, env=dict(os.environ, FAST='1'), timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert 'made 6, already done 2, failed 0' in rerun.stdout + rerun.stderr
    ids = [line.split('"id": "')[1].split('"')[0]
           for line in (tmp_path / 'manifest.jsonl').read_text().splitlines()[1:]]
    assert sorted(ids) == [f'item{i}' for i in range(8)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f'item{i}.txt' for i in range(8)] + ['manifest.jsonl', 'writing'])
