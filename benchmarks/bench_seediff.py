"""SeeDiff post-processing and PAMR per 512x512 image: ours vs the released code's formulation.

The released formulation is ``mmdiffseg.generators.transcriptions.seediff_mask`` (a transcription
of ``seediff_app.py:save_cross_attention``, ALGORITHMS.md 2.3, with PAMR as the released module
computes it: shift kernels applied with ``conv2d`` each step). Both run the same
number of PAMR steps (5000 by default) on the same maps (built from a VOC ground-truth sample
with ``attention_from_labels``) and image. Ours runs with each PAMR backend the device has
(``torch``; on CUDA also ``graph`` and ``triton``, the default), with the label agreement to the
released formulation. Also: PAMR alone per step and for ``--pamr-iter`` steps (ours per backend vs
the released conv2d module), the fused kernel's ``(K, T)`` settings (CUDA), a batch of 8 images
(CUDA), and kernel launches per ``--pamr-iter`` steps of each path (CUDA: counted by the torch
profiler at 100 and 200 steps and extrapolated; CPU: aten operations counted by the profiler, and
the Triton path's launches counted under Triton's interpreter in a child process). The timings
come first; every row is printed as it is made.

    python benchmarks/bench_seediff.py [--device cuda] [--quick] [--repeats 1] [--pamr-iter 5000]

``--quick``: 500 PAMR steps and fewer kernel settings (a smoke run; the targets need 5000).
Writes benchmarks/results/seediff.md: one section per device and workload (PAMR steps, ``--quick``);
a run replaces the section of its device and workload and keeps the others and the notes (a
``--quick`` run replaces no section of a full one).
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cli_args import positive_int  # noqa: E402
from results_table import device_description, directed, hardware, significant  # noqa: E402
from mmdiffseg.generators import SeeDiff  # noqa: E402
from mmdiffseg.generators.class_names import VOC_CLASSES as VOC  # noqa: E402
from mmdiffseg.generators.pamr import GRAPH_STEPS, PAMR, run_in_chunks  # noqa: E402
from mmdiffseg.generators.seediff import CROSS_NAME, SEEDIFF_SELF_LAYERS  # noqa: E402
from mmdiffseg.generators.testing import attention_from_labels, load_label_png  # noqa: E402
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402
from mmdiffseg.generators.transcriptions import ConvPAMR, seediff_mask  # noqa: E402

SAMPLE = shared_data_dir() / 'voc2012_val_samples'


# -- inputs and timing -----------------------------------------------------------------------------
def sample_inputs(device, batch=1):
    if SAMPLE.exists():
        labels = load_label_png(SAMPLE / 'SegmentationClass' / 'voc_val_20.png')
        from PIL import Image
        rgb = np.array(Image.open(SAMPLE / 'JPEGImages' / 'voc_val_20.png').convert('RGB')
                       .resize((512, 512)))
        source = 'VOC voc_val_20 (sheep)'
    else:
        yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing='ij')
        labels = (((yy - 256) ** 2 + (xx - 200) ** 2) < 120 ** 2).long() * 17
        rgb = np.where(labels[..., None].numpy() > 0, 200, 60).astype(np.uint8).repeat(3, -1)
        source = 'synthetic disk (sheep)'
    maps, names = attention_from_labels(labels[None].expand(batch, -1, -1), VOC, noise=0.1,
                                        temperature=0.5, self_resolutions=(64, 32, 16),
                                        cross_resolutions=(16, ))
    for r in SEEDIFF_SELF_LAYERS:
        maps.maps[f'seediff_self{r}'] = maps.maps.pop(f'self{r}')
    maps.maps[CROSS_NAME] = maps.maps.pop('cross16')[:, None]
    return maps.to(device), names, rgb, source


def timed(fn, repeats, device):
    """(best seconds of ``repeats`` calls of ``fn``, the last result). On CUDA after one untimed
    call (compilation, CUDA graph capture, first-use costs), the same for both sides; none on a
    CPU, where the released side alone takes minutes a call."""
    best, out = float('inf'), None
    if device.type == 'cuda':
        fn()
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best, out


def backends(device):
    if device.type != 'cuda':
        return ['torch']
    try:
        import triton  # noqa: F401
        return ['triton', 'graph', 'torch']
    except ImportError:
        return ['graph', 'torch']


# -- launches per PAMR run ------------------------------------------------------------------------
VIEW_OPS = {'aten::slice', 'aten::as_strided', 'aten::unbind', 'aten::select', 'aten::view',
            'aten::reshape', 'aten::unsqueeze', 'aten::expand', 'aten::alias', 'aten::empty',
            'aten::empty_like', 'aten::squeeze', 'aten::flatten', 'aten::detach'}
HOST_LAUNCHES = re.compile(r'^(cudaLaunchKernel|cuLaunchKernel|cudaLaunchKernelExC?'
                           r'|cuLaunchKernelEx|cudaGraphLaunch)')


def profiled_launches(fn, device):
    """``(host launches, GPU kernels)`` of ``fn()``: CUDA runtime launch calls and kernels on a
    GPU; on a CPU the top-level compute operations (each would be one kernel on a GPU)."""
    from torch.profiler import ProfilerActivity, profile
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda'
                                           else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    events = prof.events()
    if device.type == 'cuda':
        host = sum(1 for e in events if HOST_LAUNCHES.match(e.name))
        kernels = sum(1 for e in events if e.device_type == torch.autograd.DeviceType.CUDA
                      and not e.name.startswith(('Memcpy', 'Memset')))
        return host, kernels
    ops = sum(1 for e in events if e.cpu_parent is None and e.name.startswith('aten::')
              and e.name not in VIEW_OPS)
    return ops, ops


def interpreted_triton_launches(steps):
    """Launches of the fused path for ``steps`` steps on a small image, counted under Triton's
    interpreter in a child process (the variable must be set before Triton is first imported):
    ``(step launches, packing launches, largest difference to the PyTorch steps)``."""
    env = dict(os.environ, TRITON_INTERPRET='1',
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    run = subprocess.run([sys.executable, __file__, '--count-interpreted-launches', str(steps)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def count_interpreted_launches(steps):
    """The child of :func:`interpreted_triton_launches`: prints its JSON answer."""
    from mmdiffseg.generators import pamr_triton
    counts = {}

    class Counted:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            counts[self.kernel] = counts.get(self.kernel, 0) + 1
            return self.kernel[grid]

    image, mask = torch.rand(1, 3, 12, 12) * 255, torch.rand(1, 1, 12, 12)
    originals = pamr_triton._pamr_steps_kernel, pamr_triton._pack_weights_kernel
    pamr_triton._pamr_steps_kernel, pamr_triton._pack_weights_kernel = map(Counted, originals)
    fused = PAMR(steps, backend='triton')(image, mask)
    diff = (fused - PAMR(steps, backend='torch')(image, mask)).abs().max().item()
    print(json.dumps([counts[originals[0]], counts[originals[1]], diff]))


def launch_rows(device, image, steps):
    """Rows ``(path, host launches, GPU kernels, how counted)`` for one ``steps``-step run."""
    mask = (torch.rand(1, 1, 512, 512, device=device) > 0.5).float()
    weights = PAMR().affinity(image.float())
    rows = []
    if device.type == 'cuda':
        # profiled at 1 and 2 graph lengths and extrapolated (linear in the steps): a profile of
        # every kernel of 5000 steps (1.3 M on the torch path) would take minutes
        short, long = GRAPH_STEPS, 2 * GRAPH_STEPS

        def counted(make):
            for n in (short, long):
                make(n)()  # compile / warm up outside the count
            (h1, k1), (h2, k2) = (profiled_launches(make(n), device) for n in (short, long))
            scale = (steps - short) / (long - short)
            return h1 + (h2 - h1) * scale, k1 + (k2 - k1) * scale

        how = f'torch profiler at {short} and {long} steps, extrapolated'
        for backend in backends(device):
            host, kernels = counted(lambda n: lambda: PAMR(n, backend=backend).propagate(weights,
                                                                                         mask))
            rows.append((f'ours, {backend}', host, kernels, how))
        host, kernels = counted(lambda n: lambda: ConvPAMR(n).to(device)(image.float(), mask))
        return rows + [('released conv2d (incl. affinity)', host, kernels, how)]

    def ops(run_steps):  # top-level aten operations of a run; per step from 0 and 50 steps
        counts = [profiled_launches(lambda: run_steps(n), device)[0] for n in (0, 50)]
        return counts[0] + (counts[1] - counts[0]) * steps / 50

    torch_ops = ops(lambda n: PAMR(n, backend='torch').propagate(weights, mask))
    rows.append(('ours, torch', torch_ops, torch_ops, 'aten ops (profiler), per step from 50'))
    graphs = []
    run_in_chunks(lambda n, measure: graphs.append(n), steps, GRAPH_STEPS, None, 10)
    rows.append(('ours, graph', len(graphs), torch_ops, 'graph replays (driver); kernels as torch'))
    step_launches, pack, diff = interpreted_triton_launches(40)
    fused = step_launches * steps / 40 + pack
    rows.append(('ours, triton', fused, fused, f'Triton interpreter (40 steps, 12x12), per step;'
                 f' max diff to torch {diff:.1e}'))
    conv_ops = ops(lambda n: ConvPAMR(n)(image.float(), mask))
    return rows + [('released conv2d (incl. affinity)', conv_ops, conv_ops,
                    'aten ops (profiler), per step from 50')]


# -- timing rows -----------------------------------------------------------------------------------
def timing_rows(args, device, maps, names, rgb, image, record):
    """Rows ``(what, ours s, released s, extra)``, each handed to ``record`` as it is made."""
    token = maps.token_positions[0][names[0][0]][0]
    released_pamr = ConvPAMR(args.pamr_iter).to(device)
    with torch.no_grad():
        # the longest part on a CPU, and silent: a run cut short shows how far it got
        warm = ' after a warm-up' if device.type == 'cuda' else ''
        print(f'timing the released formulation, PAMR {args.pamr_iter} steps, best of '
              f'{args.repeats} repeat(s){warm} ...', flush=True)
        t_rel, rel_mask = timed(lambda: seediff_mask(maps, token, rgb, released_pamr),
                                args.repeats, device)
        print(f'released formulation: {t_rel:.3f} s an image', flush=True)
        for backend in backends(device):
            ours = SeeDiff(VOC, pamr_iter=args.pamr_iter, pamr_backend=backend).to(device)
            t_ours, labels = timed(lambda: ours(maps, image, names), args.repeats, device)
            agree = ((labels[0] != 0).cpu() == rel_mask).float().mean().item()
            record((f'SeeDiff post-processing, 512x512, PAMR {args.pamr_iter} steps '
                    f'[{backend}]', t_ours, t_rel, f'mask agreement {agree * 100:.2f}%'))

        step_iter = args.pamr_iter if device.type == 'cuda' else 50
        weights = PAMR().affinity(image.float())
        mask = (torch.rand(1, 1, 512, 512, device=device) > 0.5).float()
        conv = ConvPAMR(step_iter).to(device)
        t_conv, conv_out = timed(lambda: conv(image.float(), mask), args.repeats, device)
        reference = None
        for backend in backends(device):
            pamr = PAMR(step_iter, backend=backend)
            t, out = timed(lambda: pamr.propagate(weights, mask), args.repeats, device)
            reference = out if reference is None else reference
            diff = (out - reference).abs().max().item()
            record((f'PAMR, one step at 512x512 (1 mask) [{backend}]', t / step_iter,
                    t_conv / step_iter, f'{step_iter} steps timed; max diff to '
                    f'{backends(device)[0]} {diff:.1e}, to released '
                    f'{(out - conv_out).abs().max().item():.1e}'))
            if device.type == 'cuda':
                record((f'PAMR, {step_iter} steps at 512x512 (1 mask) [{backend}]', t, t_conv,
                        ''))
        if device.type == 'cuda' and 'triton' in backends(device):
            kernel_setting_rows(args, weights, mask, t_conv, device, record)
            batch_rows(args, device, t_rel, record)


def table_row(what: str, ours: float, released: float, notes: str) -> str:
    """A row of the results table; ours rounded up and the ratio down, the figures the targets
    read (``results_table.directed``)."""
    return (f'| {what} | {significant(ours, 4, up=True)} | {released:.4g} | '
            f'{directed(released / ours, 1, up=False)}x | {notes} |')


def kernel_setting_rows(args, weights, mask, t_conv, device, record):
    from mmdiffseg.generators.pamr_triton import fused_propagate
    settings = [(8, 64), (16, 64)] if args.quick else [(4, 32), (8, 32), (4, 64), (8, 64),
                                                       (16, 64), (16, 128), (32, 128)]
    for steps, tile in settings:
        def run():
            return fused_propagate(weights.flatten(1, 2), mask, (1, ), args.pamr_iter,
                                   steps_per_launch=steps, tile=tile)
        t, _ = timed(run, args.repeats, device)
        record((f'PAMR, {args.pamr_iter} steps at 512x512, triton K={steps} T={tile}', t,
                t_conv, ''))


def batch_rows(args, device, t_released, record):
    if args.quick:
        return
    maps, names, rgb, _ = sample_inputs(device, batch=8)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].expand(8, -1, -1, -1).to(device)
    ours = SeeDiff(VOC, pamr_iter=args.pamr_iter).to(device)
    t, _ = timed(lambda: ours(maps, image, names), args.repeats, device)
    record((f'SeeDiff post-processing, batch of 8, per image, PAMR {args.pamr_iter} steps [auto]',
            t / 8, t_released, 'released: one image at a time'))


# -- results file ---------------------------------------------------------------------------------
def write_section(path, title, text):
    """Replace the ``title`` section (``## Results: ...``) of ``path`` (keep all others)."""
    old = path.read_text() if path.exists() else '# SeeDiff post-processing benchmark\n'
    parts = re.split(r'(?m)^(?=## )', old)
    kept = [p for p in parts if not p.startswith(title + '\n')]
    results = [p for p in kept if p.startswith('## Results: ')]
    others = [p for p in kept if not p.startswith('## Results: ')]
    body = others[:1] + sorted(results + [text]) + others[1:]
    path.write_text(''.join(p if p.endswith('\n\n') else p.rstrip('\n') + '\n\n'
                            for p in body).rstrip('\n') + '\n')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--quick', action='store_true', help='500 PAMR steps, fewer settings')
    parser.add_argument('--repeats', type=positive_int, default=1)
    parser.add_argument('--pamr-iter', type=positive_int, default=None,
                        help='default 5000 (500 --quick)')
    parser.add_argument('--threads', type=positive_int, default=1, help='CPU threads (default 1)')
    parser.add_argument('--out', default=str(REPO / 'benchmarks' / 'results' / 'seediff.md'))
    parser.add_argument('--count-interpreted-launches', type=positive_int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_interpreted_launches:
        return count_interpreted_launches(args.count_interpreted_launches)
    args.pamr_iter = args.pamr_iter or (500 if args.quick else 5000)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    maps, names, rgb, source = sample_inputs(device)
    image = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
    quick = ' --quick' if args.quick else ''
    # one section per device and workload: a smoke run replaces no full run's section
    title = f'## Results: {hardware(args.device, args.threads)}, PAMR {args.pamr_iter} steps{quick}'
    date = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    command = (f'python benchmarks/bench_seediff.py --device {args.device}{quick} --repeats '
               f'{args.repeats} --pamr-iter {args.pamr_iter}')
    head = [title, '', f'`{command}` on {date}, {device_description(args.device, args.threads)}; '
            f'input: {source}; ratio = released / ours (a speed-up); best of {args.repeats} '
            f'run(s) a side'
            f'{", each after an untimed warm-up call" if device.type == "cuda" else ""}.', '',
            '| what | ours s/img | released-formulation s/img | ratio | notes |',
            '|---|---|---|---|---|']
    rows = []

    def record(row):
        """Prints ``row`` and rewrites the section with it: a run cut short keeps its rows."""
        rows.append(row)
        print(table_row(*row), flush=True)
        write_section(Path(args.out), title, '\n'.join(head + [table_row(*r) for r in rows]) + '\n')

    timing_rows(args, device, maps, names, rgb, image, record)   # the targets first
    launches = launch_rows(device, image, args.pamr_iter)
    print(*launches, sep='\n', flush=True)
    lines = head + [table_row(*r) for r in rows]
    lines += ['', f'Kernel launches per {args.pamr_iter}-step PAMR run (512x512, 1 mask):', '',
              '| path | host launches | GPU kernels | counted by |', '|---|---|---|---|']
    lines += [f'| {path} | {host:,.0f} | {kernels:,.0f} | {how} |'
              for path, host, kernels, how in launches]
    text = '\n'.join(lines) + '\n'
    write_section(Path(args.out), title, text)
    print(text)


if __name__ == '__main__':
    main()
