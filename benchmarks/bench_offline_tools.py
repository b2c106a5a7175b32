"""Throughput of the offline tools (items per second of the job itself, model loading excluded),
through the same API functions the tools call, on the VOC samples.

    python benchmarks/bench_offline_tools.py [--device cuda] [--batch-size 4] [--full-size]
        [--model DIR] [--synth-steps 5] [--threads 1]

Default model: the tiny random-weights SD 2.1-base built from ../shared/data/sd_configs (same
topology, tiny channels); ``--full-size`` builds the real-size architecture with random weights
(several GB, minutes to build); ``--model`` takes a real diffusers folder. Tiny models have 1-4
heads per layer, so iSeg reads all heads (the released SD 2.1 head lists need the real model).
Appends rows to ``benchmarks/results/offline_tools.md``.
"""
import argparse
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mmdiffseg  # noqa: E402,F401
from mmdiffseg.apis.eval_labels import evaluate_labels  # noqa: E402
from mmdiffseg.apis.pseudo_label import (images_from_folder, labels_from_ground_truth,  # noqa: E402
                                         pseudo_label)
from mmdiffseg.apis.segment import segment  # noqa: E402
from mmdiffseg.apis.synthesize import synthesize  # noqa: E402
from mmdiffseg.datasets.class_names import resolve_classes  # noqa: E402

SHARED = REPO.parent / 'shared' / 'data'
VOC = SHARED / 'voc2012_val_samples'
RESULTS = REPO / 'benchmarks' / 'results' / 'offline_tools.md'
INTRO = """# Offline tools: throughput

Items per second of the job itself (reading, engine pass, generator, encoding and atomic writes of
PNG/JPEG, manifest appends with fsync); model loading and process start-up excluded. Inputs: the
10 VOC samples (513x513, worked on at 512x512). Written by `python benchmarks/bench_offline_tools.py`
(`--device cuda` on a GPU, `--full-size` for the real-size architecture with random weights).
"tiny" = random-weights SD 2.1-base with the real topology and tiny channels: its figures measure
the tools' overhead and attention work at full token counts (4096 tokens at 64x64), not a real
U-Net's cost. On a shared CPU the absolute figures move with the load.

| tool | generator / settings | model | device | batch | items | seconds | items/s | date |
|---|---|---|---|---|---|---|---|---|
"""


def tiny_options(full_size):
    return {} if full_size else dict(cross_heads=None, self_heads=[0])


def row(tool, settings, model_name, device, batch, summary):
    rate = summary.made / summary.seconds if summary.seconds else float('nan')
    return (f'| {tool} | {settings} | {model_name} | {device} | {batch} | {summary.made} | '
            f'{summary.seconds:.1f} | {rate:.3f} | {datetime.date.today()} |')


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=int, default=4)
    parser.add_argument('--full-size', action='store_true')
    parser.add_argument('--model', default=None, help='a real diffusers SD 2.1-base folder')
    parser.add_argument('--methods', default='iseg,diffseg', help='pseudo_label generators')
    parser.add_argument('--synth-model', default=None, help='a real SD 1.4 folder for synthesize')
    parser.add_argument('--synth-steps', type=int, default=5)
    parser.add_argument('--synth-items', type=int, default=2)
    parser.add_argument('--pamr-iter', type=int, default=100)
    parser.add_argument('--threads', type=int, default=1)
    parser.add_argument('--images', type=int, default=10, help='VOC samples to label (max 10)')
    parser.add_argument('--tools', default='pseudo_label,segment,synthesize,eval_labels')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from mmdiffseg.attention.testing import build_tiny_pipeline_folder

    work = Path(tempfile.mkdtemp(prefix='bench-offline-'))
    real = args.model is not None
    model = args.model or str(build_tiny_pipeline_folder(
        SHARED / 'sd_configs' / 'stable-diffusion-2-1-base', work / 'model',
        full_size=args.full_size))
    synth_model = args.synth_model or (model if not real else None)
    model_name = 'real weights' if real else ('full-size random' if args.full_size else 'tiny')
    device = args.device if args.device != 'cpu' else f'cpu ({args.threads} thread)'
    dtype = 'float16' if args.device.startswith('cuda') else 'float32'
    tools = args.tools.split(',')
    classes = resolve_classes('voc')
    items = images_from_folder(VOC / 'JPEGImages')[:args.images]
    labels = labels_from_ground_truth(
        {it.id: VOC / 'SegmentationClass' / f'{it.id}.png' for it in items}, classes)
    rows = []
    common = dict(batch_size=args.batch_size, device=args.device, dtype=dtype)
    opts = tiny_options(args.full_size or real)
    iseg = 'iSeg WSSS VOC' + (', all heads' if opts else '')
    try:
        if 'pseudo_label' in tools:
            if 'iseg' in args.methods:
                s = pseudo_label(items, work / 'pl_iseg', model, dict(type='ISeg', **opts),
                                 classes, labels, **common)
                rows.append(row('pseudo_label', iseg, model_name, device, args.batch_size, s))
            if 'diffseg' in args.methods:
                s = pseudo_label(items, work / 'pl_diffseg', model, dict(type='DiffSeg'), None,
                                 None, **common)
                rows.append(row('pseudo_label', 'DiffSeg unlabelled (defaults)', model_name,
                                device, args.batch_size, s))
        if 'segment' in tools:
            s = segment(items, work / 'segment', model, dict(type='ISeg', **opts),
                        ['aeroplane', 'person', 'sheep'], **common)
            rows.append(row('segment', f'{iseg} + overlays', model_name, device, args.batch_size,
                            s))
        if 'synthesize' in tools and synth_model:
            cfg = dict(type='SeeDiff', steps=args.synth_steps, pamr_iter=args.pamr_iter)
            s = synthesize(['cat', 'dog'], work / 'synth', synth_model, cfg,
                           images_per_class=max(1, args.synth_items // 2), **common)
            rows.append(row('synthesize', f'SeeDiff, {args.synth_steps} steps, PAMR '
                                          f'{args.pamr_iter} iters', model_name, device,
                            args.batch_size, s))
        if 'eval_labels' in tools:
            import time
            start = time.time()
            report = evaluate_labels(VOC / 'SegmentationClass', VOC / 'SegmentationClass', classes)
            seconds = time.time() - start
            rows.append(f'| eval_labels | GT vs GT | - | cpu | - | {report["images"]} | '
                        f'{seconds:.1f} | {report["images"] / seconds:.3f} | '
                        f'{datetime.date.today()} |')
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = RESULTS.read_text() if RESULTS.is_file() else INTRO
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text.rstrip('\n') + '\n' + '\n'.join(rows) + '\n')
    print('\n'.join(rows))


if __name__ == '__main__':
    main()
