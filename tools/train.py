"""Train a segmentor with an mmseg config (mmseg's ``tools/train.py`` interface).

``import mmdiffseg`` comes first: it applies the mmengine work-arounds (checkpoint loading under
torch >= 2.6, base-less configs on Python 3.11) and registers mmdiffseg's datasets, transforms,
models and metrics, so configs that use them resolve with or without ``custom_imports``.

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp] [--cfg-options k=v ...]
                                 [--launcher none|pytorch|slurm|mpi]
                                 [--skip-preflight | --preflight-only]

Before the runner is built, a pre-flight check (:mod:`mmdiffseg.preflight`) lists everything the
config needs that is missing (data, image-level labels, weights, CUDA) with its fix, and exits 2;
``--preflight-only`` stops after it (exit 0 when nothing is missing).
"""
import argparse
import logging
import os
import os.path as osp
import re
import sys
from typing import Optional

import mmdiffseg  # noqa: F401  (work-arounds + registration, before any config is read)
from mmdiffseg.apis.builders import read_config
from mmdiffseg.apis.cfg_options import CfgOptionsAction, merge_cfg_options
from mmdiffseg.apis.cli import (EXIT_BAD_INPUT, EXIT_WRITE_FAILED, leave_process_group,
                                own_message, run_preflight, start_runner_launcher)
from mmdiffseg.apis.io import OutputWriteError, UserInputError
from mmdiffseg.compat import quiet_stock_notices
from mmdiffseg.models import CheckpointMismatch
from mmdiffseg.preflight_checkpoints import checkpoint_meta
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner, find_latest_checkpoint
from mmseg.registry import RUNNERS
from offline_args import add_preflight_options, config_file, key_value

LAUNCHERS = ['none', 'pytorch', 'slurm', 'mpi']


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor (mmseg + mmdiffseg)')
    parser.add_argument('config', type=config_file, help='training config file')
    parser.add_argument('--work-dir', help='folder for logs and checkpoints')
    parser.add_argument('--resume', action='store_true',
                        help='resume from the latest checkpoint in the work dir (none there yet: '
                             'a new run, from the config\'s load_from weights if it sets them)')
    parser.add_argument('--amp', action='store_true',
                        help='automatic mixed precision (AmpOptimWrapper)')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, type=key_value,
                        help='override config entries, key=value (lists: key="[a,b]")')
    parser.add_argument('--launcher', choices=LAUNCHERS, default='none', help='job launcher')
    add_preflight_options(parser)
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def work_dir_for(cfg: Config, config_path: str, work_dir=None) -> str:
    """Command line, then the config's ``work_dir``, then ``./work_dirs/<config name>``."""
    if work_dir is not None:
        return work_dir
    if cfg.get('work_dir') is not None:
        return cfg.work_dir
    return osp.join('./work_dirs', osp.splitext(osp.basename(config_path))[0])


def load_config(args, tool: str = 'tools/train.py') -> Config:
    """The config with the command line's launcher, ``--cfg-options`` and work dir applied; a
    ``--cfg-options`` key nothing would read, and a config of no model (a generator config of
    the offline tools), are refused (exit status 2)."""
    try:
        cfg = read_config(args.config, 'config', 'CONFIG')
    except UserInputError as exc:   # a syntax error, a missing _base_ (mmengine's traceback)
        print(f'{tool}: error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    if 'model' not in cfg:
        what = ('a generator config, for the offline tools (tools/pseudo_label.py, segment.py and '
                'synthesize.py --config)' if 'generator' in cfg else 'no model config')
        print(f'{tool}: error: {args.config} is {what}: it has no `model`; give a model config '
              '(configs/mask2former/: e.g. diffseg-sd14_cocostuff27-unsupervised-512x512.py or '
              'iseg-sd21base_voc12-train-pseudo-masks.py to evaluate a generator)', file=sys.stderr)
        raise SystemExit(2)
    cfg.launcher = args.launcher
    try:
        merge_cfg_options(cfg, args.cfg_options)
    except UserInputError as exc:
        print(f'{tool}: error: {exc}', file=sys.stderr)
        raise SystemExit(2) from None
    cfg.work_dir = work_dir_for(cfg, args.config, args.work_dir)
    return cfg


def test_only_problem(cfg: Config, config_path: str) -> Optional[str]:
    """What makes ``cfg`` untrainable, with the fix: the training-free evaluation configs
    (``DiffusionSegmentor``) set their training loop, data and optimizer to None."""
    missing = [key for key in ('train_dataloader', 'train_cfg', 'optim_wrapper')
               if key in cfg and cfg[key] is None]
    if not missing:
        return None
    model = (cfg.get('model') or {}).get('type', 'model')
    return (f'{config_path} has no {", ".join(missing)}: it evaluates a {model} and trains '
            f'nothing; run python tools/test.py {config_path}')


def enable_amp(cfg: Config) -> None:
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':
        print_log('AMP is already enabled in the config', logger='current', level=logging.WARNING)
        return
    if wrapper != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper, the config has {wrapper}')
    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.loss_scale = 'dynamic'


#: the names of the checkpoints mmengine's CheckpointHook saves, with their iteration or epoch
NUMBERED_CHECKPOINT = re.compile(r'(?:iter|epoch)_(\d+)\.pth$')


def latest_in_work_dir(work_dir: str) -> Optional[str]:
    """The checkpoint ``--resume`` continues from: the one mmengine's ``last_checkpoint`` names,
    read in the work dir itself (it records the path the run had: another folder once the work
    dir was moved or copied), else the work dir's highest numbered one (the named one deleted),
    else the named one where it is (outside the work dir), else None."""
    recorded = find_latest_checkpoint(work_dir)
    if recorded is not None and osp.isfile(osp.join(work_dir, osp.basename(recorded))):
        return osp.join(work_dir, osp.basename(recorded))
    numbered = sorted((int(m.group(1)), name)
                      for name in (os.listdir(work_dir) if osp.isdir(work_dir) else [])
                      for m in [NUMBERED_CHECKPOINT.fullmatch(name)] if m)
    if numbered:
        return osp.join(work_dir, numbered[-1][1])
    return recorded if recorded is not None and osp.isfile(recorded) else None


def resume_from_work_dir(cfg: Config) -> Optional[str]:
    """``--resume``: continue the run in the work dir, from :func:`latest_in_work_dir`. mmengine
    resumes from ``load_from`` when a config sets it (the fine-tune configs: the synthetic run's
    last checkpoint, the start weights), so ``load_from`` becomes that checkpoint. With none, a
    new run starts (from ``load_from``'s weights only). The returned line, for the run's log,
    says so, or names a checkpoint outside the work dir; None otherwise."""
    latest = latest_in_work_dir(cfg.work_dir)
    cfg.resume = latest is not None
    if not cfg.resume:
        start = f"load_from's weights ({cfg.load_from})" if cfg.get('load_from') else 'scratch'
        return f'--resume: no checkpoint in {cfg.work_dir} yet; a new run starts from {start}'
    cfg.load_from = latest
    if osp.dirname(osp.abspath(latest)) != osp.abspath(cfg.work_dir):
        return (f'--resume: {cfg.work_dir} holds no checkpoint; its last_checkpoint names '
                f'{latest}, which the run resumes from')
    return None


def start_weights_note(cfg: Config) -> Optional[str]:
    """A new run's ``load_from`` that is an earlier numbered checkpoint of the run that saved it
    than the one that folder's ``last_checkpoint`` names (e.g. after a longer synthetic schedule
    than the fine-tune config's ``iter_20000.pth``): a line for the run's log, else None."""
    if cfg.resume or not isinstance(cfg.get('load_from'), str) or \
            not osp.isfile(cfg.load_from):
        return None
    last = latest_in_work_dir(osp.dirname(osp.abspath(cfg.load_from)))
    numbered = [NUMBERED_CHECKPOINT.fullmatch(osp.basename(path or '')) for path in
                (cfg.load_from, last)]   # (a best_*.pth is a choice, not left behind)
    if not all(numbered) or int(numbered[0].group(1)) >= int(numbered[1].group(1)):
        return None
    return (f'load_from is {cfg.load_from}, but the run that saved it went on to {last} (its '
            f'last_checkpoint): this run starts from the earlier weights; to start from the '
            f'last, --cfg-options load_from={last}')


def finished_run_note(cfg: Config) -> Optional[str]:
    """A resumed checkpoint at ``train_cfg.max_iters`` already (a rerun of a finished run):
    mmengine trains nothing and says nothing; the line the tool ends with, else None."""
    done = checkpoint_meta(cfg.load_from).get('iter') if cfg.resume else None
    max_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    if not isinstance(done, int) or not isinstance(max_iters, int) or done < max_iters:
        return None
    return (f'{cfg.load_from} is at iteration {done}, train_cfg.max_iters is {max_iters}: the run '
            'is finished, nothing to train (to train longer, start a new run from its weights: '
            f'--cfg-options load_from={cfg.load_from} with a longer schedule, without --resume)')


def build_runner(cfg: Config):
    runner = Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
    quiet_stock_notices(runner.logger)
    return runner


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args)
    problem = test_only_problem(cfg, args.config)
    if problem:
        print(f'tools/train.py: error: {problem}', file=sys.stderr)
        raise SystemExit(2)
    if args.amp:
        enable_amp(cfg)
    cfg.resume = bool(args.resume or cfg.get('resume'))  # mmengine's resume=True counts too
    notes = [resume_from_work_dir(cfg) if args.resume else None, start_weights_note(cfg)]
    finished = finished_run_note(cfg)
    if run_preflight(args, cfg, args.config, 'train'):
        return
    if finished:   # mmengine would walk the data loader through every iteration done, then stop
        print_log(finished, logger='current', level=logging.WARNING)
        return
    start_runner_launcher(cfg, 'train')
    runner = build_runner(cfg)
    for note in filter(None, notes):
        print_log(note, logger='current', level=logging.WARNING)  # in the run's log
    try:
        runner.train()
    except CheckpointMismatch as exc:  # a config listing CheckpointFitHook (the fine-tunes)
        print(f'tools/train.py: error: load_from {cfg.load_from}: {exc}', file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except UserInputError as exc:  # a label cache refused mid-run (no pre-flight, a race)
        print(f'tools/train.py: error: {own_message(exc)}', file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None
    except OutputWriteError as exc:  # the label cache's disk full, read-only...: one line
        print(f'tools/train.py: error: {own_message(exc)}; the checkpoints and labels written so '
              f'far are kept: fix that, then rerun with --resume', file=sys.stderr)
        raise SystemExit(EXIT_WRITE_FAILED) from None
    leave_process_group()


if __name__ == '__main__':
    main()
