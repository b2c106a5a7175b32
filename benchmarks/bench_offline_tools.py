"""Throughput of the offline tools (items per second of the job itself, model loading excluded),
through the same API functions the tools call, on the VOC samples; and, before each
pseudo_label row, the in-process rate of the same GPU work at the same batch size
(``label_images`` on batches read before timing: engine + generator + labels back on the host),
so the tool's row shows the share of it the tool keeps (goal: >= 90%).

    python benchmarks/bench_offline_tools.py [--device cuda] [--batch-size 4] [--full-size]
        [--model DIR] [--synth-steps 5] [--threads 1] [--images N] [--workers N]

Default model: the tiny random-weights SD 2.1-base built from ../shared/data/sd_configs (same
topology, tiny channels); ``--full-size`` builds the real-size architecture with random weights
(several GB, minutes to build); ``--model`` takes a real diffusers folder. Tiny models have 1-4
heads per layer, so iSeg reads all heads (the released SD 2.1 head lists need the real model).
Images: JPEG copies (quality 90) of the 10 VOC samples, cycled to ``--images`` (default 64 on
CUDA, 10 on the CPU). The tool runs after the in-process measurement in the same process, so
both see a warm CUDA context. Appends rows to ``benchmarks/results/offline_tools.md``.
"""
import argparse
import datetime
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import mmdiffseg  # noqa: E402,F401
from bench_tool_host import prepare_inputs  # noqa: E402
from results_table import device_description, directed  # noqa: E402
from cli_args import comma_names, count, positive_int  # noqa: E402
from mmdiffseg.apis.builders import build_generator, load_engine  # noqa: E402
from mmdiffseg.apis.eval_labels import evaluate_labels  # noqa: E402
from mmdiffseg.apis.io import WorkItem  # noqa: E402
from mmdiffseg.apis.pseudo_label import (labels_from_ground_truth, pseudo_label,  # noqa: E402
                                         read_work_image, stack_work_images)
from mmdiffseg.apis.segment import segment  # noqa: E402
from mmdiffseg.apis.synthesize import synthesize  # noqa: E402
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402
from mmdiffseg.datasets.class_names import resolve_classes  # noqa: E402
from mmdiffseg.models.online_labeler import label_images  # noqa: E402

TOOLS = ('pseudo_label', 'segment', 'synthesize', 'eval_labels')
METHODS = ('iseg', 'diffseg')
SHARED = shared_data_dir()
VOC = SHARED / 'voc2012_val_samples'
RESULTS = REPO / 'benchmarks' / 'results' / 'offline_tools.md'
INTRO = """# Offline tools: throughput

Items per second of the job itself (reading, engine pass, generator, encoding and atomic writes of
PNG/JPEG, manifest appends with fsync); model loading and process start-up excluded. Inputs: JPEG
copies of the 10 VOC samples (513x513, worked on at 512x512), cycled to `--images`. Written by
`python benchmarks/bench_offline_tools.py` (`--device cuda` on a GPU, `--full-size` for the
real-size architecture with random weights). An `in-process label_images` row (the tool's GPU work
alone, on batches read before timing) precedes each pseudo_label row, which shows the share of it
the tool keeps.
"tiny" = random-weights SD 2.1-base with the real topology and tiny channels: its figures measure
the tools' overhead and attention work at full token counts (4096 tokens at 64x64), not a real
U-Net's cost. On a shared CPU the absolute figures move with the load.

| tool | generator / settings | model | device | batch | items | seconds | items/s | date |
|---|---|---|---|---|---|---|---|---|
"""


def tiny_options(full_size):
    return {} if full_size else dict(cross_heads=None, self_heads=[0])


def row(tool, settings, model_name, device, batch, made, seconds):
    rate = made / seconds if seconds else float('nan')
    return (f'| {tool} | {settings} | {model_name} | {device} | {batch} | {made} | '
            f'{seconds:.1f} | {rate:.3f} | {datetime.date.today()} |')


def in_process_seconds(engine, gen_cfg, classes, labels, items, batch_size, cuda) -> float:
    """Seconds of ``label_images`` over ``items`` in batches read (and pinned on CUDA) before
    timing, after one warm-up batch: the tool's GPU work alone."""
    generator = build_generator(gen_cfg, classes).to(engine.device)
    batches = []
    for i in range(0, len(items), batch_size):
        chunk = items[i:i + batch_size]
        images, sizes = stack_work_images([read_work_image(it) for it in chunk])
        names = [labels[it.id] for it in chunk] if labels is not None else None
        batches.append((images.pin_memory() if cuda else images, names, sizes))
    label_images(engine, generator, *batches[0])
    start = time.perf_counter()
    for images, names, sizes in batches:
        label_images(engine, generator, images, names, sizes)  # labels back on the host
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--batch-size', type=positive_int, default=4)
    parser.add_argument('--full-size', action='store_true')
    parser.add_argument('--model', default=None, help='a real diffusers SD 2.1-base folder')
    parser.add_argument('--methods', type=comma_names(METHODS), default=','.join(METHODS),
                        help=f'pseudo_label generators, comma-separated: {", ".join(METHODS)}')
    parser.add_argument('--synth-model', default=None, help='a real SD 1.4 folder for synthesize')
    parser.add_argument('--synth-steps', type=positive_int, default=5)
    parser.add_argument('--synth-items', type=positive_int, default=2)
    parser.add_argument('--pamr-iter', type=count, default=100,
                        help='SeeDiff\'s PAMR iterations in synthesize (0: no PAMR)')
    parser.add_argument('--threads', type=positive_int, default=1)
    parser.add_argument('--images', type=positive_int, default=None,
                        help='images to label (default: 64 on CUDA, 10 on the CPU)')
    parser.add_argument('--workers', type=count, default=None,
                        help='the tools\' --workers')
    parser.add_argument('--tools', type=comma_names(TOOLS), default=','.join(TOOLS),
                        help=f'comma-separated: {", ".join(TOOLS)}')
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
    cuda = args.device.startswith('cuda')
    device = device_description(args.device, args.threads)
    dtype = 'float16' if cuda else 'float32'
    tools = args.tools
    classes = resolve_classes('voc')
    (work / 'images').mkdir()
    n_images = args.images if args.images is not None else 64 if cuda else 10
    paths, sources = prepare_inputs(work / 'images', n_images)
    items = [WorkItem(p.stem, dict(image=str(p))) for p in paths]
    present = labels_from_ground_truth(
        {name: VOC / 'SegmentationClass' / f'{name}.png' for name in set(sources)}, classes)
    labels = {it.id: present[src] for it, src in zip(items, sources)}
    text = RESULTS.read_text() if RESULTS.is_file() else INTRO
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text.rstrip('\n') + '\n')

    def emit(line: str) -> None:  # appended as made: a run cut short keeps its rows
        with RESULTS.open('a') as f:
            f.write(line + '\n')
        print(line, flush=True)
    common = dict(batch_size=args.batch_size, device=args.device, dtype=dtype,
                  workers=args.workers)
    opts = tiny_options(args.full_size or real)
    iseg = 'iSeg WSSS VOC' + (', all heads' if opts else '')
    try:
        if 'pseudo_label' in tools:
            runs = []
            if 'iseg' in args.methods:
                runs.append((iseg, dict(type='ISeg', **opts), classes, labels))
            if 'diffseg' in args.methods:
                runs.append(('DiffSeg unlabelled (defaults)', dict(type='DiffSeg'), None, None))
            engine = load_engine(model, args.device, dtype)
            for name, gen_cfg, label_set, image_labels in runs:
                seconds = in_process_seconds(engine, gen_cfg, label_set, image_labels, items,
                                             args.batch_size, cuda)
                emit(row('in-process label_images', name, model_name, device,
                         args.batch_size, len(items), seconds))
                s = pseudo_label(items, work / f'pl_{gen_cfg["type"]}', model, gen_cfg,
                                 label_set, image_labels, **common)
                share = (s.made / s.seconds) / (len(items) / seconds)
                emit(row('pseudo_label',
                         f'{name} ({directed(100 * share, 1, up=False)}% of in-process)',
                         model_name, device, args.batch_size, s.made, s.seconds))
            del engine
        if 'segment' in tools:
            s = segment(items, work / 'segment', model, dict(type='ISeg', **opts),
                        ['aeroplane', 'person', 'sheep'], **common)
            emit(row('segment', f'{iseg} + overlays', model_name, device, args.batch_size,
                     s.made, s.seconds))
        if 'synthesize' in tools and not synth_model:
            print('synthesize skipped: it runs on SD 1.4 (SeeDiff); give --synth-model with '
                  '--model', flush=True)
        if 'synthesize' in tools and synth_model:
            cfg = dict(type='SeeDiff', steps=args.synth_steps, pamr_iter=args.pamr_iter)
            s = synthesize(['cat', 'dog'], work / 'synth', synth_model, cfg,
                           images_per_class=max(1, args.synth_items // 2), **common)
            emit(row('synthesize', f'SeeDiff, {args.synth_steps} steps, PAMR '
                     f'{args.pamr_iter} iters', model_name, device, args.batch_size, s.made,
                     s.seconds))
        if 'eval_labels' in tools:
            start = time.time()
            report = evaluate_labels(VOC / 'SegmentationClass', VOC / 'SegmentationClass', classes)
            seconds = time.time() - start
            emit(f'| eval_labels | GT vs GT | - | {device_description("cpu", args.threads)} | - | '
                 f'{report["images"]} | {seconds:.1f} | {report["images"] / seconds:.3f} | '
                 f'{datetime.date.today()} |')
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
