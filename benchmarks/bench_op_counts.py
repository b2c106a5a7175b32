"""Host/device synchronisations and kernel launches of each generator's post-processing, counted on
the CPU (:mod:`op_counts`) as a proxy of what the same code costs on a GPU, where every sync
stalls the launch queue and every launch costs a few microseconds.

Inputs: attention built from VOC ground truth (``mmdiffseg.generators.testing``), the ten VOC
samples cycled to the batch size. Rows: DiffSeg in both merge precisions (unlabelled, and labelled
in the default precision), iSeg's WSSS VOC preset in both k-means precisions; per batch size, the
syncs by reason and the launches, in total and per image. A sync count that does not grow with
the batch is the point: a GPU then waits a fixed number of times per batch, not per image.

    python benchmarks/bench_op_counts.py [--batch-size 1 8] [--label "this tree"]
        [--out benchmarks/results/op_counts.md]

Counts from another checkout of the package (e.g. before a change): run this script with
``PYTHONPATH=<that checkout>`` and ``--label``; the package is imported from ``PYTHONPATH`` first.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.append(str(REPO))  # after PYTHONPATH: another checkout given there wins

from op_counts import count_ops  # noqa: E402

SAMPLES = REPO.parent / 'shared' / 'data' / 'voc2012_val_samples' / 'SegmentationClass'
RESULTS = HERE / 'results' / 'op_counts.md'
NOISE = 0.15


def voc_batch(size: int) -> torch.Tensor:
    from mmdiffseg.generators.testing import load_label_png
    paths = sorted(SAMPLES.glob('*.png'))
    if not paths:
        sys.exit(f'bench_op_counts: no VOC samples in {SAMPLES} (the workspace\'s shared data)')
    return torch.stack([load_label_png(paths[i % len(paths)]) for i in range(size)])


def cases(batch: int):
    """(name, generator, maps, class names) per row."""
    from mmdiffseg.generators import DiffSeg, ISeg
    from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
    from mmdiffseg.generators.testing import attention_from_labels
    labels = voc_batch(batch)
    maps, names = attention_from_labels(labels, VOC_CLASSES, noise=NOISE)
    for precision in ('float16', 'float32'):
        yield (f'DiffSeg unlabelled, merge {precision}', DiffSeg(merge_precision=precision), maps,
               None)
    yield 'DiffSeg labelled, merge float16', DiffSeg(classes=VOC_CLASSES), maps, names
    words = prompt_names(VOC_CLASSES, 'voc')  # iSeg's prompt words ('plane', 'potted plant')
    iseg_maps, _ = attention_from_labels(labels, words, noise=NOISE, self_resolutions=(64,),
                                         cross_resolutions=(32, 16))
    for key in ('self64', 'cross16', 'cross32'):
        iseg_maps.maps[f'iseg_{key}'] = iseg_maps.maps.pop(key)
    for precision in ('float16', 'float32'):
        yield (f'iSeg WSSS VOC, k-means {precision}',
               ISeg.from_preset('wsss_voc', kmeans_precision=precision), iseg_maps, names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--batch-size', type=int, nargs='+', default=[1, 8])
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
    rows = []
    for batch in args.batch_size:
        for name, generator, maps, names in cases(batch):
            _, counts = count_ops(generator, maps, None, names)
            reasons = ', '.join(f'{k} {v}' for k, v in sorted(counts.syncs.items())) or '-'
            rows.append(f'| {name} | {label} | {batch} | {counts.syncs_total} | '
                        f'{counts.syncs_total / batch:.1f} | {reasons} | {counts.launches} | '
                        f'{counts.launches / batch:.0f} | {counts.loops} |')
            print(rows[-1], flush=True)
    new = not args.out.exists()
    with open(args.out, 'a') as f:
        if new:
            f.write('# Generators: host syncs and kernel launches per batch (CPU proxy)\n\n'
                    + __doc__.split('\n\n')[0].replace('\n', ' ') + '\n\n'
                    'Syncs: reads of device data by the host (`.item()`, `.tolist()`, `.cpu()`, '
                    'data-dependent output sizes: `nonzero`, boolean masks, `unique`, '
                    '`bincount`) and blocking host-to-device copies. Launches: aten operators '
                    'that do work, about one CUDA kernel each. Written by '
                    '`python benchmarks/bench_op_counts.py`.\n')
        f.write(f'\n### {datetime.date.today()}: {label}, VOC ground-truth attention '
                f'(noise {NOISE}), torch {torch.__version__}\n\n'
                '| generator | code | batch | syncs | syncs / image | by reason | launches '
                '| launches / image | host loops over a tensor |\n'
                '|---|---|---|---|---|---|---|---|---|\n')
        f.write('\n'.join(rows) + '\n')
    print(f'appended to {args.out}')


if __name__ == '__main__':
    main()
