"""DiffSeg post-processing per image at 512x512, in both merge precisions: mmdiffseg's DiffSeg vs a
direct transcription of the released formulation (``mmdiffseg.generators.transcriptions``:
google/diffseg ``aggregate_weights``, ``mask_merge``, ``generate_masks``) run in the same precision,
on the same synthetic attention built from VOC ground truth, in one run: time and agreement.

The transcription keeps the released operations: a float64 ``(64, 64, 64, 64)`` aggregate with
repeated queries; iteration 0 as the elementwise KL over ``(chunk, 4096, 4096)`` tensors (16 anchors
per chunk, as released) cast to float16 (released) or float32, compared with the threshold in that
dtype; the later iterations as a Python loop of float64 elementwise KLs; bilinear x8 and argmax.
Agreement = pixels on which the two segmentations agree once their segments are matched one to one.

    python benchmarks/bench_diffseg.py [--device cuda] [--repeats 1] [--threads 1] [--chunk 16]
        [--cases 4] [--precisions float16 float32] [--batch 16]

On CUDA each precision also runs on a batch of ``--batch`` images (default 16, the tools' batch;
0 = none; the cases cycled), its time divided by the batch, against the released code's one image
at a time; and the released float16 again with its aggregation and first merging pass run eagerly
instead of replayed from a CUDA graph (``diffseg_first_pass``).

Writes ``benchmarks/results/diffseg.md`` (rows of other devices are kept). CPU times are the
process's CPU seconds (robust to other jobs on shared cores), CUDA times wall seconds after
synchronisation.
"""
import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli_args import count, positive_int  # noqa: E402
from results_table import device_description, directed, hardware, kept_rows  # noqa: E402
from mmdiffseg.attention import AttentionMaps  # noqa: E402
from mmdiffseg.generators import DiffSeg  # noqa: E402
from mmdiffseg.generators.testing import attention_from_labels, load_label_png  # noqa: E402
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402
from mmdiffseg.generators.transcriptions import (diffseg_aggregate, diffseg_masks,  # noqa: E402
                                                 matched_agreement)

SAMPLES = shared_data_dir() / 'voc2012_val_samples' / 'SegmentationClass'
CASES = (('voc_val_582', 0.1), ('voc_val_0', 0.1), ('voc_val_582', 0.2), ('voc_val_0', 0.2))
VOC_CLASSES = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor']
RESOLUTIONS = (64, 32, 16, 8)
THRESHOLDS = (1.1, 1.1, 1.1)
PRECISIONS = {'float16': torch.float16, 'float32': torch.float32}
RESULTS = REPO / 'benchmarks' / 'results' / 'diffseg.md'
HEADER = ('| merge precision | ours s/img | released-formulation s/img | ratio | segment agreement '
          'mean / min | segments ours / released (per case) | CUDA graphs keep MiB | device | '
          'date |\n' + '|---' * 9 + '|\n')


def timed(fn, repeats, device):
    fn()
    cuda = device.startswith('cuda')
    clock = time.perf_counter if cuda else time.process_time
    if cuda:
        torch.cuda.synchronize()
    start = clock()
    for _ in range(repeats):
        out = fn()
    if cuda:
        torch.cuda.synchronize()
    return (clock() - start) / repeats, out


def batch_of(maps, size: int) -> AttentionMaps:
    """``size`` one-image ``AttentionMaps`` cycled from ``maps``, as one batch."""
    picks = [maps[i % len(maps)] for i in range(size)]
    return AttentionMaps({k: torch.cat([m[k] for m in picks]) for k in picks[0].maps},
                         prompts=[p for m in picks for p in m.prompts],
                         token_positions=[t for m in picks for t in m.token_positions],
                         image_size=picks[0].image_size)


def graph_memory(steps, device) -> str:
    """The ``CUDA graphs keep MiB`` cell: on CUDA the input buffers of ``steps``' graphs
    (:class:`mmdiffseg.cuda_graphs.GraphedSteps`) and every private graph memory pool of the
    process (the caller keeps one graphed generator alive); ``'-'`` elsewhere or without graphs
    (a cell of its own: the setting cell keys the row, :func:`results_table.kept_rows`)."""
    if not device.startswith('cuda') or not steps.buffer_bytes():
        return '-'
    pools = sum(s['total_size'] for s in torch.cuda.memory_snapshot()
                if tuple(s.get('segment_pool_id', (0, 0))) != (0, 0))
    return f'{(steps.buffer_bytes() + pools) / 2 ** 20:.0f}'


def save(args, device, workload, rows) -> None:
    """Writes the table with ``rows`` so far (each row as it is made: a run cut short keeps
    them); a run of fewer cases (``workload``) replaces no row of all of them."""
    kept = kept_rows(args.out, '| float', hardware(device, args.threads), workload, rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    described = ', '.join(f'{n} at noise {s}' for n, s in CASES)
    args.out.write_text(
        '# DiffSeg post-processing per image (512x512 output), both merge precisions\n\n'
        'Attention maps -> segment ids only (no U-Net). Inputs: synthetic self-attention at '
        f'64/32/16/8 (`attention_from_labels`, seed 0) for the first cases (the date column '
        f'says how many) of {described}; tau 1.1 x3, refinement '
        'off. '
        '"ours" = `DiffSeg(merge_precision=...)` (KL as two matrix products; float16: the released '
        'first pass, anchors and pixels whose maps have a float16 zero dropped; float32: guarded '
        'logs); "released formulation" = `mmdiffseg.generators.transcriptions.diffseg_masks`, a '
        'transcription of google/diffseg (float64 aggregate, elementwise KL over '
        f'{args.chunk} x 4096 x 4096 chunks in the row\'s precision, Python merge loops). '
        '"segment agreement" = pixels on which both agree once segments are matched one to one '
        '(Hungarian), mean / min over the cases; "segments" lists the segment counts per case in '
        'the order above. "ratio" = released-formulation time / ours (a speed-up: above 1x ours '
        'is faster). Mean of the repeats (date column) after one warm-up; CPU: process CPU '
        'seconds, CUDA: wall seconds. Written by `python benchmarks/bench_diffseg.py` '
        '(`--device cuda` for a GPU).\n\n' + HEADER + '\n'.join(kept + rows) + '\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=positive_int, default=1)
    parser.add_argument('--threads', type=positive_int, default=1, help='torch CPU threads')
    parser.add_argument('--chunk', type=positive_int, default=16,
                        help='anchors per released KL chunk')
    parser.add_argument('--cases', type=positive_int, default=len(CASES),
                        help=f'the first N of the {len(CASES)} cases (a smoke run: 1)')
    parser.add_argument('--precisions', nargs='+', choices=list(PRECISIONS),
                        default=list(PRECISIONS), help='merge precisions to run')
    parser.add_argument('--out', type=Path, default=RESULTS)
    parser.add_argument('--batch', type=count, default=None,
                        help='images per call of a batched row (default 16 on CUDA, 0 on CPU)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    label = device_description(device, args.threads)
    cases = CASES[:args.cases]
    workload = f'({len(cases)} case(s)'  # a run of fewer cases replaces no row of all of them
    run = f'{datetime.date.today()} {workload}, {args.repeats} repeat(s))'
    inputs = []
    for name, noise in cases:
        gt = load_label_png(SAMPLES / f'{name}.png')[None]
        maps, _ = attention_from_labels(gt, VOC_CLASSES, noise=noise, seed=0,
                                        self_resolutions=RESOLUTIONS, cross_resolutions=())
        inputs.append(maps.to(device))
    rows = []
    for precision in args.precisions:
        kl_dtype = PRECISIONS[precision]
        # on CUDA the released default also without CUDA graphs: the first pass's fallback
        backends = ['auto'] + ['torch'] * (precision == 'float16' and device.startswith('cuda'))
        ref_t, refs = [], []
        for backend in backends:
            generator = DiffSeg(kl_thresholds=THRESHOLDS, output_size=(512, 512),
                                merge_precision=precision, postprocess_backend=backend)
            generator = generator.to(device)
            ours_t, agree, counts = [], [], []
            for i, ((name, noise), maps) in enumerate(zip(cases, inputs)):
                t_ours, ours = timed(lambda: generator(maps, None, None)[0], args.repeats, device)
                if i == len(refs):  # the released code, timed once per case
                    t_ref, ref = timed(lambda: diffseg_masks(
                        diffseg_aggregate([maps[f'self{r}'][0] for r in RESOLUTIONS]), THRESHOLDS,
                        kl_dtype, chunk=args.chunk), args.repeats, device)
                    ref_t.append(t_ref)
                    refs.append(ref)
                ours_t.append(t_ours)
                agree.append(matched_agreement(ours, refs[i]))
                counts.append(f'{len(ours.unique())}/{len(refs[i].unique())}')
                print(f'{precision} {backend} {name} noise {noise}: ours {t_ours:.3f} s, released '
                      f'{ref_t[i]:.3f} s, segments {counts[-1]}, agreement '
                      f'{100 * agree[-1]:.2f}%', flush=True)
            method = precision + (' (released, default)' if precision == 'float16' else '') + \
                (', eager first pass (no CUDA graph)' if backend == 'torch' else '')
            kept = graph_memory(generator.first_pass, device) if backend != 'torch' else '-'
            rows.append(f'| {method} | {np.mean(ours_t):.3f} | {np.mean(ref_t):.3f} | '
                        f'{directed(np.mean(ref_t) / np.mean(ours_t), 1, up=False)}x | '
                        f'{100 * np.mean(agree):.2f}% / '
                        f'{100 * min(agree):.2f}% | {", ".join(counts)} | {kept} | {label} | '
                        f'{run} |')
            print(rows[-1], flush=True)
            save(args, device, workload, rows)
        generator = DiffSeg(kl_thresholds=THRESHOLDS, output_size=(512, 512),
                            merge_precision=precision).to(device)
        batch = args.batch if args.batch is not None else 16 * (torch.device(device).type == 'cuda')
        if batch:  # the tools' batch, against the released code's one image at a time
            batched = batch_of(inputs, batch)
            t_ours, ours = timed(lambda: generator(batched, None, None), args.repeats, device)
            agree = [matched_agreement(o, refs[i % len(refs)]) for i, o in enumerate(ours)]
            rows.append(f'| {precision}, batch of {batch}, per image | {t_ours / batch:.3f} | '
                        f'{np.mean(ref_t):.3f} | '
                        f'{directed(np.mean(ref_t) * batch / t_ours, 1, up=False)}x | '
                        f'{100 * np.mean(agree):.2f}% / {100 * min(agree):.2f}% | - | - | '
                        f'{label} | {run} |')
            print(rows[-1], flush=True)
            save(args, device, workload, rows)


if __name__ == '__main__':
    main()
