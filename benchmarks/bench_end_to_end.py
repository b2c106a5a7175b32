"""End-to-end images per second of each method, with and without attention capture, in one run.

Per method, on random-weights Stable Diffusion built in memory from ``../shared/data/sd_configs``
(full size by default; ``--quick``: the tiny test models, a smoke run), images 512x512:

* ``plain``: the engine calls without capture (an empty spec installs nothing: the stock diffusers
  forward; for SeeDiff the stock pipeline's sampling loop);
* ``capture``: the same calls with the generator's capture spec (a row per ``--map-backend``);
* ``method``: capture plus the generator's post-processing (labels from the maps);
* ``post-processing``: the generator alone on the captured maps, timed apart (median of at least
  3) so that its share is not read off two noisy end-to-end times.

DiffSeg (SD 1.4, ``extract`` at t=300, empty prompt) and iSeg (SD 2.1-base, ``extract`` at t=100
with its prompt, Cat-Cross and noise) take ``--batch-size`` random 512x512 images; SeeDiff (SD 1.4)
generates ``--seediff-batch`` images with ``--steps`` PNDM steps and CFG 7. Times: a warm-up of
each of plain, capture and method, then ``--repeats`` rounds of the three in turn (so load from
other processes hits all alike, as in ``bench_capture.py``), the median of each; CUDA wall
seconds after synchronisation, CPU process seconds.
``--compile`` compiles the U-Net (``nn.Module.compile``) for all three runs: an opt-in speed-up,
not bit-exact against eager (with ``--map-backend triton torch``: the Triton kernels as graph
operators against the PyTorch path compiled with the U-Net, one capture graph each). Appends rows
to ``--out``.

    python benchmarks/bench_end_to_end.py [--device cuda --dtype float16]
        [--methods diffseg iseg seediff] [--batch-size 1 16] [--seediff-batch 8] [--steps 50]
        [--repeats 3] [--compile] [--quick] [--map-backend auto|triton|torch ...]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout, installed or not

from cli_args import positive_int  # noqa: E402
import mmdiffseg  # noqa: E402,F401  (registrations)
from mmdiffseg.attention import CaptureSpec, DiffusionAttentionEngine  # noqa: E402
from mmdiffseg.attention.testing import random_pipeline, shared_data_dir  # noqa: E402
from mmdiffseg.generators import DiffSeg, ISeg, SeeDiff  # noqa: E402
from bench_capture import alternated  # noqa: E402
from results_table import append_row, device_description, directed  # noqa: E402

SD_CONFIGS = shared_data_dir() / 'sd_configs'
RESULTS = REPO / 'benchmarks' / 'results' / 'end_to_end.md'
MODELS = {'diffseg': 'stable-diffusion-v1-4', 'iseg': 'stable-diffusion-2-1-base',
          'seediff': 'stable-diffusion-v1-4'}
TABLE = ('| date (UTC) | device | method | model | batch | steps | map backend | compile '
         '| plain img/s | capture img/s | method img/s | post-processing ms/img '
         '| capture / plain time | max abs generated-image diff |\n'
         '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n')


def clocked(fn, cuda: bool):
    """``fn`` as a call that returns ``(seconds, result)``: wall seconds after synchronisation on
    CUDA, process CPU seconds on a CPU."""
    def clock():
        if cuda:
            torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def call():
        start = clock()
        result = fn()
        return clock() - start, result
    return call


def timed(calls: dict, repeats: int, cuda: bool) -> dict:
    """name -> (median seconds of ``repeats`` rounds after one warm-up, the warm-up's result),
    the calls alternating (:func:`bench_capture.alternated`)."""
    first, runs = alternated({name: clocked(fn, cuda) for name, fn in calls.items()}, repeats,
                             lambda result: result[0])
    return {name: (statistics.median(runs[name]), first[name][1]) for name in calls}


def build_engine(model: str, args) -> DiffusionAttentionEngine:
    pipe = random_pipeline(SD_CONFIGS / model, full_size=not args.quick,
                           device=args.device if not args.quick else 'cpu')
    engine = DiffusionAttentionEngine.from_pipeline(pipe, f'random-{model}', device=args.device,
                                                    dtype=getattr(torch, args.dtype))
    if args.compile:
        engine.unet.compile()
    return engine


def method_calls(method: str, engine, batch: int, args):
    """(run(capture_spec) -> (images, maps), post(images, maps) -> labels, capture spec)."""
    size = 512
    if method == 'seediff':
        gen = SeeDiff(classes=['background', 'dog'], pamr_iter=10 if args.quick else 5000)
        kwargs = gen.generate_kwargs(['dog'] * batch)
        kwargs['steps'] = args.steps

        def run(spec):
            return engine.generate(kwargs['prompts'], class_names=kwargs['class_names'],
                                   steps=args.steps, guidance_scale=kwargs['guidance_scale'],
                                   seed=0, capture=spec, height=size, width=size)
        names = [['dog']] * batch
    else:
        if method == 'diffseg':
            gen, names = DiffSeg(), None
        else:
            tiny = dict(cross_heads=None, self_heads=[0]) if args.quick else {}
            gen, names = ISeg(**tiny), [['dog', 'person']] * batch
        kwargs = gen.extract_kwargs(names)
        images = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8,
                               generator=torch.Generator().manual_seed(0))

        def run(spec):
            return images, engine.extract(images, capture=spec, image_size=size, **kwargs)
    gen = gen.to(engine.device)

    def post(images, maps):
        return gen(maps.to(engine.device), images.to(engine.device), names)  # uint8: no check
    return run, post, gen.capture_spec


def bench_method(method: str, engine, batch: int, args, cuda: bool, backend: str) -> str:
    engine.map_backend = backend
    run, post, spec = method_calls(method, engine, batch, args)
    measured = timed({'plain': lambda: run(CaptureSpec()), 'capture': lambda: run(spec),
                      'method': lambda: post(*run(spec))}, args.repeats, cuda)
    (plain_s, (plain_images, _)), (capture_s, (images, maps)), (method_s, _) = (
        measured[name] for name in ('plain', 'capture', 'method'))
    post_s = timed({'post': lambda: post(images, maps)}, max(args.repeats, 3), cuda)['post'][0]
    diff = (f'{(images.float() - plain_images.float()).abs().max().item():.0f}'
            if method == 'seediff' else '-')  # generated images; extract's are the inputs
    steps = args.steps if method == 'seediff' else 1
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M')
    model = ('tiny ' if args.quick else 'random full-size ') + MODELS[method]
    device = f'{device_description(args.device, args.threads)}, {args.dtype}'
    return (f'| {stamp} | {device} | {method} | {model} | {batch} '
            f'| {steps} | {backend} | {"yes" if args.compile else "no"} | {batch / plain_s:.2f} | '
            f'{batch / capture_s:.2f} | {batch / method_s:.2f} | {1000 * post_s / batch:.1f} | '
            f'{directed(capture_s / plain_s, 3, up=True)} | {diff} |')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--methods', nargs='+', default=['diffseg', 'iseg', 'seediff'],
                        choices=['diffseg', 'iseg', 'seediff'])
    parser.add_argument('--batch-size', type=positive_int, nargs='+', default=[1],
                        help='images per extract call (DiffSeg, iSeg)')
    parser.add_argument('--seediff-batch', type=positive_int, default=1,
                        help='prompts per generate call')
    parser.add_argument('--steps', type=positive_int, default=50, help='SeeDiff sampling steps')
    parser.add_argument('--repeats', type=positive_int, default=3)
    parser.add_argument('--map-backend', nargs='+', default=['auto'],
                        choices=['auto', 'torch', 'triton'], help='a row each')
    parser.add_argument('--compile', action='store_true', help='torch.compile the U-Net')
    parser.add_argument('--threads', type=positive_int, default=1)
    parser.add_argument('--quick', action='store_true', help='tiny models (a smoke run)')
    parser.add_argument('--out', type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith('cuda')
    preamble = f'# End-to-end images per second\n\n{__doc__.split(chr(10) * 2)[1]}\n'
    engines = {}
    for method in args.methods:
        model = MODELS[method]
        if model not in engines:
            engines[model] = build_engine(model, args)
        for batch in ([args.seediff_batch] if method == 'seediff' else args.batch_size):
            for backend in args.map_backend:
                row = bench_method(method, engines[model], batch, args, cuda, backend)
                print(row, flush=True)
                # the header comes with the first row: a run that fails before it adds nothing
                append_row(args.out, row, preamble, TABLE)


if __name__ == '__main__':
    main()
