"""What the offline tools' command lines share: engine/generator/run options, the launcher, and
turning known errors into a clear message and an exit status."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from mmengine.dist import init_dist

from .io import OutputWriteError, UserInputError

DEFAULT_MODEL = 'stabilityai/stable-diffusion-2-1-base'
#: exit statuses
EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 3


def add_engine_args(parser: argparse.ArgumentParser, default_model: str = DEFAULT_MODEL) -> None:
    parser.add_argument('--model', default=None,
                        help='Stable Diffusion hub id or diffusers folder (default: the --config '
                             f'preset\'s model_id, else {default_model})')
    parser.add_argument('--device', default='cpu', help='cpu, cuda or cuda:N (default: cpu)')
    parser.add_argument('--dtype', default='float32', choices=['float32', 'float16', 'bfloat16'])
    parser.add_argument('--batch-size', type=int, default=4,
                        help='items per engine pass (GPU throughput grows with it)')


def add_generator_args(parser: argparse.ArgumentParser, default_method: str) -> None:
    parser.add_argument('--method', default=None,
                        help=f'iseg, seediff or diffseg (default: {default_method} unless --config)')
    parser.add_argument('--config', default=None,
                        help='generator preset config (a file with `generator = dict(...)`)')
    parser.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                        help='override generator options, e.g. pamr_iter=10')


def generator_and_model(args, default_method: str, default_model: str = DEFAULT_MODEL):
    """``(generator config, model)`` from ``--method`` / ``--config`` / ``--cfg-options`` and
    ``--model`` (else the preset's ``model_id``, else ``default_model``)."""
    from .builders import generator_config, parse_options
    method = args.method or (None if args.config else default_method)
    gen_cfg, preset_model = generator_config(method, args.config, parse_options(args.cfg_options))
    return gen_cfg, args.model or preset_model or default_model


def add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--out', required=True, help='output folder (created; resumable)')
    parser.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='several GPUs: each rank takes its shard (torchrun ... --launcher pytorch)')


def start_launcher(launcher: str, device: str) -> None:
    """Join the process group: mmengine's ``init_dist`` (NCCL) on GPUs; for CPU ranks under
    torchrun, torch.distributed's gloo backend (mmengine's launcher would pick a GPU)."""
    if launcher == 'none':
        return
    if launcher == 'pytorch' and not str(device).startswith('cuda'):
        import torch.distributed as dist
        dist.init_process_group('gloo')
    else:
        init_dist(launcher)


def run_cli(main: Callable[[Optional[List[str]]], object],
            argv: Optional[List[str]] = None) -> int:
    """Run a tool's ``main``; bad input and failed writes print one clear line on stderr and
    exit non-zero (2 and 3) instead of a traceback."""
    try:
        main(argv)
    except UserInputError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except OutputWriteError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return EXIT_WRITE_FAILED
    return 0


def resolve_class_arg(value: str) -> List[str]:
    """``--classes``: a dataset name (``voc``, ``cityscapes``, ...) or ``name[,name...]``."""
    from ..datasets.class_names import DATASET_CLASSES
    if value in DATASET_CLASSES:
        return list(DATASET_CLASSES[value])
    return [name.strip() for name in value.split(',') if name.strip()]
