"""run_job with loader and writer processes: the output does not depend on --workers, corrupt
inputs are named and counted from a worker process, finished batches are never read, kill -9
leaves complete files and no process behind (Ctrl-C: test_io.py)."""
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdiffseg.apis.folders import palette_for
from mmdiffseg.apis.io import ItemOutput, WorkItem
from mmdiffseg.apis.manifest import Manifest
from mmdiffseg.apis.jobs import run_job
from mmdiffseg.apis.pseudo_label import label_outputs, read_work_image, stack_work_images
from sample_data import REPO, shared_path

HEADER = dict(tool='test')
PALETTE = palette_for(['background', 'bright', 'red'])


def threshold_labels(batch, loaded):
    """A deterministic stand-in for the GPU work: 1 where the working image is bright, 2 where
    it is red, at each image's own size (nearest)."""
    images, sizes = loaded
    labels = []
    for image, (h, w) in zip(images.numpy(), sizes):
        small = np.where(image.mean(0) > 128, 1, np.where(image[0] > image[1] + 40, 2, 0))
        rows = np.arange(h) * small.shape[0] // h
        cols = np.arange(w) * small.shape[1] // w
        labels.append(small[rows][:, cols].astype(np.uint8))
    return labels


def label_job(items, out, workers, batch_size=3, pause=0.0):
    def compute(batch, loaded):
        time.sleep(pause)
        return label_outputs(batch, threshold_labels(batch, loaded), None, PALETTE, out)
    return run_job(items, partial(read_work_image, size=32), compute, out, HEADER,
                   batch_size=batch_size, workers=workers, collate=stack_work_images,
                   split_file='ids.txt')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    """Seven VOC samples as JPEGs of different sizes and one truncated file, in the middle."""
    src = shared_path('voc2012_val_samples', 'JPEGImages')
    folder = tmp_path_factory.mktemp('images')
    for i, path in enumerate(sorted(src.glob('*.png'))[:7]):
        rgb = Image.open(path).convert('RGB')
        rgb.resize((200 + 20 * i, 150 + 10 * i)).save(folder / f'img{i}.jpg', quality=90)
    (folder / 'img3b.jpg').write_bytes((folder / 'img3.jpg').read_bytes()[:400])
    return [WorkItem(p.stem, dict(image=str(p)), source=str(p))
            for p in sorted(folder.glob('*.jpg'))]


def folder_bytes(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def test_the_output_does_not_depend_on_the_number_of_workers(images, tmp_path):
    outputs = {}
    for workers in (0, 1, 3):
        summary = label_job(images, tmp_path / str(workers), workers)
        assert (summary.made, [f[0] for f in summary.failed]) == (7, ['img3b'])
        assert 'truncated' in summary.failed[0][1].lower() and 'img3b.jpg' in summary.failed[0][1]
        outputs[workers] = folder_bytes(tmp_path / str(workers))
    assert outputs[0] == outputs[1] == outputs[3]  # every PNG, the manifest, the split file
    files = outputs[0]
    assert sorted(files) == sorted(['ids.txt', 'manifest.jsonl'] + [
        f'SegmentationClass/img{i}.png' for i in range(7)])
    label = np.array(Image.open(tmp_path / '0/SegmentationClass/img5.png'))
    assert label.shape == (200, 300) and set(np.unique(label)) <= {0, 1, 2}
    assert len(np.unique(label)) > 1  # real content, not an empty map
    records = [json.loads(line) for line in files['manifest.jsonl'].decode().splitlines()[1:]]
    assert [r['id'] for r in records] == [f'img{i}' for i in range(7)]  # in item order
    # each source's fingerprint, taken where it was read (a loader process, with workers)
    image = Path(next(it.source for it in images if it.id == 'img5'))
    assert records[5]['source'] == dict(size=image.stat().st_size,
                                        mtime_ns=image.stat().st_mtime_ns,
                                        sha1=hashlib.sha1(image.read_bytes()).hexdigest(),
                                        path=os.path.abspath(image))
    assert not [p for p in Path(tmp_path).rglob('*.tmp')]


def test_finished_batches_are_never_read_and_no_worker_outlives_the_job(images, tmp_path,
                                                                      monkeypatch):
    import multiprocessing
    reads = tmp_path / 'reads'
    reads.mkdir()

    def load(item):  # runs in a loader process: leaves a trace per read
        (reads / f'{item.id}.{os.getpid()}').touch()
        return read_work_image(item, size=32)

    def compute(batch, loaded):
        return label_outputs(batch, threshold_labels(batch, loaded), None, PALETTE, tmp_path)

    def job():
        return run_job(images, load, compute, tmp_path / 'out', HEADER, batch_size=3,
                       workers=2, collate=stack_work_images)

    others = set(multiprocessing.active_children())  # another test's, on this pytest worker
    job()
    assert {p.name.split('.')[1] for p in reads.iterdir()} - {str(os.getpid())}  # in workers
    assert not set(multiprocessing.active_children()) - others
    (tmp_path / 'out/SegmentationClass/img4.png').unlink()  # batch 2: img3, img3b, img4
    for p in reads.iterdir():
        p.unlink()
    summary = job()
    assert sorted({p.name.split('.')[0] for p in reads.iterdir()}) == ['img3', 'img3b', 'img4']
    assert (summary.made, summary.already_done, len(summary.failed)) == (1, 6, 1)
    assert not set(multiprocessing.active_children()) - others
    # a rerun checks the finished items' sources by their size and time: none is read to be
    # hashed (the loader processes, forked, hash only the batch they read)
    from mmdiffseg.apis import job_plan
    hashed, sha1 = [], job_plan._sha1
    monkeypatch.setattr(job_plan, '_sha1', lambda path: hashed.append(path) or sha1(path))
    summary = job()
    assert (summary.made, summary.already_done, hashed) == (0, 7, [])


KILLABLE_JOB = '''
import sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from apis.test_jobs import WorkItem, label_job
items = [WorkItem(p.stem, dict(image=str(p)), source=str(p))
         for p in sorted(Path(sys.argv[1]).glob('*.jpg'))]
label_job(items, sys.argv[2], int(sys.argv[3]), batch_size=2, pause=0.4)
'''


def job_command(images, out, workers):
    """The label job of ``images`` in a process of its own (0.4 s of "GPU work" per batch of
    2, so that a kill can land in every phase)."""
    script = KILLABLE_JOB.format(tests=str(REPO / 'tests'))
    return [sys.executable, '-c', script, str(Path(images[0].payload['image']).parent),
            str(out), str(workers)]


def dead(pid: int) -> bool:
    try:
        state = Path(f'/proc/{pid}/stat').read_text().split(') ')[1][0]
    except (FileNotFoundError, IndexError):
        return True
    return state in 'ZX'


def children_of(pid: int):
    found = []
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            fields = stat.read_text().split(') ')[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_kill_9_at_any_instant_then_rerun_equals_an_uninterrupted_run(images, tmp_path):
    reference, out = tmp_path / 'reference', tmp_path / 'out'
    label_job(images, reference, 2, batch_size=2)
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    rng, killed = random.Random(3), []
    for _ in range(2):
        proc = subprocess.Popen(job_command(images, out, 2), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120  # until its 2 loaders and 2 writers run (a loaded machine
        while (time.time() < deadline and proc.poll() is None  # starts them slowly)
               and len(children_of(proc.pid)) < 4):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.1, 1.2))
        workers = children_of(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and not all(dead(pid) for pid in workers):
            time.sleep(0.05)
        assert all(dead(pid) for pid in workers)  # no loader or writer outlives a kill -9
        killed.append((len(workers), len(Manifest(out, HEADER).load())))
    assert killed[0][0] == 4 and killed[0][1] < 7, killed  # the first kill hit a running job
    summary = label_job(images, out, 3, batch_size=2)  # the rerun, with other worker counts
    assert summary.made + summary.already_done == 7
    files, expected = folder_bytes(out), folder_bytes(reference)
    assert {k: v for k, v in files.items() if k != 'manifest.jsonl'} == \
        {k: v for k, v in expected.items() if k != 'manifest.jsonl'}
    assert Manifest(out, HEADER).load() == Manifest(reference, HEADER).load()


def test_the_workers_option_in_the_tools(monkeypatch):
    from tool_modules import load_tool
    from mmdiffseg.apis.jobs import default_workers
    tool = load_tool('pseudo_label')
    assert tool.parse_args(['images', '--out', 'o', '--device', 'cpu']).workers is None
    assert tool.parse_args(['images', '--out', 'o', '--device', 'cpu',
                            '--workers', '0']).workers == 0
    with pytest.raises(SystemExit):
        tool.parse_args(['images', '--out', 'o', '--workers', '-1'])
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: set(range(32)))
    assert default_workers() == 8
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '8')
    assert default_workers() == 4  # 32 CPUs shared by 8 ranks on this node
    monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0})
    assert default_workers() == 1


def test_a_write_error_in_a_writer_process_stops_the_job(tmp_path):
    from mmdiffseg.apis.io import OutputWriteError
    (tmp_path / 'blocked').mkdir()
    items = [WorkItem(f'item{i}') for i in range(6)]

    def compute(batch, loaded):  # item2's file would replace a folder: the write fails
        return [ItemOutput({('blocked' if it.id == 'item2' else f'{it.id}.txt'): b'x'})
                for it in batch]

    with pytest.raises(OutputWriteError, match='blocked'):
        run_job(items, None, compute, tmp_path, HEADER, batch_size=2, workers=2)
    records = Manifest(tmp_path, HEADER).load()
    assert 'item2' not in records and {'item0', 'item1', 'item3'} <= set(records)
    assert all((tmp_path / f'{i}.txt').is_file() for i in records)


def test_labels_that_come_out_all_unsure_are_counted_and_named(images, tmp_path):
    """A label with no labelled pixel (255 everywhere: no seed, no proposal) is written and
    recorded like any other, but the summary counts and names it; every record holds its
    labelled share (one labelled pixel: 0.0001, never 0)."""
    out = tmp_path / 'out'
    readable = [it for it in images if it.id != 'img3b']

    def compute(batch, loaded):
        labels = threshold_labels(batch, loaded)
        for it, label in zip(batch, labels):
            if it.id in ('img1', 'img2', 'img4'):
                label[:] = 255
            if it.id == 'img2':
                label[0, 0] = 1
        return label_outputs(batch, labels, None, PALETTE, out)
    summary = run_job(readable, partial(read_work_image, size=32), compute, out, HEADER,
                      batch_size=3, workers=0, collate=stack_work_images)
    assert summary.unlabelled == ['img1', 'img4']
    assert summary.line().endswith('; 2 of the labels made all unsure (255)')
    assert summary.details() == ['all unsure (255): img1, img4 (the manifest records each '
                                 'label\'s labelled share as "labelled")']
    records = [json.loads(line) for line in (out / 'manifest.jsonl').read_text().splitlines()]
    shares = {r['id']: r['labelled'] for r in records[1:]}
    assert shares['img1'] == shares['img4'] == 0.0 and shares['img2'] == 0.0001
    for item_id in ('img0', 'img5'):
        label = np.array(Image.open(out / 'SegmentationClass' / f'{item_id}.png'))
        assert shares[item_id] == 1.0 and (label != 255).all()


def test_a_summary_names_the_first_twenty_failures_and_unsure_labels_of_all_ranks():
    """Each failure is logged when it happens; the recap after the summary line names at most
    20 of each kind, so that a job with thousands of bad inputs does not log them twice."""
    from mmdiffseg.apis.progress import JobSummary, total_summary
    ranks = [JobSummary(made=15, unlabelled=[f'a{i}' for i in range(15)],
                        failed=[(f'x{i}', 'truncated') for i in range(3)]),
             JobSummary(made=10, unlabelled=[f'b{i}' for i in range(10)],
                        failed=[(f'y{i}', 'unreadable') for i in range(19)])]
    total = total_summary(ranks)
    assert total.unlabelled == [f'a{i}' for i in range(15)] + [f'b{i}' for i in range(10)]
    *failed, more, unsure = total.details()
    assert failed == [f'failed: x{i}: truncated' for i in range(3)] + \
        [f'failed: y{i}: unreadable' for i in range(17)]
    assert more == 'failed: 2 more (each named in the log above)'
    assert unsure.startswith('all unsure (255): a0, a1, ') and ', b4 and 5 more (' in unsure
    assert JobSummary(failed=[('x', 'truncated')]).details() == ['failed: x: truncated']
