"""Mask2Former's deformable attention: mmcv's PyTorch path (the default ``mmcv-lite`` install, and
both installs on the CPU) against mmcv's compiled kernel (``MMCV_OPS=compiled``), side by side.

One ``MultiScaleDeformableAttention`` call, forward + backward, at the size of the R50 pixel decoder
of the 512x512 VOC configs (batch 2, 256 channels, 8 heads, 4 points, levels of stride 8/16/32: 5376
queries); the decoder makes 6 such calls per training step. The kernel column is timed where mmcv
has the kernel (CUDA, compiled ops); on the CPU mmcv has none, and says so. CPU: process CPU time
(robust to other jobs); CUDA: CUDA events. Median of ``--repeats`` after 2 warm-up calls. Appends a
table to ``benchmarks/results/deformable_attention.md``.

    python benchmarks/bench_deformable_attention.py [--device cpu|cuda] [--crop 512] [--repeats 10]
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, installed or not

from cli_args import positive_int  # noqa: E402
from results_table import device_description  # noqa: E402
import mmdiffseg  # noqa: E402,F401  (mmcv.ops importable without compiled kernels)
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,  # noqa: E402
                                              multi_scale_deformable_attn_pytorch)
from mmdiffseg.compat import mmcv_has_compiled_ops  # noqa: E402

RESULTS = Path(__file__).resolve().parent / 'results' / 'deformable_attention.md'
HEADS, CHANNELS, POINTS, STRIDES, BATCH, LAYERS = 8, 256, 4, (8, 16, 32), 2, 6


def inputs(crop: int, device: str):
    shapes = torch.tensor([[crop // s, crop // s] for s in STRIDES], device=device)
    starts = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    queries = int(shapes.prod(1).sum())
    value = torch.rand(BATCH, queries, HEADS, CHANNELS // HEADS, device=device, requires_grad=True)
    locations = torch.rand(BATCH, queries, HEADS, len(STRIDES), POINTS, 2, device=device,
                           requires_grad=True)
    weights = torch.rand(BATCH, queries, HEADS, len(STRIDES), POINTS, device=device)
    weights = weights.softmax(-1).requires_grad_()
    return value, shapes, starts, locations, weights


def pytorch_path(value, shapes, starts, locations, weights):
    return multi_scale_deformable_attn_pytorch(value, shapes, locations, weights)


def kernel_path(value, shapes, starts, locations, weights):
    return MultiScaleDeformableAttnFunction.apply(value, shapes, starts, locations, weights, 64)


def seconds_per_call(path, args, device: str, repeats: int) -> float:
    """Median seconds of one forward + backward."""
    times = []
    for i in range(repeats + 2):
        if device == 'cuda':
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        else:
            begin = time.process_time()
        path(*args).sum().backward()
        if device == 'cuda':
            end.record()
            torch.cuda.synchronize()
            elapsed = start.elapsed_time(end) / 1000
        else:
            elapsed = time.process_time() - begin
        if i >= 2:
            times.append(elapsed)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--crop', type=positive_int, default=512)
    parser.add_argument('--repeats', type=positive_int, default=10)
    args = parser.parse_args()
    device = torch.device(args.device).type
    data = inputs(args.crop, args.device)
    pytorch = seconds_per_call(pytorch_path, data, device, args.repeats)
    try:
        kernel = f'{seconds_per_call(kernel_path, data, device, args.repeats) * 1000:.1f} ms'
    except RuntimeError as err:   # no compiled ops, or no kernel for this device
        kernel = f'n/a ({str(err).splitlines()[0].split(", ")[0]})'   # its first clause
    table = [
        f'\n## {datetime.date.today()} {device_description(args.device, torch.get_num_threads())}'
        f'; {os.cpu_count()} CPUs; mmcv ops '
        f'{"compiled" if mmcv_has_compiled_ops() else "lite"}; crop {args.crop}, batch {BATCH}\n',
        '| path | forward + backward per call | per training step (x6 layers) |',
        '|---|---|---|',
        f'| mmcv PyTorch (`multi_scale_deformable_attn_pytorch`) | {pytorch * 1000:.1f} ms | '
        f'{pytorch * LAYERS:.2f} s |',
        f'| mmcv kernel (`MultiScaleDeformableAttnFunction`) | {kernel} | |',
    ]
    text = '\n'.join(table) + '\n'
    print(text)
    RESULTS.parent.mkdir(exist_ok=True)
    if not RESULTS.exists():
        RESULTS.write_text('# Deformable attention: PyTorch path vs compiled kernel\n\n'
                           'Written by `benchmarks/bench_deformable_attention.py`.\n')
    with RESULTS.open('a') as f:
        f.write(text)


if __name__ == '__main__':
    main()
