"""Host/device synchronisations, kernel launches and the bytes those kernels move in each
generator's post-processing, counted on the CPU (:mod:`op_counts`) as a proxy of what the same code
costs on a GPU, where every sync stalls the launch queue, every launch costs a few microseconds and
memory-bound kernels take their time from the bytes they move.

Inputs: attention built from VOC ground truth (``mmdiffseg.generators.testing``), the ten VOC
samples cycled to the batch size. Rows: DiffSeg in both merge precisions (unlabelled, and labelled
in the default precision), iSeg's WSSS VOC preset in both k-means precisions; per batch size, the
syncs by reason and the launches, in total and per image. A sync count that does not grow with
the batch is the point: a GPU then waits a fixed number of times per batch, not per image.

iSeg's float16 k-means sums its centres in a CPU's order (``ordered_sums``): on CUDA with Triton
installed by two kernels per call, elsewhere by ~300 batched operators. The rows count the
operators (Triton kernels run here only under its interpreter, far too slowly for whole batches);
an extra row, marked *derived*, replaces each call's counted launches with the Triton backend's,
counted on one call in a child process under ``TRITON_INTERPRET=1``.

    python benchmarks/bench_op_counts.py [--batch-size 1 8] [--label "this tree"]
        [--out benchmarks/results/op_counts.md]

Counts from another checkout of the package (e.g. before a change): run this script with
``PYTHONPATH=<that checkout>`` and ``--label``; the package is imported from ``PYTHONPATH`` first.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
from contextlib import contextmanager
from dataclasses import replace
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.append(str(REPO))  # after PYTHONPATH: another checkout given there wins

from op_counts import count_ops  # noqa: E402
from cli_args import positive_int  # noqa: E402
from results_table import append_section  # noqa: E402
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402

SAMPLES = shared_data_dir() / 'voc2012_val_samples' / 'SegmentationClass'
RESULTS = HERE / 'results' / 'op_counts.md'
NOISE = 0.15
#: rows of DiffSeg's first pass and iSeg's smoothing and Ent-Self replayed from CUDA graphs
#: (``diffseg_first_pass``, ``iseg_graphs``): counted on a second call, the first having recorded
GRAPH_ROW = 'CUDA graphs, replayed (counted as 1 launch each)'


def voc_batch(size: int) -> torch.Tensor:
    from mmdiffseg.generators.testing import load_label_png
    paths = sorted(SAMPLES.glob('*.png'))
    if not paths:
        sys.exit(f'bench_op_counts: no VOC samples in {SAMPLES} (the workspace\'s shared data)')
    return torch.stack([load_label_png(paths[i % len(paths)]) for i in range(size)])


def cases(batch: int):
    """(name, call, its arguments) per row."""
    from mmdiffseg.generators import DiffSeg, ISeg
    from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
    from mmdiffseg.generators.testing import attention_from_labels
    from mmdiffseg.cuda_graphs import AUTO_MAX_BYTES
    from bench_iseg import released_args  # after mmdiffseg: it puts this checkout on sys.path
    labels = voc_batch(batch)
    maps, names = attention_from_labels(labels, VOC_CLASSES, noise=NOISE)
    for precision in ('float16', 'float32'):
        yield (f'DiffSeg unlabelled, merge {precision}', DiffSeg(merge_precision=precision),
               (maps, None, None))
    graphs = batch * 4096 ** 2 * 4 <= AUTO_MAX_BYTES  # where 'auto' replays CUDA graphs on CUDA
    if graphs:
        graphed = DiffSeg()
        graphed.first_pass.graphed = lambda largest: True  # as on CUDA
        yield f'DiffSeg unlabelled, merge float16, {GRAPH_ROW}', graphed, (maps, None, None)
    yield 'DiffSeg labelled, merge float16', DiffSeg(classes=VOC_CLASSES), (maps, None, names)
    words = prompt_names(VOC_CLASSES, 'voc')  # iSeg's prompt words ('plane', 'potted plant')
    iseg_maps, _ = attention_from_labels(labels, words, noise=NOISE, self_resolutions=(64,),
                                         cross_resolutions=(32, 16))
    for key in ('self64', 'cross16', 'cross32'):
        iseg_maps.maps[f'iseg_{key}'] = iseg_maps.maps.pop(key)
    for precision in ('float16', 'float32'):
        yield (f'iSeg WSSS VOC, k-means {precision}',
               ISeg.from_preset('wsss_voc', kmeans_precision=precision), (iseg_maps, None, names))
    no_cluster = ISeg.from_preset('wsss_voc', use_cluster=False)
    yield 'iSeg WSSS VOC, cluster off', no_cluster, (iseg_maps, None, names)
    if graphs:
        for name, cluster in (('k-means float16', True), ('cluster off', False)):
            graphed = ISeg.from_preset('wsss_voc', use_cluster=cluster)
            graphed.steps.graphed = lambda self_attn: True  # as on CUDA
            yield f'iSeg WSSS VOC, {name}, {GRAPH_ROW}', graphed, (iseg_maps, None, names)
    yield ('iSeg WSSS VOC, cluster off, released formulation (image by image)',
           released_iseg(no_cluster), [released_args(one_image(iseg_maps, b), names[b:b + 1],
                                                     no_cluster) for b in range(batch)])


def released_iseg(gen):
    """The transcription of iSeg's released post-processing, one image after the other, on
    arguments laid out beforehand (``bench_iseg.released_args``), as ``bench_iseg`` times it."""
    from mmdiffseg.generators.transcriptions import iseg_postprocess

    def run(*per_image):
        return [iseg_postprocess(*args, ent=gen.ent, iters=gen.iters, use_cluster=gen.use_cluster)
                for args in per_image]
    return run


def one_image(maps, b: int):
    return replace(maps, maps={k: v[b:b + 1] for k, v in maps.maps.items()},
                   token_positions=maps.token_positions[b:b + 1], prompts=maps.prompts[b:b + 1])


TRITON_CALL = """
import sys, torch
sys.path.insert(0, {here!r})
from op_counts import count_ops
from mmdiffseg.generators.ordered_sums import cpu_order_cluster_sums
x, clusters = torch.rand(2, 300, 77), torch.randint(0, 6, (2, 300))
print(count_ops(cpu_order_cluster_sums, x, clusters, 6, backend='triton')[1].launches)
"""


def triton_sums_launches() -> int:
    """Launches of one ``cpu_order_cluster_sums`` call on the Triton backend (shape-independent)."""
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH')) if p)
    run = subprocess.run([sys.executable, '-c', TRITON_CALL.format(here=str(HERE))], env=env,
                         capture_output=True, text=True)
    if run.returncode:
        sys.exit(f'bench_op_counts: counting the Triton cluster sums failed:\n{run.stderr[-2000:]}')
    return int(run.stdout.split()[-1])


@contextmanager
def sums_calls(calls: list):
    """Records the launches counted inside each ``cpu_order_cluster_sums`` call of k-means."""
    from mmdiffseg.generators import kmeans
    original = kmeans.cpu_order_cluster_sums

    def counted(*args, **kwargs):
        out, inner = count_ops(original, *args, **kwargs)
        calls.append(inner.launches)
        return out

    kmeans.cpu_order_cluster_sums = counted
    try:
        yield
    finally:
        kmeans.cpu_order_cluster_sums = original


def row(name, label, batch, counts, launches=None):
    """A table row; ``launches`` replaces the counted ones (derived rows: their bytes are not
    known)."""
    moved = '-' if launches is not None else f'{counts.bytes / batch / 2 ** 20:.0f}'
    launches = counts.launches if launches is None else launches
    reasons = ', '.join(f'{k} {v}' for k, v in sorted(counts.syncs.items())) or '-'
    return (f'| {name} | {label} | {batch} | {counts.syncs_total} | '
            f'{counts.syncs_total / batch:.1f} | {reasons} | {launches} | '
            f'{launches / batch:.0f} | {moved} | {counts.loops} |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch-size', type=positive_int, nargs='+', default=[1, 8])
    parser.add_argument('--label', default=None, help='what the rows measure (default: the '
                        'package\'s git commit)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import mmdiffseg
    source = Path(mmdiffseg.__file__).resolve().parents[1]
    commit = subprocess.run(['git', '-C', str(source), 'rev-parse', '--short', 'HEAD'],
                            capture_output=True, text=True).stdout.strip() or 'unknown'
    label = args.label or f'commit {commit}'
    per_triton_call = triton_sums_launches()
    rows = []
    for batch in args.batch_size:
        for name, call, call_args in cases(batch):
            calls = []
            if GRAPH_ROW in name:
                count_ops(call, *call_args)  # records
                _, counts = count_ops(call, *call_args)
            else:
                with sums_calls(calls):
                    _, counts = count_ops(call, *call_args)
            # a replay's traffic is not seen: no MiB for graph rows
            rows.append(row(name, label, batch, counts,
                            counts.launches if GRAPH_ROW in name else None))
            if calls:
                launches = counts.launches - sum(calls) + per_triton_call * len(calls)
                rows.append(row(f'{name}, Triton sums on CUDA (derived: {len(calls)} calls x '
                                f'{per_triton_call} launches)', label, batch, counts, launches))
            print('\n'.join(rows[-1 - bool(calls):]), flush=True)
    append_section(
        args.out, 'Generators: host syncs and kernel launches per batch (CPU proxy)',
        __doc__.split('\n\n')[0].replace('\n', ' ') + '\n\n'
        'Syncs: reads of device data by the host (`.item()`, `.tolist()`, `.cpu()`, data-dependent '
        'output sizes: `nonzero`, boolean masks, `unique`, `bincount`) and blocking host-to-device '
        'copies. Launches: aten operators that do work, about one CUDA kernel each. MiB moved: '
        'what those operators read and write (each tensor argument and result once), the '
        'traffic a GPU\'s memory-bound kernels take their time from. Written by '
        '`python benchmarks/bench_op_counts.py`.',
        f'{datetime.date.today()}: {label}, VOC ground-truth attention (noise {NOISE}), torch '
        f'{torch.__version__}',
        ['generator', 'code', 'batch', 'syncs', 'syncs / image', 'by reason', 'launches',
         'launches / image', 'MiB moved / image', 'host loops over a tensor'], rows)


if __name__ == '__main__':
    main()
