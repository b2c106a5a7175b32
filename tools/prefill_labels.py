"""Label every training image of a config into its online label cache before training (warm
start): the training run then loads every label and generates none.

    python tools/prefill_labels.py CONFIG [--cfg-options k=v ...] [--batch-size N]
        [--dtype float16] [--device cuda] [--workers N] [--compile [BACKEND]]
        [--skip-preflight | --preflight-only]
    bash tools/dist_prefill.sh CONFIG 8 [options]   # the check once, then one share per GPU

Uses the config's train dataset, its label cache (``LoadPseudoLabel(cache=...)``), its
``DiffusionLabelPreprocessor`` engine settings and the same labelling code as training. Each rank
takes its share; rerun after an interruption to resume (cached images are skipped). First, as
``tools/train.py`` does, a pre-flight check lists whatever of the training data, its image-level
labels and the Stable Diffusion weights is missing, with the fixes (exit status 2).
"""
import argparse
import sys

from offline_args import (COMPILE_BACKENDS, DTYPE_NAMES, add_preflight_options, config_file, count,
                          key_value, positive_int)


def parse_args(argv=None):
    from mmdiffseg.apis.cfg_options import CfgOptionsAction
    parser = argparse.ArgumentParser(
        description='Fill the online label cache of a training config (warm start)')
    parser.add_argument('config', type=config_file, help='training config with online labels')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, default=None,
                        type=key_value,
                        help='override config entries, key=value (give the same as to train.py, '
                             'so that the cache and model are the training run\'s; default: none)')
    parser.add_argument('--batch-size', type=positive_int, default=None,
                        help='images per engine call (default: the preprocessor\'s '
                             'label_batch_size)')
    parser.add_argument('--dtype', default=None, choices=DTYPE_NAMES,
                        help='engine precision (default: the preprocessor\'s engine_dtype)')
    parser.add_argument('--device', default=None,
                        help='cpu, cuda or cuda:N (default: cuda when available, one GPU per '
                             'rank under a launcher)')
    parser.add_argument('--workers', type=count, default=None,
                        help='dataloader workers reading images (default: the train '
                             'dataloader\'s num_workers)')
    parser.add_argument('--compile', nargs='?', const='inductor', default=None,
                        choices=COMPILE_BACKENDS, metavar='BACKEND',
                        help='torch.compile the U-Net, as the offline tools\' --compile (sets '
                             'model.data_preprocessor.engine_kwargs.compile_unet; default: the '
                             'config\'s)')
    add_preflight_options(parser)
    parser.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='several GPUs: torchrun --nproc-per-node N ... --launcher pytorch '
                             '(default: none)')
    args = parser.parse_args(argv)
    if args.device is not None:
        import torch
        try:
            torch.device(args.device)
        except RuntimeError:
            parser.error(f'--device {args.device!r} is not a device: use cpu, cuda or cuda:N')
    return args


def main(argv=None):
    args = parse_args(argv)
    import mmdiffseg  # noqa: F401  (work-arounds + registrations)
    from mmengine.registry import init_default_scope

    from mmdiffseg.apis.builders import pick_device, read_config
    from mmdiffseg.apis.cfg_options import merge_cfg_options
    from mmdiffseg.apis.cli import EXIT_INTERRUPTED, check_launcher, start_launcher
    from mmdiffseg.cuda_check import auto_device
    from mmdiffseg.models.prefill import prefill, prefill_cache
    from mmdiffseg.preflight import ensure_ready

    cfg = read_config(args.config, 'config', 'CONFIG')
    merge_cfg_options(cfg, args.cfg_options)
    prefill_cache(cfg, args.config)   # before the pre-flight checks what it would not read
    if args.compile:
        cfg.merge_from_dict({'model.data_preprocessor.engine_kwargs.compile_unet':
                             dict(backend=args.compile)})
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if not args.skip_preflight:
        ensure_ready(cfg, args.config, 'prefill', dtype=args.dtype, device=args.device)
    if args.preflight_only:
        print(f'Pre-flight check: {args.config} can prefill here (nothing was started).',
              flush=True)
        return 0
    device = pick_device(args.device or auto_device())
    check_launcher(args.launcher, 'prefill_labels')
    start_launcher(args.launcher, device)
    summary = prefill(cfg, device, batch_size=args.batch_size, dtype=args.dtype,
                      workers=args.workers)
    from mmengine.dist import get_rank
    if get_rank() == 0 or summary.rank is not None:  # all ranks' counts, or this one's share
        print(summary, flush=True)
    return EXIT_INTERRUPTED if summary.interrupted else 0  # run_cli leaves the process group


if __name__ == '__main__':
    parse_args()  # --help and usage errors answer before any config, data or model is read
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main))
