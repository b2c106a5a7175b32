"""iSeg post-processing time per image at 512x512: mmdiffseg's ISeg vs a direct transcription of
the released formulation (``mmdiffseg.generators.transcriptions.iseg_postprocess``:
linsun449/iseg.code ``wsss/iSeg.py`` + ``featurecluster.DFC_KL`` + ``util/attn.kl_dis`` +
``util/cam.cam_to_label``), on the same synthetic attention built from VOC ground truth, in one run,
with the k-means distance in float16 (released) and in float32, the maps in float16 (released:
ISeg's ``map_precision``, the transcription given float16 maps, which it then processes in float16
as released) and in float32, and with cluster smoothing off. The transcription keeps the released
operations (elementwise KL over a ``(clusters, pixels, tokens)`` tensor, a Python loop over
clusters, the 4096x4096 co-membership matrix, the out-of-place Ent-Self ops).

    python benchmarks/bench_iseg.py [--device cuda] [--repeats 3] [--threads 1]

On CUDA an extra row (float32 maps, float16 distance: the centres summed in a CPU's order) sums
them with the PyTorch emulation of that order instead of the Triton kernel (``ordered_sums``): what
a GPU machine without Triton runs there; two
extra rows (float16 clustering, and none) run the k-means smoothing and Ent-Self eagerly instead of
from CUDA graphs (``iseg_graphs``); and
each default setting also runs on a batch of ``--batch`` images (default 16 on CUDA, as the tools
run it; 0 = none), its time divided by the batch, against the released code's one image at a time.

Writes ``benchmarks/results/iseg.md`` (rows of other devices are kept). CPU times are the process's
CPU seconds, CUDA times wall seconds after synchronisation.
"""
import argparse
import contextlib
import datetime
import functools
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench_diffseg import batch_of, graph_memory, timed  # noqa: E402
from cli_args import count, positive_int  # noqa: E402
from results_table import device_description, directed, hardware, kept_rows  # noqa: E402
from mmdiffseg.generators import ISeg, kmeans  # noqa: E402
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names  # noqa: E402
from mmdiffseg.generators.testing import attention_from_labels, load_label_png  # noqa: E402
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402
from mmdiffseg.generators.transcriptions import iseg_postprocess  # noqa: E402

SAMPLES = shared_data_dir() / 'voc2012_val_samples' / 'SegmentationClass'
IMAGES = ('voc_val_582', 'voc_val_0', 'voc_val_114')  # 2 classes, 1, 1
RESULTS = REPO / 'benchmarks' / 'results' / 'iseg.md'
HEADER = ('| method | ours s/img | released-formulation s/img | ratio | label agreement mean / min '
          '| CUDA graphs keep MiB | device | date |\n' + '|---' * 8 + '|\n')


# -- the run -------------------------------------------------------------------------------------
def build_inputs(device):
    words = prompt_names(VOC_CLASSES, 'voc')
    inputs = []
    for name in IMAGES:
        gt = load_label_png(SAMPLES / f'{name}.png')[None]
        maps, found = attention_from_labels(gt, words, noise=0.15, self_resolutions=(64,),
                                            cross_resolutions=(32, 16), seed=0)
        for key in ('self64', 'cross16', 'cross32'):
            maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
        names = [[VOC_CLASSES[words.index(w)] for w in ws] for ws in found]
        inputs.append((maps.to(device), names))
    return inputs


def released_args(maps, names, gen):
    """The same maps in the released layouts, and the released token selection."""
    cross = {r: maps[f'iseg_cross{r}'].transpose(1, 2).reshape(1, -1, r, r) for r in (16, 32)}
    positions = maps.token_positions[0]
    token_sel = []
    for name in sorted(names[0], key=VOC_CLASSES.index):
        word = gen.prompt_word(name)
        idx = positions[word]
        token_sel.append([idx[o] for o in gen.token_offsets.get(word, range(len(idx)))])
    return cross[16], cross[32], maps['iseg_self64'], token_sel


@contextlib.contextmanager
def sums_backend(backend: str):
    """k-means centre sums on ``backend`` (``''``: the default) for the rows of this run."""
    chosen = kmeans.cpu_order_cluster_sums
    if backend:
        kmeans.cpu_order_cluster_sums = functools.partial(chosen, backend=backend)
    try:
        yield
    finally:
        kmeans.cpu_order_cluster_sums = chosen


def save(args, device, rows) -> None:
    """Writes the table with ``rows`` so far (each row as it is made: a run cut short keeps
    them)."""
    # one workload (the 3 images): every run replaces its device's rows of the settings it ran
    kept = kept_rows(args.out, '| iSeg', hardware(device, args.threads), '', rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        '# iSeg post-processing time per image (512x512 output)\n\n'
        'Attention maps -> labels only (no U-Net). Inputs: synthetic attention from 3 VOC ground '
        'truths (`attention_from_labels`, noise 0.15; 64x64 self-attention, 16/32 '
        'cross-attention), WSSS VOC preset (10 Ent-Self iterations, k-means 36 seeds x 20 '
        'steps), the k-means distance and the maps (float16 unless the row says float32) in '
        'the row\'s precision on both sides. "released '
        'formulation" = '
        '`mmdiffseg.generators.transcriptions.iseg_postprocess`, a transcription of the released '
        'operations; "label agreement" = pixels where both give the same label, mean / min over '
        'the images (rows dated before 2026-12-06: maps in float32, there was no map precision); '
        '"ratio" = released-formulation time / ours (a speed-up: above 1x ours is faster). '
        'Mean of the repeats (date column) after one warm-up; CPU: process CPU '
        'seconds, CUDA: wall seconds. Written by `python benchmarks/bench_iseg.py` (`--device '
        'cuda` for a GPU). Ours is dominated by the 4096x4096 Ent-Self pass (column max, log, '
        '10 matrix '
        'products) and, in float16, by the k-means distance evaluated term by term as released '
        '(a (36, 4096, 77) float16 tensor per step, slow on CPU); the released k-means also pays '
        'for per-cluster Python means and a 4096x4096 int64 co-membership matrix.\n\n'
        + HEADER + '\n'.join(kept + rows) + '\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--threads', type=positive_int, default=1, help='torch CPU threads')
    parser.add_argument('--out', type=Path, default=RESULTS)
    parser.add_argument('--batch', type=count, default=None,
                        help='images per call of the batched rows (default 16 on CUDA, 0 on CPU)')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    inputs = build_inputs(device)
    label = device_description(device, args.threads)
    run = f'{datetime.date.today()} ({args.repeats} repeat(s))'
    rows = []
    # (cluster smoothing, k-means distance, map precision, variant)
    runs = [(True, 'float16', 'float16', ''), (True, 'float16', 'float32', ''),
            (True, 'float32', 'float16', ''), (False, 'float32', 'float16', '')]
    if torch.device(device).type == 'cuda':  # the fallbacks of the default path
        runs[2:2] = [(True, 'float16', 'float32', 'sums'), (True, 'float16', 'float16', 'eager')]
        runs.append((False, 'float32', 'float16', 'eager'))
    released = {}  # (cluster, precisions, image) -> (seconds, labels): timed once per setting
    for use_cluster, precision, map_precision, variant in runs:
        gen = ISeg.from_preset('wsss_voc', use_cluster=use_cluster, kmeans_precision=precision,
                               map_precision=map_precision,
                               postprocess_backend='torch' if variant == 'eager' else 'auto')
        gen = gen.to(device)
        sums = 'torch' if variant == 'sums' else ''
        kl_dtype = getattr(torch, precision)
        ours_t, ref_t, agree = [], [], []
        for image, (maps, names) in enumerate(inputs):
            with sums_backend(sums):
                t_ours, ours = timed(lambda: gen(maps, None, names)[0], args.repeats, device)
            key = (use_cluster, precision, map_precision, image)
            if key not in released:
                *ref_maps, token_sel = released_args(maps, names, gen)
                ref_in = [m.to(getattr(torch, map_precision)) for m in ref_maps] + [token_sel]
                released[key] = timed(lambda: iseg_postprocess(
                    *ref_in, ent=gen.ent, iters=gen.iters, use_cluster=use_cluster,
                    kl_dtype=kl_dtype), args.repeats, device)
            t_ref, ref = released[key]
            table = torch.tensor([0] + sorted(gen.class_indices(names[0])), device=device)
            agree.append((table[ref] == ours).float().mean().item())
            ours_t.append(t_ours)
            ref_t.append(t_ref)
        released_maps = map_precision == 'float16'
        method = (f'iSeg wsss_voc, cluster on, k-means distance {precision}'
                  f'{" (released, default)" if precision == "float16" and released_maps else ""}'
                  if use_cluster else 'iSeg wsss_voc, cluster off')
        method += '' if released_maps else f', maps {map_precision}'
        method += {'sums': ', centre sums in PyTorch (no Triton)',
                   'eager': ', eager steps (no CUDA graph)'}.get(variant, '')
        ours_m, ref_m = sum(ours_t) / len(ours_t), sum(ref_t) / len(ref_t)
        kept = graph_memory(gen.steps, device) if not variant else '-'
        rows.append(f'| {method} | {ours_m:.3f} | {ref_m:.3f} | '
                    f'{directed(ref_m / ours_m, 2, up=False)}x | '
                    f'{100 * sum(agree) / len(agree):.2f}% / {100 * min(agree):.2f}% | {kept} | '
                    f'{label} | {run} |')
        print(rows[-1], flush=True)
        save(args, device, rows)
        batch = args.batch if args.batch is not None else 16 * (torch.device(device).type == 'cuda')
        if batch and not variant:
            maps = batch_of([m for m, _ in inputs], batch)
            names = [inputs[i % len(inputs)][1][0] for i in range(batch)]
            t_ours, ours = timed(lambda: gen(maps, None, names), args.repeats, device)
            agree = []
            for i, labels in enumerate(ours):
                ref = released[(use_cluster, precision, map_precision, i % len(inputs))][1]
                table = torch.tensor([0] + sorted(gen.class_indices(names[i])), device=device)
                agree.append((table[ref] == labels).float().mean().item())
            rows.append(f'| {method}, batch of {batch}, per image | {t_ours / batch:.3f} | '
                        f'{ref_m:.3f} | {directed(ref_m * batch / t_ours, 2, up=False)}x | '
                        f'{100 * sum(agree) / len(agree):.2f}% / {100 * min(agree):.2f}% | - | '
                        f'{label} | {run} |')
            print(rows[-1], flush=True)
            save(args, device, rows)


if __name__ == '__main__':
    main()
