"""Host time of opening and closing a capture session (``capture_attention`` without a forward) on
the full-size SD 2-base U-Net, against the diffusers-wide formulation it replaced: find the layers
through ``unet.attn_processors`` and install / restore every processor with
``unet.set_attn_processor``, which walk the U-Net's ~1000 modules each time.

Every batch of ``engine.extract`` / ``engine.generate`` opens a session, and the GPU waits for its
host time (at batch 1 a plain SD forward is itself ~27 ms on an H200: ``results/capture.md``). The
U-Net is built on the ``meta`` device: no weights, the same modules. Process CPU milliseconds,
median of ``--repeats`` after a warm-up, for each generator's capture spec; appends a table to
``benchmarks/results/capture_setup.md``.

    python benchmarks/bench_capture_setup.py [--repeats 50]
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_capture import SD_CONFIG, generator_specs  # noqa: E402
from cli_args import positive_int  # noqa: E402
from results_table import append_section, host_description  # noqa: E402
from mmdiffseg.attention import capture, unet_attention_layers  # noqa: E402


@contextlib.contextmanager
def walking_session(unet, spec, latent_size, batch_size):
    """The session as opened before: processors read with ``attn_processors``, installed and
    restored with ``set_attn_processor`` (the layer list comes from the cached walk here; the old
    code walked ``attn_processors`` once more for it: this side is a lower bound)."""
    layers = unet_attention_layers(unet, latent_size)
    original = unet.attn_processors
    session = capture.CaptureSession(spec, layers, batch_size)
    installed = dict(original)
    by_name = {layer.name: layer for layer in layers}
    for name, sinks in session.layer_sinks.items():
        key = f'{name}.processor'
        installed[key] = capture.CaptureProcessor(session, by_name[name], sinks, original[key])
    unet.set_attn_processor(installed)
    try:
        yield session
    finally:
        unet.set_attn_processor(dict(original))


def cpu_ms(open_session, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):
        start = time.process_time()
        with open_session():
            pass
        times.append((time.process_time() - start) * 1e3)
    return statistics.median(times[1:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeats', type=positive_int, default=50)
    parser.add_argument('--out', type=Path, default=HERE / 'results' / 'capture_setup.md')
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from diffusers import UNet2DConditionModel
    with torch.device('meta'):
        config = UNet2DConditionModel.load_config(SD_CONFIG / 'unet')
        unet = UNet2DConditionModel.from_config(config)
    rows = []
    for name, spec in generator_specs(full_size=True).items():
        ours = cpu_ms(lambda: capture.capture_attention(unet, spec, 64, 16), args.repeats)
        walking = cpu_ms(lambda: walking_session(unet, spec, 64, 16), args.repeats)
        rows.append(f'| {name} | {ours:.2f} | {walking:.2f} | {walking / ours:.1f}x |')
        print(rows[-1])
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    append_section(args.out, 'Capture session: host time to open and close',
                   __doc__.split('\n\n')[0].replace('\n', ' '),
                   f'{stamp}: {host_description()}, torch {torch.__version__}, 1 thread, median of '
                   f'{args.repeats}',
                   ('spec', 'ours ms', 'walking the U-Net ms',
                    'ratio (walking / ours: a speed-up)'), rows)


if __name__ == '__main__':
    main()
