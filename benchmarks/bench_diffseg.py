"""DiffSeg post-processing time per image at 512x512: mmdiffseg's DiffSeg vs a direct transcription
of the released formulation (google/diffseg ``diffseg/segmentor.py``: ``aggregate_weights``,
``mask_merge``, ``generate_masks``), on the same synthetic attention built from VOC ground truth, in
one run.

The transcription keeps the released operations: the aggregate materialised as a float64
``(64, 64, 64, 64)`` tensor with repeated queries; iteration 0 as the elementwise KL over
``(chunk, 4096, 64, 64)`` tensors (16 anchors per chunk, as released), thresholded, then the
proposal matrix product in float64; the later iterations as a Python loop computing one elementwise
KL of a proposal against all proposals per step; bilinear x8 and argmax. The released KL runs in
fp16 on the GPU: so does this one with ``--device cuda``; on CPU it runs in float32 (CPU fp16 is
slow or unsupported), so its NaN trap does not show there.

    python benchmarks/bench_diffseg.py [--device cuda] [--repeats 1] [--threads 1] [--chunk 16]

Writes ``benchmarks/results/diffseg.md`` (rows of other devices are kept). CPU times are the
process's CPU seconds (robust to other jobs on shared cores), CUDA times wall seconds after
synchronisation.
"""
import argparse
import datetime
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mmdiffseg.generators import DiffSeg  # noqa: E402
from mmdiffseg.generators.testing import attention_from_labels, load_label_png  # noqa: E402

SAMPLES = REPO.parent / 'shared' / 'data' / 'voc2012_val_samples' / 'SegmentationClass'
IMAGES = ('voc_val_582', 'voc_val_0')
VOC_CLASSES = ['background', 'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat',
               'chair', 'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor']
RESULTS = REPO / 'benchmarks' / 'results' / 'diffseg.md'
HEADER = ('| method | ours s/img | released-formulation s/img | ratio | segment agreement | '
          'device | date |\n|---|---|---|---|---|---|---|\n')


# -- the released formulation, transcribed ---------------------------------------------------------
def released_aggregate(weights):
    """``aggregate_weights``: per resolution, key axes bilinear to 64, renormalised, queries
    repeated, accumulated into a float64 (64, 64, 64, 64) array with ratio r / sum(r)."""
    sizes = [int(w.shape[-1] ** 0.5) for w in weights]
    out = torch.zeros(64, 64, 64, 64, dtype=torch.float64, device=weights[0].device)
    for w, size in zip(weights, sizes):
        ratio = 64 // size
        keys = F.interpolate(w.reshape(-1, 1, size, size), scale_factor=ratio, mode='bilinear',
                             align_corners=False).reshape(size, size, 64, 64)
        keys = keys / keys.sum((2, 3), keepdim=True)
        keys = keys.repeat_interleave(ratio, 0).repeat_interleave(ratio, 1)
        out += keys * (size / sum(sizes))
    return out


def released_kl(x, y):
    """``DiffSeg.KL``: no epsilon, summed over the last two axes."""
    quotient = torch.log(x) - torch.log(y)
    return (x * quotient).sum((-2, -1)) / 2 - (y * quotient).sum((-2, -1)) / 2


def released_masks(attns, thresholds, kl_dtype, chunk):
    """``generate_masks`` (refine off): iteration 0 in chunks, greedy loops, x8, argmax."""
    coords = torch.arange(1, 62, 4, device=attns.device)
    anchors = attns[coords[:, None], coords[None, :]].reshape(-1, 1, 64, 64)
    flat = attns.reshape(1, 4096, 64, 64)
    kl_bin = torch.cat([released_kl(anchors[i:i + chunk].to(kl_dtype), flat.to(kl_dtype))
                        < thresholds[0] for i in range(0, len(anchors), chunk)]).double()
    merged = (kl_bin @ attns.reshape(4096, 4096)) / kl_bin.sum(1, keepdim=True)
    merged = merged.reshape(-1, 64, 64)
    for threshold in thresholds[1:]:
        matched, new = set(), []
        for i in range(len(merged)):
            if i in matched:
                continue
            matched.add(i)
            close = released_kl(merged[i], merged) < threshold
            if close.sum() > 0:
                matched.update(close.nonzero().flatten().tolist())
                new.append(merged[close].mean(0))
        merged = torch.stack(new)
    up = F.interpolate(merged[None].float(), scale_factor=8, mode='bilinear', align_corners=False)
    return up[0].argmax(0)


def released_postprocess(maps, thresholds, kl_dtype, chunk):
    attns = released_aggregate([maps[f'self{r}'][0] for r in (64, 32, 16, 8)])
    return released_masks(attns, thresholds, kl_dtype, chunk)


# -- the run -------------------------------------------------------------------------------------
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=1)
    parser.add_argument('--threads', type=int, default=1, help='torch CPU threads')
    parser.add_argument('--chunk', type=int, default=16, help='anchors per released KL chunk')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device
    cuda = device.startswith('cuda')
    kl_dtype = torch.float16 if cuda else torch.float32
    label = f'{device} ({torch.cuda.get_device_name(0)})' if cuda else \
        f'cpu, {args.threads} thread(s)'
    generator = DiffSeg(kl_thresholds=(1.1, 1.1, 1.1), output_size=(512, 512)).to(device)
    ours_t = ref_t = agree = 0.0
    for name in IMAGES:
        gt = load_label_png(SAMPLES / f'{name}.png')[None]
        maps, _ = attention_from_labels(gt, VOC_CLASSES, noise=0.1, seed=0)
        maps = maps.to(device)
        t_ours, ours = timed(lambda: generator(maps, None, None)[0], args.repeats, device)
        t_ref, ref = timed(lambda: released_postprocess(maps, generator.kl_thresholds, kl_dtype,
                                                        args.chunk), args.repeats, device)
        ref_ids = torch.unique(ref, return_inverse=True)[1]
        agree += (ref_ids == ours).float().mean().item() / len(IMAGES)
        ours_t += t_ours / len(IMAGES)
        ref_t += t_ref / len(IMAGES)
        print(f'{name}: ours {t_ours:.3f} s, released {t_ref:.3f} s, segments '
              f'{int(ours.max()) + 1} / {int(ref.unique().numel())}', flush=True)
    row = (f'| DiffSeg tau 1.1 x3, refine off | {ours_t:.3f} | {ref_t:.3f} | '
           f'{ref_t / ours_t:.1f}x | {100 * agree:.2f}% | {label}, released KL in '
           f'{str(kl_dtype).replace("torch.", "")} | {datetime.date.today()} |')
    print(row)
    kept = []
    if args.out.exists():
        kept = [line for line in args.out.read_text().splitlines()
                if line.startswith('| DiffSeg') and f'| {label},' not in line]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        '# DiffSeg post-processing time per image (512x512 output)\n\n'
        'Attention maps -> segment ids only (no U-Net). Inputs: synthetic self-attention at '
        '64/32/16/8 from 2 VOC ground truths (`attention_from_labels`, noise 0.1). "ours" = '
        '`DiffSeg` (float32, KL as two matrix products, guarded logs); "released formulation" = '
        '`benchmarks/bench_diffseg.py:released_postprocess`, a transcription of google/diffseg '
        f'(float64 aggregate, elementwise KL over {args.chunk} x 4096 x 64 x 64 chunks in fp16 on '
        'GPU / float32 on CPU, Python merge loops). "segment agreement" = pixels with the same '
        f'segment id (both compacted in proposal order). Mean of {args.repeats} repeat(s) after '
        'one warm-up; CPU: process CPU seconds, CUDA: wall seconds. Written by '
        '`python benchmarks/bench_diffseg.py` (`--device cuda` for a GPU).\n\n'
        + HEADER + '\n'.join(kept + [row]) + '\n')


if __name__ == '__main__':
    main()
