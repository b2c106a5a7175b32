"""The Triton map kernel on the GPU: exactness at full size against float64, time per layer against
the layer's own SDPA call and the torch map path, and a sweep of tile configurations.

Every SD 1.x / 2.x-base attention layout at 512x512 (head dims 40-160; self-attention up to 4096
x 4096 tokens, cross-attention over 77 text tokens), float16 / bfloat16 / float32, the conditional
half of a CFG batch of 4, a head subset: maps against ``softmax`` in float64 (tolerance 2e-6 +
1e-5 relative). Times (``triton.testing.do_bench``, ms, batch ``--batch``, all heads, float16):
``plain sdpa`` = the uncaptured layer's ``scaled_dot_product_attention``, ``sdpa + lse`` = the
captured layer's output with its LSE (:func:`~mmdiffseg.attention.sdpa_lse.sdpa_with_lse`),
``kernel`` = the maps (built-in tiles; for the 64x64 self-attention layers also the best of a
sweep of 12 tile configurations, for SD 1's head dim 40 each both as two dots, 32 + 16, and as
one padded to 64), ``torch`` = the torch map path.
Exits non-zero when a map is off. ``--quick`` runs small shapes (on CPU under
``TRITON_INTERPRET=1``: a smoke run of this script); ``--times-only`` skips the exactness part.

    python benchmarks/check_map_kernel.py [--device cuda] [--batch 16] [--out FILE] [--quick]
        [--times-only]
"""
from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, installed or not

from cli_args import positive_int  # noqa: E402
from mmdiffseg.attention import map_kernel  # noqa: E402
from mmdiffseg.attention.head_maps import add_head_maps  # noqa: E402
from mmdiffseg.attention.sdpa_lse import sdpa_with_lse  # noqa: E402
from mmdiffseg.triton_support import triton_problem  # noqa: E402

# name: heads, query tokens, key tokens, head dim
LAYERS = {'sd1 self64': (8, 4096, 4096, 40), 'sd1 cross64': (8, 4096, 77, 40),
          'sd1 self32': (8, 1024, 1024, 80), 'sd1 self16': (8, 256, 256, 160),
          'sd1 cross8': (8, 64, 77, 160), 'sd2 self64': (5, 4096, 4096, 64),
          'sd2 cross32': (10, 1024, 77, 64), 'sd2 self16': (20, 256, 256, 64)}
QUICK = {'self8': (4, 64, 64, 40), 'cross8': (2, 64, 77, 160), 'self16': (2, 256, 256, 64)}


def scratch(slot, numel, dtype, device):
    return torch.empty(numel, dtype=dtype, device=device)


def qkv(batch, heads, n_query, n_key, head_dim, dtype, device):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(batch, n, heads, head_dim, generator=gen).to(device, dtype).transpose(1, 2)
            for n in (n_query, n_key, n_key)]


def check(name, shape, dtype, device) -> float:
    """Max of |error| / (2e-6 + 1e-5 |reference|) over the conditional half of a CFG batch."""
    heads, n_query, n_key, head_dim = shape
    q, k, v = qkv(4, heads, n_query, n_key, head_dim, dtype, device)
    _, lse = sdpa_with_lse(q, k, v)
    subset = list(range(0, heads, 2))
    buffer = torch.zeros(2, n_query, n_key, device=device)
    add_head_maps(q[2:], k[2:], None if lse is None else lse[2:], None,
                  [(torch.tensor(subset, device=device), [(buffer, 1 / len(subset))])],
                  backend='triton', scratch=scratch)
    worst = 0.0
    for b in range(2):
        for rows in torch.arange(n_query, device=device).split(1024):
            logits = (q[2 + b, subset][:, rows].double()
                      @ k[2 + b, subset].double().transpose(-1, -2))
            ref = torch.softmax(logits / math.sqrt(head_dim), -1).mean(0)
            err = (buffer[b, rows].double() - ref).abs() / (2e-6 + 1e-5 * ref.abs())
            worst = max(worst, err.max().item())
    return worst


def timings(shape, batch, device, sweep: bool):
    import triton
    heads, n_query, n_key, head_dim = shape
    q, k, v = qkv(batch, heads, n_query, n_key, head_dim, torch.float16, device)
    _, lse = sdpa_with_lse(q, k, v)
    lse = map_kernel.row_lse(q, k, head_dim ** -0.5) if lse is None else lse
    buffer = torch.zeros(batch, n_query, n_key, device=device)
    targets = [(torch.arange(heads, device=device), [(buffer, 1 / heads)])]

    def kernel(tiles=None):
        map_kernel.add_head_maps(q, k, lse, head_dim ** -0.5, targets, scratch, tiles=tiles)
    times = dict(plain=triton.testing.do_bench(
                     lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v)),
                 sdpa=triton.testing.do_bench(lambda: sdpa_with_lse(q, k, v)),
                 kernel=triton.testing.do_bench(kernel),
                 torch=triton.testing.do_bench(lambda: add_head_maps(
                     q, k, lse, None, targets, backend='torch', scratch=scratch)))
    best = ('-', float('nan'))
    if sweep:
        built_in = map_kernel._tiles(n_query, n_key, head_dim, q.element_size())
        widths = [(built_in['BLOCK_D'], built_in['REST_D'])]
        if built_in['REST_D']:  # SD 1's heads: also as one dot padded to a power of two
            widths.append((triton.next_power_of_2(head_dim), 0))
        for (bm, bn, (warps, stages)), (width, rest) in itertools.product(
                itertools.product((64, 128, 256), (64, 128), ((4, 2), (8, 2))), widths):
            tiles = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_D=width, REST_D=rest, num_warps=warps,
                         num_stages=stages)
            name = f'{bm}x{bn} w{warps} s{stages}' + (f' d{width}+{rest}' if rest
                                                      else f' d{width}')
            try:
                ms = triton.testing.do_bench(lambda: kernel(tiles))
            except Exception:  # out of shared memory or registers: not a candidate
                continue
            print(f'  tiles {name}: {ms:.3f} ms', flush=True)
            if not ms >= best[1]:
                best = (name, ms)
    return times, best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                        help='default: cuda where there is one (else cpu: --quick under '
                             'TRITON_INTERPRET=1)')
    parser.add_argument('--batch', type=positive_int, default=16)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--out', type=Path, default=None)
    parser.add_argument('--times-only', action='store_true', help='skip the exactness checks')
    args = parser.parse_args(argv)
    cuda = args.device.startswith('cuda')
    # at once, not after the first shapes' set-up: where the Triton kernels cannot run, say how
    if cuda and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: no CUDA device here; run it on a CUDA GPU, or on '
                     'the CPU as TRITON_INTERPRET=1 python benchmarks/check_map_kernel.py '
                     '--device cpu --quick')
    problem = triton_problem(args.device) if cuda or not args.times_only else None
    if problem:
        parser.error(f'{problem}: run it on a CUDA GPU, or on the CPU as TRITON_INTERPRET=1 '
                     'python benchmarks/check_map_kernel.py --device cpu --quick')
    layers = QUICK if args.quick else LAYERS
    lines = []

    def emit(*rows):  # printed as they come: a run that runs out of time keeps what it printed
        lines.extend(rows)
        print(*rows, sep='\n', flush=True)
    failed = False
    if not args.times_only:
        emit('| layer (heads, N, K, d) | dtype | max error / tolerance |', '|---|---|---|')
    for (name, shape), dtype in itertools.product(() if args.times_only else layers.items(),
                                                  (torch.float16, torch.bfloat16, torch.float32)):
        ratio = check(name, shape, dtype, args.device)
        failed |= not ratio <= 1
        emit(f'| {name} {shape} | {str(dtype)[6:]} | {ratio:.3f} |')
    if cuda:
        emit('', f'Times (ms, float16, batch {args.batch}, all heads):', '',
             '| layer | plain sdpa | sdpa + lse | map kernel | torch maps | best tiles | ms |',
             '|---|---|---|---|---|---|---|')
        for name, shape in layers.items():
            times, best = timings(shape, args.batch, args.device, sweep=name.endswith('self64'))
            emit(f"| {name} | {times['plain']:.3f} | {times['sdpa']:.3f} | {times['kernel']:.3f} | "
                 f"{times['torch']:.3f} | {best[0]} | {best[1]:.3f} |")
    if args.out:
        args.out.write_text('\n'.join(lines) + '\n')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
