"""Test (evaluate) a segmentor with an mmseg config (mmseg's ``tools/test.py`` interface).

``CHECKPOINT`` is omitted for the training-free :class:`mmdiffseg.models.DiffusionSegmentor`
(e.g. DiffSeg's unsupervised evaluation), which has no weights to load: one given is refused, as
is a missing one for any other model, which would be scored with its random initial weights, and
one whose weights do not fit the config's model (trained for another class count: mmengine would
skip those weights and score the rest) (exit status 2).

    python tools/test.py CONFIG [CHECKPOINT] [--work-dir DIR] [--out DIR] [--show] [--show-dir DIR]
                         [--show-interval N] [--wait-time S] [--tta] [--cfg-options k=v ...]
                         [--launcher ...] [--skip-preflight | --preflight-only]

The pre-flight check of ``tools/train.py`` runs first (data, weights, the checkpoint, CUDA).
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional

import mmdiffseg  # noqa: F401  (work-arounds + registration, before any config is read)
from mmdiffseg.apis.cfg_options import CfgOptionsAction
from mmdiffseg.apis.cli import leave_process_group, run_preflight, start_runner_launcher
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.evaluation.unsupervised_metric import SEGMENT_IDS_TOOL, forget_segment_ids
from mmdiffseg.models import CheckpointMismatch, ModelInputVisualizationHook
from mmdiffseg.registry import config_type
from mmengine.config import Config

from offline_args import add_preflight_options, config_file, key_value
from train import LAUNCHERS, build_runner, load_config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (evaluate) a segmentor (mmseg + mmdiffseg)')
    parser.add_argument('config', type=config_file, help='config file')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file (omit only for the training-free '
                             'DiffusionSegmentor)')
    parser.add_argument('--work-dir', help='folder for the evaluation logs')
    parser.add_argument('--out', help='folder to save the predictions as PNGs (the metric\'s '
                                      'output_dir)')
    parser.add_argument('--show', action='store_true', help='show the predictions')
    parser.add_argument('--show-dir', help='folder to save drawn predictions')
    parser.add_argument('--show-interval', type=int, default=None,
                        help="with --show / --show-dir, draw every N-th test batch (default: the "
                             "config's hook interval, mmseg's 50; 1 for DiffusionSegmentor)")
    parser.add_argument('--wait-time', type=float, default=2,
                        help='seconds per shown image, with --show (default: 2)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, type=key_value,
                        help='override config entries, key=value (lists: key="[a,b]")')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    add_preflight_options(parser)
    parser.add_argument('--tta', action='store_true', help='test-time augmentation')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


TRAINING_FREE = 'DiffusionSegmentor'


def checkpoint_problem(cfg: Config, checkpoint: Optional[str]) -> Optional[str]:
    """Why ``checkpoint`` (the CHECKPOINT argument) cannot be evaluated with ``cfg``, or None."""
    if checkpoint is None:
        if cfg.model.get('type') == TRAINING_FREE:
            return None
        return (f'CHECKPOINT is missing: {cfg.model.get("type")} needs trained weights (without '
                'them it would be scored with its random initial weights); pass the .pth file '
                'after CONFIG')
    if cfg.model.get('type') == TRAINING_FREE:
        return (f'CHECKPOINT {checkpoint}: {TRAINING_FREE} is training-free, a checkpoint has '
                'nothing to load into it (its Stable Diffusion weights: model.sd_model); leave '
                'CHECKPOINT out, or give the config the checkpoint was trained with')
    if '://' not in checkpoint and not osp.isfile(checkpoint):  # URLs: the pre-flight check
        return f'CHECKPOINT {checkpoint}: file not found'
    return None


def draw_on_model_input(cfg: Config) -> None:
    """DiffusionSegmentor predicts at the size of the test pipeline's label (DiffSeg's protocol
    crops and resizes), so its predictions are drawn on the model's input
    (``ModelInputVisualizationHook``): mmseg's ``SegVisualizationHook`` draws on the image file,
    and stopped on the size mismatch (``default_hooks.visualization.draw=True``). Its ``draw``,
    ``interval``, ``show`` and ``wait_time`` carry over."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if cfg.model.get('type') == TRAINING_FREE and hook and \
            hook.get('type') == 'SegVisualizationHook':
        kept = ('draw', 'interval', 'show', 'wait_time')
        cfg.default_hooks['visualization'] = dict(
            type='ModelInputVisualizationHook', **{k: hook[k] for k in kept if k in hook})


def enable_visualization(cfg: Config, show: bool, show_dir, wait_time: float,
                         interval: Optional[int] = None) -> None:
    """Turn the visualization hook on (:func:`draw_on_model_input` has chosen it)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise UserInputError("--show / --show-dir draw with default_hooks.visualization, which "
                             "the config lacks: add default_hooks = dict(visualization=dict("
                             "type='SegVisualizationHook')) to it")
    hook['draw'] = True
    if interval is not None:
        hook['interval'] = interval
    every = hook.get('interval', 50 if hook['type'] == 'SegVisualizationHook' else 1)
    if every > 1:
        print(f'tools/test.py: drawing one test batch in {every} (batches {every}, {2 * every}, '
              '...: default_hooks.visualization.interval); --show-interval 1 draws them all')
    if show:
        hook['show'] = True
        hook['wait_time'] = wait_time
    if show_dir:
        cfg.visualizer['save_dir'] = show_dir


def fit_drawing_interval(runner) -> None:
    """A test set of fewer batches than the drawing hook's interval would be drawn nowhere
    (mmengine draws batches ``interval``, ``2 * interval``, ...): its last batch is drawn."""
    from mmseg.engine.hooks import SegVisualizationHook
    batches = len(runner.test_loop.dataloader)
    for hook in runner.hooks:   # (the test's drawing hooks, not a training one's interval)
        if not isinstance(hook, (SegVisualizationHook, ModelInputVisualizationHook)):
            continue
        interval = getattr(hook, 'interval', None)
        if getattr(hook, 'draw', False) and interval and batches and interval > batches:
            hook.interval = batches
            print(f'tools/test.py: the test set has {batches} batch(es), fewer than the drawing '
                  f'interval {interval}: drawing batch {batches} (--show-interval 1 draws them '
                  'all)')


def wrap_training_free(cfg: Config) -> None:
    """Ranks of the training-free DiffusionSegmentor (``tools/dist_test.sh``): torch's DDP refuses
    a model without trainable parameters, so mmengine's ``MMSeparateDistributedDataParallel``
    wraps it (it wraps only the submodules that have some; here none). A config's own
    ``model_wrapper_cfg`` is kept; without a launcher the runner wraps nothing."""
    if cfg.model.get('type') == TRAINING_FREE and cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel')


def enable_tta(cfg: Config) -> None:
    lacking = [name for name in ('tta_pipeline', 'tta_model') if name not in cfg]
    if lacking:
        raise UserInputError(f'--tta needs tta_pipeline and tta_model in the config, which lacks '
                             f'{" and ".join(lacking)}: define them as mmseg\'s dataset configs '
                             "do (mmseg::_base_/datasets/pascal_voc12.py), or drop --tta")
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args, 'tools/test.py')
    problem = checkpoint_problem(cfg, args.checkpoint)
    if problem:
        print(f'tools/test.py: error: {problem}', file=sys.stderr)
        raise SystemExit(2)
    cfg.load_from = args.checkpoint
    if args.show_interval is not None and args.show_interval < 1:
        print('tools/test.py: error: --show-interval must be >= 1', file=sys.stderr)
        raise SystemExit(2)
    if args.out is not None and os.path.exists(args.out) and not os.path.isdir(args.out):
        print(f'tools/test.py: error: --out {args.out} is a file; --out takes the folder the '
              'predictions are saved in', file=sys.stderr)
        raise SystemExit(2)
    draw_on_model_input(cfg)
    if args.tta and cfg.model.get('type') == TRAINING_FREE:
        print(f'tools/test.py: error: --tta: {TRAINING_FREE} makes labels, not the logits that '
              'test-time augmentation merges; drop --tta', file=sys.stderr)
        raise SystemExit(2)
    try:
        if args.show or args.show_dir:
            enable_visualization(cfg, args.show, args.show_dir, args.wait_time,
                                 args.show_interval)
        if args.tta:
            enable_tta(cfg)
    except UserInputError as exc:
        print(f'tools/test.py: error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    if args.out is not None:  # made on every rank: mmseg's IoUMetric makes it on rank 0 only
        os.makedirs(args.out, exist_ok=True)
        cfg.test_evaluator['output_dir'] = args.out
        if config_type(cfg.test_evaluator) != SEGMENT_IDS_TOOL:   # class labels into it now
            forget_segment_ids(args.out)
    if run_preflight(args, cfg, args.config, 'test'):
        return
    wrap_training_free(cfg)
    hooks = list(cfg.get('custom_hooks') or [])
    if args.checkpoint and dict(type='CheckpointFitHook') not in hooks:  # checked as mmengine
        cfg.custom_hooks = hooks + [dict(type='CheckpointFitHook')]       # loads it (one read)
    start_runner_launcher(cfg, 'test')
    runner = build_runner(cfg)
    if args.show or args.show_dir:
        fit_drawing_interval(runner)
    try:
        runner.test()
    except CheckpointMismatch as exc:
        print(f'tools/test.py: error: CHECKPOINT {args.checkpoint}: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    leave_process_group()


if __name__ == '__main__':
    main()
