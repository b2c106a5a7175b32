"""Training-step cost of online labels: cold cache and warm cache against plain training, and
the warm start (``tools/prefill_labels.py``) per batch.

One process, one config (the tiny CPU Mask2Former of
``configs/mask2former/mask2former_tiny-cpu_voc12-iseg-online-128x128.py``) on the VOC samples,
three runs with batch 2 and a prefill:

* plain (``--steps`` iterations): the same model and augmentation with ground-truth labels
  (``LoadAnnotations``, ``SegDataPreProcessor``);
* online, cold cache (5 iterations: each of the 10 images once): every sample is labelled by the
  tiny random-weights SD 2.1-base + iSeg in the preprocessor;
* online, warm cache (``--steps`` iterations): labels loaded from the cache by ``LoadPseudoLabel``;
* prefill (batch 2, into an empty cache): the time of each batch of 2 images labelled by
  ``mmdiffseg.models.prefill`` (``OnlineLabeler.labels`` calls), the work a cold step does before
  its training step.

A step's cost is the time between ``before_train_iter`` and ``after_train_iter`` (workers are
off, so data loading is included), median over the steps after the first (which holds the engine
load in the cold run and the prefill): process CPU seconds on a CPU (the 2 cores are shared with
other jobs: CPU time, not wall time, is compared), wall seconds after synchronisation where the
runner trains on CUDA (rows before 2026-12-07 measured CPU time there too). "ratio to plain" =
the run's time over plain training's (a slowdown: above 1 costs more). Appends a table to
``benchmarks/results/online_training.md``.

    python benchmarks/bench_online_training.py [--steps 20] [--sd-config DIR] [--voc DIR]
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
#: where mmengine's runner trains (CUDA when there is one), and so where the prefill labels
DEVICE = 'cuda' if torch.cuda.is_available() else 'cpu'
sys.path[:0] = [str(REPO / 'tests' / 'tools'), str(REPO / 'tests')]  # e2e_helpers, sample_data

import mmdiffseg  # noqa: E402,F401
import mmdiffseg.datasets  # noqa: E402,F401
import mmdiffseg.models  # noqa: E402,F401
from mmdiffseg.attention.testing import shared_data_dir  # noqa: E402
from cli_args import positive_int  # noqa: E402
from results_table import device_description, host_description  # noqa: E402
from e2e_helpers import (TINY_ONLINE_CONFIG, make_voc_root, set_label_cache,  # noqa: E402
                         set_voc_data)
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

RESULTS = REPO / 'benchmarks' / 'results' / 'online_training.md'
VOC_IMAGES = ('voc_val_0', 'voc_val_1', 'voc_val_114', 'voc_val_166', 'voc_val_20', 'voc_val_23',
              'voc_val_293', 'voc_val_417', 'voc_val_582', 'voc_val_60')


def clock() -> float:
    """Where the runs train on CUDA wall seconds after synchronisation (process CPU time would
    miss the GPU's work), else process CPU seconds (robust to other jobs on shared cores)."""
    if DEVICE == 'cuda':
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


class StepTime(Hook):
    """Seconds of each training iteration (:func:`clock`)."""
    priority = 'VERY_HIGH'

    def __init__(self):
        self.steps = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self._start = clock()

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.steps.append(clock() - self._start)


def plain_config(cfg: Config) -> Config:
    """The same config trained on ground truth."""
    cfg = Config(cfg.to_dict())
    cfg.model.data_preprocessor = {k: v for k, v in cfg.model.data_preprocessor.items()
                                   if k not in ('engine_dtype', 'label_batch_size',
                                                'engine_kwargs')}
    cfg.model.data_preprocessor['type'] = 'SegDataPreProcessor'
    pipeline = []
    for step in cfg.train_dataloader.dataset.pipeline:
        if step['type'] == 'LoadImageLevelLabels':
            continue
        if step['type'] == 'LoadPseudoLabel':
            step = dict(type='LoadAnnotations')
        if step['type'] == 'PackPseudoLabelInputs':
            step = dict(type='PackSegInputs')
        pipeline.append(step)
    cfg.train_dataloader.dataset.pipeline = pipeline
    return cfg


def run(cfg: Config, work_dir: Path, iters: int) -> list:
    cfg = Config(cfg.to_dict())
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = iters
    cfg.train_dataloader.sampler = dict(type='DefaultSampler', shuffle=False)
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=10 ** 6)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.test_cfg = cfg.test_dataloader = cfg.test_evaluator = None
    cfg.train_cfg.val_interval = 10 ** 6
    cfg.visualizer.name = f'bench-{work_dir.name}'
    timer = StepTime()
    runner = Runner.from_cfg(cfg)
    runner.register_hook(timer)
    runner.train()
    return timer.steps


def prefill_batches(cfg: Config, cache_dir: Path) -> list:
    """Seconds (:func:`clock`) of each labelled batch of a prefill of ``cfg``'s images into
    ``cache_dir``, on the device the runs train on (the runner's: CUDA where there is one)."""
    from mmdiffseg.models.online_labeler import OnlineLabeler
    from mmdiffseg.models.prefill import config_label_caches, prefill
    cfg = Config(cfg.to_dict())
    set_label_cache(cfg, dict(config_label_caches(cfg)[0], cache_dir=str(cache_dir)))
    times, labels = [], OnlineLabeler.labels

    def timed(self, *args, **kwargs):
        start = clock()
        out = labels(self, *args, **kwargs)
        times.append(clock() - start)
        return out
    OnlineLabeler.labels = timed
    try:
        prefill(cfg, DEVICE, batch_size=2, workers=0, progress=False)
    finally:
        OnlineLabeler.labels = labels
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--steps', type=positive_int, default=20,
                        help='iterations of the plain and warm-cache runs (at least 2)')
    parser.add_argument('--sd-config', default=str(shared_data_dir() / 'sd_configs'
                                                   / 'stable-diffusion-2-1-base'))
    parser.add_argument('--voc', default=str(shared_data_dir() /
                                             'voc2012_val_samples'))
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.error('--steps must be at least 2')
    cold_steps = len(VOC_IMAGES) // 2
    torch.set_num_threads(1)
    from mmdiffseg.attention.testing import build_tiny_pipeline_folder

    tmp = Path(tempfile.mkdtemp(prefix='bench-online-'))
    sd = build_tiny_pipeline_folder(args.sd_config, tmp / 'tiny-sd21')
    root = make_voc_root(Path(args.voc), tmp / 'voc', names=VOC_IMAGES)
    cfg = Config.fromfile(str(TINY_ONLINE_CONFIG))
    set_voc_data(cfg, root)
    set_label_cache(cfg, dict(cache_dir=str(tmp / 'cache'), model=str(sd),
                              generator=cfg.tiny_label_generator.to_dict()))

    steps = {'plain': run(plain_config(cfg), tmp / 'plain', args.steps),
             'online, cold cache': run(cfg, tmp / 'cold', cold_steps),
             'online, warm cache': run(cfg, tmp / 'warm', args.steps),
             'prefill, per batch of 2 images': prefill_batches(cfg, tmp / 'prefill-cache')}
    median = {name: statistics.median(s[1:]) for name, s in steps.items()}
    rows = [f'| {name} | {len(steps[name]) - 1} | {median[name]:.3f} | '
            f'{median[name] / median["plain"]:.2f} |' for name in steps]
    header = (f'| run | steps (batches) timed | {"wall" if DEVICE == "cuda" else "CPU"} s each '
              '(median) | ratio to plain (slowdown: run / plain) |\n|---|---|---|---|')
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')
    where = (f'{device_description(DEVICE, 1)} (training and labelling), host '
             f'{host_description()}' if DEVICE == 'cuda' else device_description(DEVICE, 1))
    block = (f'\n### {stamp}, {where}, batch 2\n\n{header}\n' + '\n'.join(rows) + '\n')
    if not RESULTS.exists():
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        intro = __doc__.split('\n\n    python')[0]
        RESULTS.write_text(f'# Online labels: training-step cost\n\n{intro}\n')
    with RESULTS.open('a') as f:
        f.write(block)
    print(block)


if __name__ == '__main__':
    main()
