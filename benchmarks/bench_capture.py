"""Cost of attention capture: full-size U-Net forward with a capture spec vs the plain fused forward.

The U-Net is the real Stable Diffusion 2-base architecture (``sd_configs/stable-diffusion-2-1-base``)
with random weights; input a 512x512 image's latent (64x64), batch 1, t = 300. Runs alternate
plain / captured after one warm-up of each; times are medians: CPU seconds of the process on CPU
(robust to other jobs on the same cores), wall time after synchronisation on CUDA. Peak memory
above the memory in use before the forward:

* CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.
* CPU: the process's resident-set high-water mark (``VmHWM`` in ``/proc/self/status``), reset before
  each forward by writing 5 to ``/proc/self/clear_refs``. The aggregate buffers (> 32 MiB) are always
  mmapped by glibc, so they show up in full; small freed blocks that glibc keeps in its heap count in
  the baseline of the next run, for plain and captured runs alike (they alternate).

The extra peak of a captured forward is compared to the size of the aggregate float32 buffers it
returns (they are the output, so at least 1x is unavoidable). Writes a markdown table row to
``benchmarks/results/capture.md`` (appended when the file exists).

    python benchmarks/bench_capture.py [--device cuda] [--spec diffseg iseg] [--repeats 3]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec, capture_attention

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / 'benchmarks' / 'results' / 'capture.md'
CONFIG = REPO.parent / 'shared' / 'data' / 'sd_configs' / 'stable-diffusion-2-1-base' / 'unet' / 'config.json'

SPECS = {
    # DiffSeg (ALGORITHMS.md 1.1): every self-attention layer, all heads, averaged per resolution
    'diffseg': CaptureSpec([CaptureRequest('self', r) for r in (64, 32, 16, 8)]),
    # iSeg WSSS (ALGORITHMS.md 3.1): 10 cross layers at 16/32, one 64-res self layer, all heads
    'iseg': CaptureSpec([
        CaptureRequest('cross', 16),
        CaptureRequest('cross', 32, layers=('down_blocks.1.attentions.1.transformer_blocks.0.attn2',
                                            'up_blocks.2.attentions.0.transformer_blocks.0.attn2',
                                            'up_blocks.2.attentions.1.transformer_blocks.0.attn2')),
        CaptureRequest('self', 64, layers=('up_blocks.3.attentions.1.transformer_blocks.0.attn1',)),
    ]),
}

HEADER = """# Attention capture cost (full-size SD 2-base U-Net, random weights, 512x512, batch 1)

Written by `benchmarks/bench_capture.py`. *plain* = the stock diffusers forward (SDPA everywhere);
*capture* = the same forward with the spec's layers on `CaptureProcessor` (explicit softmax in
query chunks, float32 head/layer means). Time: median of the runs after a warm-up; on CPU the
process's CPU seconds (`time.process_time`: the development machine shares its 2 cores with other
jobs, which makes wall time meaningless), on CUDA wall time after synchronisation. Peak: memory
above what was in use before the forward (CUDA: `max_memory_allocated`; CPU: resident-set
high-water mark `VmHWM`, reset through `/proc/self/clear_refs`). Extra = capture peak - plain peak
(the buffers are allocated at the first captured layer, so extra can be below the buffer size when
that layer comes after the plain forward's peak); buffers = the float32 maps returned. Targets:
time ratio <= 1.2, extra peak <= 2x buffers.

| date (UTC) | device | threads | spec | chunk MiB | runs | plain s | capture s | ratio | plain peak MiB | capture peak MiB | extra MiB | buffers MiB | extra / buffers | max abs out diff |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


class CpuPeak:
    """Resident-set high-water mark of this process (Linux)."""

    @staticmethod
    def _status(field: str) -> int:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f'{field} not in /proc/self/status')

    @staticmethod
    def clock() -> float:
        return time.process_time()  # CPU seconds: robust to other processes sharing the cores

    def start(self) -> int:
        Path('/proc/self/clear_refs').write_text('5')
        return self._status('VmRSS')

    def peak(self) -> int:
        return self._status('VmHWM')


class CudaPeak:
    @staticmethod
    def clock() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> int:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()

    def peak(self) -> int:
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()


def build_unet(device: str, dtype: torch.dtype):
    from diffusers import UNet2DConditionModel
    config = json.loads(CONFIG.read_text())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(config)
    return unet.to(device, dtype).eval()


def run_once(unet, inputs, meter, spec=None, chunk_bytes=None):
    """(seconds, peak bytes above the start, output, buffer bytes)."""
    base = meter.start()
    start = meter.clock()
    with torch.no_grad():
        if spec is None:
            out, buffers = unet(*inputs[:2], encoder_hidden_states=inputs[2]).sample, 0
        else:
            with capture_attention(unet, spec, latent_size=inputs[0].shape[-1], batch_size=1,
                                   chunk_bytes=chunk_bytes) as session:
                out = unet(*inputs[:2], encoder_hidden_states=inputs[2]).sample
            maps = session.results()
            buffers = sum(m.numel() * m.element_size() for m in maps.values())
    seconds = meter.clock() - start
    peak = meter.peak() - base
    return seconds, peak, out, buffers


def bench(unet, inputs, meter, spec, repeats, chunk_bytes):
    run_once(unet, inputs, meter)
    run_once(unet, inputs, meter, spec, chunk_bytes)
    plain, captured = [], []
    for _ in range(repeats):  # alternate, so load from other processes hits both alike
        plain.append(run_once(unet, inputs, meter))
        captured.append(run_once(unet, inputs, meter, spec, chunk_bytes))
    diff = (plain[-1][2] - captured[-1][2]).abs().max().item()
    return dict(plain_s=statistics.median(r[0] for r in plain),
                capture_s=statistics.median(r[0] for r in captured),
                plain_peak=max(r[1] for r in plain), capture_peak=max(r[1] for r in captured),
                buffers=captured[-1][3], diff=diff)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--spec', nargs='+', default=['diffseg'], choices=sorted(SPECS))
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--threads', type=int, default=1, help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--chunk-mib', type=float, nargs='+', default=[None],
                        help='query-chunk sizes to try (default: the engine default for the device)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    meter = CudaPeak() if args.device.startswith('cuda') else CpuPeak()
    unet = build_unet(args.device, dtype)
    gen = torch.Generator().manual_seed(0)
    inputs = (torch.randn(1, 4, 64, 64, generator=gen).to(args.device, dtype),
              torch.tensor([300], device=args.device),
              torch.randn(1, 77, unet.config.cross_attention_dim, generator=gen).to(args.device, dtype))
    device_name = (torch.cuda.get_device_name(args.device) if args.device.startswith('cuda')
                   else platform.processor() or platform.machine())
    rows = []
    for spec_name in args.spec:
        for chunk_mib in args.chunk_mib:
            chunk_bytes = None if chunk_mib is None else int(chunk_mib * 2 ** 20)
            r = bench(unet, inputs, meter, SPECS[spec_name], args.repeats, chunk_bytes)
            from mmdiffseg.attention.capture import default_chunk_bytes
            chunk_shown = (chunk_bytes or default_chunk_bytes(args.device)) / 2 ** 20
            mib = 2 ** 20
            extra = r['capture_peak'] - r['plain_peak']
            row = (f"| {datetime.datetime.utcnow():%Y-%m-%d %H:%M} | {args.device} {device_name} "
                   f"{args.dtype} | {args.threads} | {spec_name} | {chunk_shown:g} | {args.repeats} | "
                   f"{r['plain_s']:.2f} | {r['capture_s']:.2f} | {r['capture_s'] / r['plain_s']:.3f} | "
                   f"{r['plain_peak'] / mib:.0f} | {r['capture_peak'] / mib:.0f} | {extra / mib:.0f} | "
                   f"{r['buffers'] / mib:.1f} | {extra / r['buffers']:.2f} | {r['diff']:.1e} |")
            print(row, flush=True)
            rows.append(row)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = args.out.read_text() if args.out.exists() else HEADER
    args.out.write_text(text + '\n'.join(rows) + '\n')


if __name__ == '__main__':
    main()
