"""Host time of one captured attention layer on the Triton path, above diffusers' own processor.

At batch 1 a GPU runs Stable Diffusion's U-Net about as fast as the host launches it, so every
microsecond of Python a captured layer adds shows in the capture ratio (``results/capture.md``).
This times ``CaptureProcessor`` (Triton map backend) and ``AttnProcessor2_0`` on the same
attention module with tiny inputs (64 tokens, 2 heads: the compute is a few microseconds), in
wall microseconds per call, alternating, median of ``--repeats`` rounds; the difference is the
capture's host cost. The Triton kernel launch itself is stubbed (a launch needs a GPU, or the
interpreter, whose cost is not the GPU launcher's), so it is not in the figure. Rows: maps added
at once, and staged for a deferred buffer (:mod:`mmdiffseg.attention.deferred_maps`: three copies
a layer, plus one launch per forward not counted here).

    python benchmarks/bench_capture_layer_host.py [--repeats 20] [--label TEXT]

Another checkout (e.g. before a change): ``PYTHONPATH=<checkout> python
benchmarks/bench_capture_layer_host.py --label before`` (the package is imported from there).
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from pathlib import Path

os.environ['TRITON_INTERPRET'] = '1'  # map_kernel imports on the CPU; its launches are stubbed

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.append(str(HERE.parent))  # after PYTHONPATH: another checkout given there wins

import mmdiffseg  # noqa: E402,F401  (first: bench_tool_host puts this checkout on sys.path)
from cli_args import positive_int  # noqa: E402
from results_table import append_section, host_description  # noqa: E402


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def processors(deferred: bool):
    """(plain processor, capture processor, attention module) for one 8x8 self-attention layer."""
    from diffusers.models.attention_processor import Attention, AttnProcessor2_0
    from mmdiffseg.attention import capture, deferred_maps, map_kernel
    map_kernel._head_map_kernel = _NoLaunch()
    if deferred:
        deferred_maps.DEFER_MIN_BYTES = 0
    attn = Attention(query_dim=64, heads=2, dim_head=32).eval()
    layers = [capture.AttentionLayer(name, 'self', 8, 2) for name in ('a', 'b')]
    spec = capture.CaptureSpec([capture.CaptureRequest('self', 8)])
    session = capture.CaptureSession(spec, layers, 1, map_backend='triton')
    session.active = True
    ours = capture.CaptureProcessor(session, layers[0], session.layer_sinks['a'],
                                    AttnProcessor2_0())
    return AttnProcessor2_0(), ours, attn


def extra_us(deferred: bool, repeats: int, calls: int = 300) -> tuple:
    plain, ours, attn = processors(deferred)
    x = torch.randn(1, 64, 64)

    def per_call(processor):
        start = time.perf_counter()
        for _ in range(calls):
            processor(attn, x)
        return (time.perf_counter() - start) / calls * 1e6
    with torch.no_grad():
        for _ in range(100):
            plain(attn, x), ours(attn, x)
        rounds = [(per_call(plain), per_call(ours)) for _ in range(repeats)]
    base = statistics.median(p for p, _ in rounds)
    return base, statistics.median(o - p for p, o in rounds)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=positive_int, default=20)
    parser.add_argument('--label', default='this tree')
    parser.add_argument('--out', type=Path, default=HERE / 'results' / 'capture_layer_host.md')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f'mmdiffseg from {Path(mmdiffseg.__file__).parent}')
    rows = []
    for deferred in (False, True):
        base, extra = extra_us(deferred, args.repeats)
        rows.append(f"| {'staged (deferred buffer)' if deferred else 'added at once'} | "
                    f'{args.label} | {base:.0f} | {extra:.0f} |')
        print(rows[-1], flush=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    append_section(args.out, 'Captured layer: host time above diffusers\' processor',
                   __doc__.split('\n\n')[0].replace('\n', ' '),
                   f'{stamp}: {host_description()}, torch {torch.__version__}, 1 thread, median of '
                   f'{args.repeats} rounds',
                   ('maps', 'code', 'diffusers processor us', 'capture extra us'), rows)


if __name__ == '__main__':
    main()
