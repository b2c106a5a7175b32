"""Cost of attention capture: one U-Net forward with a generator's capture spec vs the plain one.

The U-Net is the real Stable Diffusion 2-base architecture
(``sd_configs/stable-diffusion-2-1-base``; ``--model stable-diffusion-v1-4``: SD 1.4's, DiffSeg's
own model) with random weights
(``--quick``: the tiny test U-Net of the same topology), input a 512x512 image's latent (64x64),
t = 300. Paths, timed in one run (after one warm-up each, alternating, so
load from other processes hits all alike):

* ``plain``: the stock diffusers forward (SDPA everywhere);
* ``new``: capture as shipped: the SDPA call plus its row LSE, maps by ``--map-backend``
  (``auto``: the Triton kernel on CUDA, torch chunks on CPU);
* ``layerwise``: ``new`` with every layer's maps added as the layer runs (no deferred buffers,
  :mod:`mmdiffseg.attention.deferred_maps`; they apply to the Triton backend from batch 4);
* ``torch``: the same with the torch map path (on CUDA: the fallback without Triton);
* ``old``: the capture path before issue 8, transcribed here (:class:`LegacyProcessor`).

Times are the median and the minimum over ``--repeats`` runs: CPU seconds of the process on CPU
(robust to other jobs on the same cores, not to their cache and memory traffic), wall time after
synchronisation on CUDA. Peak memory above the memory in use before the forward:
CUDA ``max_memory_allocated``; CPU the resident-set high-water mark (``VmHWM``, reset through
``/proc/self/clear_refs``; glibc mmaps the > 32 MiB buffers, so they show in full). Extra = path
peak - plain peak, compared to the float32 maps returned (the output: 1x is unavoidable). Also
checked: the U-Net output of each path against the plain one, and each path's maps against
``new``'s. Appends one row per (spec, batch, path) to ``--out`` as it goes (the file ends with
the table).

    python benchmarks/bench_capture.py [--device cuda --dtype float16] [--spec diffseg iseg seediff]
        [--model stable-diffusion-2-1-base|stable-diffusion-v1-4]
        [--batch-size 1 16] [--paths new layerwise old] [--repeats 3] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, installed or not

from cli_args import positive_int  # noqa: E402
import mmdiffseg.attention.capture as capture  # noqa: E402
from mmdiffseg.attention import CaptureSpec, capture_attention, deferred_maps  # noqa: E402
from mmdiffseg.attention.head_maps import default_chunk_bytes  # noqa: E402
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402
from results_table import append_row, device_description, directed  # noqa: E402

RESULTS = REPO / 'benchmarks' / 'results' / 'capture.md'
PREAMBLE = ('# Attention capture cost\n\n"ratio to plain" = the path\'s time / the plain '
            'forward\'s (a slowdown: 1.10 is 10% slower); "extra / buffers" = extra peak memory '
            '/ the maps returned.\n')
SD_CONFIGS = shared_data_dir() / 'sd_configs'
MODELS = ('stable-diffusion-2-1-base', 'stable-diffusion-v1-4')
SD_CONFIG = SD_CONFIGS / MODELS[0]
TABLE = ('| date (UTC) | device | threads | spec | batch | path | runs | s (median) | s (min) | '
         'ratio to plain (median) | ratio (min) | peak MiB | extra MiB | buffers MiB | '
         'extra / buffers | max abs out diff | max abs map diff vs new |\n'
         + '|---' * 17 + '|\n')


def generator_specs(full_size: bool) -> dict:
    """The released generators' capture specs (iSeg's SD 2.1 head lists need full-size heads)."""
    from mmdiffseg.generators import DiffSeg, ISeg, SeeDiff
    iseg = ISeg() if full_size else ISeg(cross_heads=None, self_heads=[0])
    return {'diffseg': DiffSeg().capture_spec, 'iseg': iseg.capture_spec,
            'seediff': SeeDiff(classes=['background', 'dog']).capture_spec}


class LegacyProcessor(capture.CaptureProcessor):
    """The capture path before issue 8, for comparison: per chunk of query rows (8 MiB of float32
    probabilities on CPU, 16 MiB on CUDA) ``softmax(Q K^T * scale)`` explicitly in float32 (fp16 /
    bf16 logits upcast only with ``upcast_attention``), the output as ``probs @ V``, head sums from
    the probabilities; the unconditional half of a CFG batch on SDPA."""

    CHUNK_BYTES = {'cpu': 8 * 2 ** 20, 'cuda': 16 * 2 ** 20}

    def attend(self, attn, query, key, value, mask):
        rows = self.session.capture_rows(query.shape[0])
        out = torch.empty_like(query)
        if rows.start > 0:
            head = slice(0, rows.start)
            out[head] = F.scaled_dot_product_attention(
                query[head], key[head], value[head], scale=attn.scale,
                attn_mask=None if mask is None else mask[head])
        out[rows] = self._explicit(attn, query[rows], key[rows], value[rows])
        return out

    def _explicit(self, attn, query, key, value):
        batch, heads, n_query, head_dim = query.shape
        n_key, rows, device = key.shape[2], batch * heads, query.device
        if attn.upcast_attention:
            query, key = query.float(), key.float()
        q3 = (query * attn.scale).reshape(rows, n_query, head_dim)
        k3t = key.reshape(rows, n_key, head_dim).transpose(1, 2)
        v3 = value.reshape(rows, n_key, head_dim)
        out = torch.empty(rows, n_query, head_dim, dtype=value.dtype, device=device)
        groups = [(None if len(ids) == heads else torch.tensor(ids, device=device),
                   [(self.session.buffer(s, n_query, n_key, device), s.weight) for s in sinks])
                  for ids, sinks in self.groups]
        chunk_bytes = self.session.chunk_bytes or self.CHUNK_BYTES.get(device.type, 16 * 2 ** 20)
        chunk = min(n_query, max(1, chunk_bytes // (4 * rows * n_key)))
        for start in range(0, n_query, chunk):
            end = min(start + chunk, n_query)
            probs = torch.softmax(torch.bmm(q3[:, start:end], k3t), dim=-1, dtype=torch.float32)
            out[:, start:end] = torch.bmm(probs.to(v3.dtype), v3)
            per_head = probs.view(batch, heads, end - start, n_key)
            for index, sinks in groups:
                summed = (per_head if index is None else per_head.index_select(1, index)).sum(dim=1)
                for buffer, weight in sinks:
                    buffer[:, start:end].add_(summed, alpha=weight)
        return out.view(batch, heads, n_query, head_dim)


@contextlib.contextmanager
def legacy_processors():
    original = capture.CaptureProcessor
    capture.CaptureProcessor = LegacyProcessor
    try:
        yield
    finally:
        capture.CaptureProcessor = original


class CpuMeter:
    """Process CPU seconds and the resident-set high-water mark (Linux)."""

    @staticmethod
    def _status(field: str) -> int:
        for line in Path('/proc/self/status').read_text().splitlines():
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f'{field} not in /proc/self/status')

    clock = staticmethod(time.process_time)

    def start(self) -> int:
        Path('/proc/self/clear_refs').write_text('5')
        return self._status('VmRSS')

    def peak(self) -> int:
        return self._status('VmHWM')


class CudaMeter:
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


def build_unet(device: str, dtype: torch.dtype, quick: bool, model: str = MODELS[0]):
    from diffusers import UNet2DConditionModel
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    config = SD_CONFIGS / model
    if quick:
        unet = UNet2DConditionModel.from_pretrained(cached_tiny_pipeline_folder(config) / 'unet')
    else:
        with torch.random.fork_rng(devices=[]), torch.device(device):
            torch.manual_seed(0)
            unet = UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(config / 'unet'))
    return unet.to(device, dtype).eval()


def run_once(unet, inputs, meter, path, spec, map_backend):
    """(seconds, peak bytes above the start, output, maps)."""
    base = meter.start()
    start = meter.clock()
    maps = {}
    with torch.no_grad():
        if path == 'plain':
            out = unet(*inputs[:2], encoder_hidden_states=inputs[2]).sample
        else:
            backend = 'torch' if path == 'torch' else map_backend
            legacy = legacy_processors() if path == 'old' else contextlib.nullcontext()
            layerwise = (mock.patch.object(deferred_maps, 'DEFER_MIN_BYTES', float('inf'))
                         if path == 'layerwise' else contextlib.nullcontext())
            with legacy, layerwise, capture_attention(
                    unet, spec, latent_size=inputs[0].shape[-1], batch_size=inputs[0].shape[0],
                    map_backend=backend) as session:
                out = unet(*inputs[:2], encoder_hidden_states=inputs[2]).sample
            maps = session.results()
    seconds = meter.clock() - start
    return seconds, meter.peak() - base, out, maps


def alternated(calls: dict, repeats: int, measure) -> tuple:
    """Each call once (its warm-up), then ``repeats`` rounds of every call in turn, so that load
    from other processes hits all alike: ``(name -> warm-up result, name -> [measure(result) of
    each round]``); a round's result is dropped once measured, so it holds no memory in the
    next call."""
    first = {name: call() for name, call in calls.items()}
    runs = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            runs[name].append(measure(call()))
    return first, runs


def bench(unet, inputs, meter, spec, paths, repeats, map_backend):
    """Per path: median and min seconds, max peak, output and maps of its warm-up run."""
    first, runs = alternated(
        {p: functools.partial(run_once, unet, inputs, meter, p, spec, map_backend)
         for p in ('plain',) + tuple(paths)}, repeats, lambda result: result[:2])
    return {p: dict(seconds=statistics.median(r[0] for r in runs[p]),
                    best=min(r[0] for r in runs[p]), peak=max(r[1] for r in runs[p]),
                    out=first[p][2], maps=first[p][3]) for p in runs}


def max_diff(a: dict, b: dict) -> float:
    return max(((a[k].float() - b[k].float()).abs().max().item() for k in a), default=0.0)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--spec', nargs='+', default=['diffseg', 'iseg'],
                        choices=['diffseg', 'iseg', 'seediff'])
    parser.add_argument('--model', default=MODELS[0], choices=MODELS,
                        help="the U-Net's architecture (SD 1.4: DiffSeg's and SeeDiff's own model, "
                             'head dims 40 / 80 / 160; iSeg\'s head lists are SD 2.1\'s)')
    parser.add_argument('--batch-size', type=positive_int, nargs='+', default=[1])
    parser.add_argument('--paths', nargs='+', default=None,
                        choices=['new', 'layerwise', 'torch', 'old'],
                        help='capture paths besides plain (default: new old; on CUDA also '
                             'layerwise and torch)')
    parser.add_argument('--map-backend', default='auto', choices=['auto', 'torch', 'triton'])
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--threads', type=positive_int, default=1,
                        help='CPU threads (torch.set_num_threads)')
    parser.add_argument('--quick', action='store_true',
                        help='tiny U-Net (smoke run of this script)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.model != MODELS[0] and 'iseg' in args.spec:
        parser.error(f"iSeg's released head lists are for {MODELS[0]}: use --spec diffseg seediff "
                     f'with --model {args.model}')
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith('cuda')
    paths = args.paths or (['new', 'layerwise', 'torch', 'old'] if cuda else ['new', 'old'])
    dtype = getattr(torch, args.dtype)
    meter = CudaMeter() if cuda else CpuMeter()
    unet = build_unet(args.device, dtype, args.quick, args.model)
    specs = generator_specs(full_size=not args.quick)
    chunk = 'from free memory' if cuda else f'{default_chunk_bytes(args.device) / 2 ** 20:g} MiB'
    device = (f'{device_description(args.device, args.threads)}, {args.dtype}, '
              f'torch-path chunk {chunk}'
              + (f', {args.model} U-Net' if args.model != MODELS[0] else '')
              + (' (tiny U-Net)' if args.quick else ''))
    mib = 2 ** 20
    for batch in args.batch_size:
        gen = torch.Generator().manual_seed(0)
        inputs = (torch.randn(batch, 4, 64, 64, generator=gen).to(args.device, dtype),
                  torch.tensor([300] * batch, device=args.device),
                  torch.randn(batch, 77, unet.config.cross_attention_dim, generator=gen)
                  .to(args.device, dtype))
        for spec_name in args.spec:
            spec: CaptureSpec = specs[spec_name]
            result = bench(unet, inputs, meter, spec, paths, args.repeats, args.map_backend)
            plain = result['plain']
            for path, r in result.items():
                buffers = sum(m.numel() * m.element_size() for m in r['maps'].values())
                extra = r['peak'] - plain['peak']
                share = directed(extra / buffers, 2, up=True) if buffers else '-'
                out_diff = (r['out'].float() - plain['out'].float()).abs().max().item()
                map_diff = (f"{max_diff(r['maps'], result['new']['maps']):.1e}"
                            if buffers and 'new' in result else '-')
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
                row = (f"| {stamp} | {device} | {args.threads} | {spec_name} | {batch} | {path} | "
                       f"{args.repeats} | {r['seconds']:.3f} | {r['best']:.3f} | "
                       f"{directed(r['seconds'] / plain['seconds'], 3, up=True)} | "
                       f"{r['best'] / plain['best']:.3f} | "
                       f"{r['peak'] / mib:.0f} | {extra / mib:.0f} | {buffers / mib:.1f} | "
                       f"{share} | {out_diff:.1e} | {map_diff} |")
                print(row, flush=True)
                append_row(args.out, row, PREAMBLE, TABLE)
            del result


if __name__ == '__main__':
    main()
