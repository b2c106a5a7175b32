"""Host side of the offline tools on the CPU: images per second of ``tools/pseudo_label.py``'s
pipeline with the GPU work replaced by a constant-time stand-in, against ``--workers``.

    python benchmarks/bench_tool_host.py [--images 320] [--batch-size 16] [--workers 0 1 2 4 8]
        [--gpu-rate 70] [--gil-share 0.25] [--modes capacity waiting gil] [--fsync-ms 0]
        [--repeats 3] [--work-dir DIR] [--out benchmarks/results/tool_host.md]

Inputs: JPEG copies (quality 90) of the VOC samples (513x513) in a temporary folder, cycled to
``--images`` files. Everything but the GPU work is the tool's own code: ``read_work_image`` and
``stack_work_images`` in the loader processes, ``label_outputs`` (label PNGs encoded in the writer
processes), ``run_job`` (atomic writes with fsync, one manifest append + fsync per batch). The
stand-in replaces ``label_images``: per batch it runs pure Python holding the GIL for
``--gil-share`` of ``batch / --gpu-rate`` seconds (the kernel launches; a fixed amount of work,
calibrated alone, so contention for the GIL or a core slows it as it slows real launches) and
sleeps for the rest (the wait for the device); it returns each image's VOC ground truth at the
image's size, so PNG encoding costs what real labels cost.

The table's header names the machine and the measured latency of ``fsync`` on the output disk
(``--work-dir``: put it on the disk the tools write to); ``--fsync-ms`` adds that many
milliseconds to every ``fsync`` (a stand-in for network block storage, where it costs 5-30 ms).

Per worker count, three rows (``--modes``):

* ``capacity``: the stand-in returns at once; the most images/s the host side sustains here, and
  its CPU seconds per image (main process, and its loader + writer processes);
* ``GPU stand-in, waiting only``: the stand-in at ``--gpu-rate`` (default 70 img/s, iSeg's
  in-process rate on an H200 at batch 16: 68-69 in ``offline_tools.md``), all of it a sleep:
  does the host side keep up?
* ``GPU stand-in, 25% GIL``: the same with ``--gil-share`` of it GIL-holding Python: does the host
  side slow the launching thread? (On a machine with fewer free cores than processes this also
  measures plain competition for cores.)

``img/s (job)`` counts as the tool's summary does: from the end of ``prepare`` (in the tool, the
model load, while the loader and writer processes start; here nothing) to the last manifest line.
``img/s (steady)`` counts the images after the first batch, from the end of the first batch's GPU
work to the end of the last batch's: the rate of a dataset-scale run between the start (the first
batch read while nothing else runs) and the drain (the last batch's files written while nothing
else runs); between two ends lie one batch's GPU work and host work (before 2026-12-07 the
window ran to the end of the job: the first batch's writes fell inside it uncounted, and the
steady rate of 0 workers came out below the job's). ``tool / GPU`` = the steady rate over the
stand-in's own rate, measured alone just before each run (same machine
load); medians over ``--repeats``.

Appends a table to ``--out`` naming the hardware. The 8-core figure is an extrapolation, not a
measurement: min(8 / CPU seconds per image, 1 / main-process CPU seconds per image), i.e. the
work spread over 8 cores with the main process (GIL-bound) on one; beside it, its ratio to
``--gpu-rate`` (issue 9's target: at least 4x; ``benchmarks/targets.py`` judges it).
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from cli_args import count, positive_int
from results_table import directed, host_description

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402

VOC = shared_data_dir() / 'voc2012_val_samples'
RESULTS = REPO / 'benchmarks' / 'results' / 'tool_host.md'


def prepare_inputs(folder: Path, count: int):
    """``count`` JPEG files cycled from the VOC samples; returns (image paths, source sample of
    each) for items ``img00000``..."""
    from PIL import Image
    samples = sorted(p.stem for p in (VOC / 'JPEGImages').glob('*.png'))
    jpegs = {}
    for name in samples:
        jpegs[name] = folder / f'{name}.jpg.src'
        Image.open(VOC / 'JPEGImages' / f'{name}.png').convert('RGB').save(
            jpegs[name], format='JPEG', quality=90)
    paths, sources = [], []
    for i in range(count):
        name = samples[i % len(samples)]
        path = folder / f'img{i:05d}.jpg'
        shutil.copyfile(jpegs[name], path)
        paths.append(path)
        sources.append(name)
    return paths, sources


def calibrate_spin(seconds: float = 0.3) -> float:
    """Python loop iterations per second on this machine now."""
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        count += spin(10000)
    return count / seconds


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i & 1
    return iterations


class GpuStandIn:
    """``label_images`` replaced: ``gil_share`` of ``batch / rate`` seconds of GIL-holding Python
    (a fixed amount of work), then a sleep for the rest; labels: ground truth per item id."""

    def __init__(self, rate: float, gil_share: float, labels: Dict[str, np.ndarray],
                 spins_per_second: float):
        self.seconds_per_image = 1.0 / rate if rate else 0.0
        self.gil_share, self.labels = gil_share, labels
        self.spins_per_second = spins_per_second

    def __call__(self, batch) -> List[np.ndarray]:
        seconds = len(batch) * self.seconds_per_image
        spin(int(self.gil_share * seconds * self.spins_per_second))
        time.sleep((1 - self.gil_share) * seconds)
        return [self.labels[it.id] for it in batch]


def fsync_latency_ms(folder: Path, count: int = 20) -> float:
    """Median milliseconds of writing and fsyncing a 3 KB file in ``folder``."""
    times = []
    for i in range(count):
        start = time.perf_counter()
        with open(folder / f'fsync-probe-{i}', 'wb') as f:
            f.write(os.urandom(3000))
            f.flush()
            os.fsync(f.fileno())
        times.append(time.perf_counter() - start)
        (folder / f'fsync-probe-{i}').unlink()
    return 1e3 * statistics.median(times)


def add_fsync_latency(ms: float) -> None:
    """Slow storage stand-in: every ``os.fsync`` of this process and of the processes it forks
    takes ``ms`` milliseconds more."""
    real = os.fsync

    def fsync(fd):
        time.sleep(ms / 1e3)
        real(fd)
    os.fsync = fsync


def cpu_seconds():
    """(CPU seconds of this process, of its finished child processes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def run_tool_job(items, standin, names, palette, out_dir, batch_size, workers):
    """The pseudo_label job with ``standin`` as the GPU work: (summary, steady images/s: the
    images after the first batch over the time from the end of the first batch's GPU work to the
    end of the last's). Each image counted has its GPU work in that window, and the host work of
    one batch (load, encode, write, manifest: the writes of the batch before it) lies between
    two ends; the first batch's fill and the last batch's writes (the drain) lie outside, where
    the job's rate counts them."""
    from mmdiffseg.apis.jobs import run_job
    from mmdiffseg.apis.pseudo_label import label_outputs, read_work_image, stack_work_images
    ends = []

    def compute(batch, loaded):
        images, sizes = loaded
        labels = standin(batch)
        ends.append((time.perf_counter(), len(batch)))
        assert [lab.shape for lab in labels] == [tuple(hw) for hw in sizes]
        return label_outputs(batch, labels, [names[it.id] for it in batch], palette, out_dir)

    with open(os.devnull, 'w') as quiet:
        # as in the tool, the job's time starts once prepare (there: the model load) returns
        summary = run_job(items, read_work_image, None, out_dir, dict(tool='bench'),
                          batch_size=batch_size, workers=workers, collate=stack_work_images,
                          prepare=lambda: compute, progress_file=quiet)
    return summary, (len(items) - ends[0][1]) / (ends[-1][0] - ends[0][0])


def standin_alone(standin, items, batch_size) -> float:
    """Images/s of the stand-in by itself (no host work)."""
    start = time.perf_counter()
    for i in range(0, len(items), batch_size):
        standin(items[i:i + batch_size])
    return len(items) / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images', type=positive_int, default=320)
    parser.add_argument('--batch-size', type=positive_int, default=16)
    parser.add_argument('--workers', type=count, nargs='+', default=[0, 1, 2, 4, 8])
    parser.add_argument('--gpu-rate', type=float, default=70.0,
                        help='images/s of the GPU stand-in (iSeg in-process on an H200: 68-69)')
    parser.add_argument('--gil-share', type=float, default=0.25,
                        help="share of the stand-in's time spent in GIL-holding Python")
    parser.add_argument('--modes', nargs='+', default=['capacity', 'waiting', 'gil'],
                        choices=['capacity', 'waiting', 'gil'])
    parser.add_argument('--fsync-ms', type=float, default=0.0,
                        help='milliseconds added to every fsync (slow storage stand-in)')
    parser.add_argument('--repeats', type=positive_int, default=3,
                        help='runs per row (median reported)')
    parser.add_argument('--work-dir', type=Path, default=None,
                        help='where inputs and outputs go (default: the system temp folder)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.images <= args.batch_size:
        parser.error(f'--images {args.images} gives no batch after the first (--batch-size '
                     f'{args.batch_size}), which the steady rate counts: pass more images')
    import mmdiffseg  # noqa: F401
    from mmdiffseg.apis.folders import palette_for
    from mmdiffseg.apis.io import WorkItem
    from mmdiffseg.apis.pseudo_label import labels_from_ground_truth
    from mmdiffseg.datasets.class_names import resolve_classes
    from mmdiffseg.datasets.transforms import read_label_map

    work = Path(tempfile.mkdtemp(prefix='bench-tool-host-', dir=args.work_dir))
    fsync_ms = fsync_latency_ms(work)
    if args.fsync_ms:
        add_fsync_latency(args.fsync_ms)
    try:
        paths, sources = prepare_inputs(work, args.images)
        items = [WorkItem(p.stem, dict(image=str(p))) for p in paths]
        truth = {name: read_label_map(str(VOC / 'SegmentationClass' / f'{name}.png'))
                 for name in set(sources)}
        labels = {it.id: truth[src] for it, src in zip(items, sources)}
        classes = resolve_classes('voc')
        present = labels_from_ground_truth(
            {name: VOC / 'SegmentationClass' / f'{name}.png' for name in truth}, classes)
        names = {it.id: present[src] for it, src in zip(items, sources)}
        palette = palette_for(classes)
        spins = calibrate_spin()
        rows, load = [], os.getloadavg()[0]
        modes = dict(capacity=('capacity', 0.0, 0.0),
                     waiting=('GPU stand-in, waiting only', args.gpu_rate, 0.0),
                     gil=(f'GPU stand-in, {args.gil_share:.0%} GIL', args.gpu_rate,
                          args.gil_share))
        for mode, rate, gil_share in (modes[name] for name in args.modes):
            standin = GpuStandIn(rate, gil_share, labels, spins)
            for workers in args.workers:
                runs = []
                for repeat in range(args.repeats):
                    # the stand-in alone just before the tool: both under the same machine load
                    alone = standin_alone(standin, items, args.batch_size) if rate else None
                    out = work / f'out-{len(rows)}-{repeat}'
                    before = cpu_seconds()
                    summary, steady = run_tool_job(items, standin, names, palette, out,
                                                   args.batch_size, workers)
                    after = cpu_seconds()
                    assert summary.made == len(items), summary.line()
                    runs.append((summary.made / summary.seconds, steady,
                                 steady / alone if alone else None,
                                 (after[0] - before[0]) / len(items),
                                 (after[1] - before[1]) / len(items)))
                    shutil.rmtree(out)
                median = [statistics.median(r[k] for r in runs) if runs[0][k] is not None
                          else None for k in range(5)]
                rows.append((mode, workers, *median))
                print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_table(args, rows, host_description(), load, fsync_ms)


def write_table(args, rows, machine: str, load: float, fsync_ms: float) -> None:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    slower = f' + {args.fsync_ms:g} ms added (stand-in)' if args.fsync_ms else ''
    lines = [f'\n### {stamp}: {machine}, load average {load:.1f} at the start; fsync of 3 KB '
             f'{fsync_ms:.1f} ms{slower}; {args.images} JPEGs 513x513, batch {args.batch_size}, '
             f'stand-in {args.gpu_rate:g} img/s, median of {args.repeats}\n',
             '| mode | workers | img/s (job) | img/s (steady) | tool / GPU (steady) '
             '| CPU ms/img main | CPU ms/img workers | 8-core capacity (extrapolated) |',
             '|---|---|---|---|---|---|---|---|']
    for mode, workers, rate, steady, share, main_cpu, kids_cpu in rows:
        total = main_cpu + kids_cpu
        # 8 cores: the CPU seconds spread over 8 cores, the main process on at most one
        capacity = min(8 / total, 1 / main_cpu)
        extra = (f'{capacity:.0f} img/s ({directed(capacity / args.gpu_rate, 2, up=False)}x the '
                 'GPU rate)'
                 if mode == 'capacity' and workers else '-')
        lines.append(f'| {mode} | {workers} | {rate:.1f} | {steady:.1f} | '
                     f'{f"{share:.0%}" if share is not None else "-"} | {1e3 * main_cpu:.1f} | '
                     f'{1e3 * kids_cpu:.1f} | {extra} |')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not args.out.exists():
        args.out.write_text(f'# Offline tools: the host side\n\n{__doc__.split(chr(10) * 2)[1]}\n\n'
                            f'{__doc__.split(chr(10) * 2)[2]}\n')
    with args.out.open('a') as f:
        f.write('\n'.join(lines) + '\n')
    print('\n'.join(lines))


if __name__ == '__main__':
    main()
