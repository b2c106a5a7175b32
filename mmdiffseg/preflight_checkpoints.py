"""Pre-flight checks of the checkpoint a run starts from (part of :mod:`mmdiffseg.preflight`):
``load_from`` as a fine-tune's start weights, or as the checkpoint a ``resume=True`` run carries
on, and the classes a checkpoint was trained on (what tools/test.py compares its test set with).
Checkpoints are read without their weights (memory-mapped)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Tuple

from .preflight_classes import _first_difference, _same, dataset_classes, describe
from .preflight_data import Missing
from .preflight_options import check_schedule


def checkpoint_entry(path, key: str):
    """Entry ``key`` of a checkpoint file (``meta``: its iteration, ``dataset_meta``...;
    ``param_schedulers``), read without its weights; None where it has none or cannot be read
    here (the checkpoint check names a missing file, the runner's load an unreadable one)."""
    import torch
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    try:
        try:
            state = torch.load(path, map_location='cpu', mmap=True, weights_only=False)
        except RuntimeError:   # saved in the legacy format, which cannot be memory-mapped
            state = torch.load(path, map_location='cpu', weights_only=False)
        return state.get(key)
    except Exception:  # noqa: BLE001  (the runner's load says why)
        return None


def checkpoint_meta(path) -> dict:
    """mmengine's ``meta`` of a checkpoint file, ``{}`` where there is none."""
    meta = checkpoint_entry(path, 'meta')
    return meta if isinstance(meta, dict) else {}


def checkpoint_classes(path) -> Optional[List[str]]:
    """The classes a checkpoint was trained on (``meta.dataset_meta``), or None."""
    classes = (checkpoint_meta(path).get('dataset_meta') or {}).get('classes')
    try:
        names = [str(name) for name in ([] if classes is None else classes)]  # (numpy too)
    except TypeError:  # classes of another form
        return None
    return names or None


def check_start_weights(load_from: str, trained: List[str],
                        datasets: List[Tuple[str, dict]]) -> List[Missing]:
    """A new run's start weights (``load_from``: a fine-tune's) trained on as many classes as
    the training set, but other ones or in another order: mmengine loads the classifier's rows
    as they are, each then starting as another class's. (Another class count: mmengine skips the
    weights of another shape, a transfer that trains the classifier afresh; a config listing
    ``CheckpointFitHook`` refuses it as it loads.)"""
    where, classes = next(((where, classes) for where, dataset in datasets
                           if where.startswith('train_dataloader')
                           for classes in [dataset_classes(dataset)] if classes), (None, None))
    if not classes or len(classes) != len(trained) or _same(classes, trained):
        return []
    return [Missing(
        f'load_from ({load_from}) was trained on the classes {describe(trained)}, but {where} '
        f'has {describe(classes)}'
        f'{_first_difference(classes, trained, f"in {where}", "in load_from")}: each row of '
        "its classifier would start as another class's",
        f'fine-tune from a checkpoint trained on the classes of {where}, in their order (its '
        'synthetic-only run with the same class list), or give the dataset the classes of '
        f'load_from in their order ({where}.metainfo=dict(classes=[...]))', ['load_from'])]


def _of_work_dir(checkpoint: str, work_dir) -> bool:
    """Whether ``checkpoint`` is the work dir's run's: in it, or the one its
    ``last_checkpoint`` names (a run whose checkpoints are elsewhere, which ``--resume``
    continues)."""
    if not isinstance(work_dir, str):
        return False
    try:
        named = Path(work_dir, 'last_checkpoint').read_text().strip()
    except OSError:
        named = ''
    path = os.path.abspath(checkpoint)
    return os.path.dirname(path) == os.path.abspath(work_dir) or \
        bool(named) and os.path.abspath(named) == path


def check_resumed_run(cfg) -> List[Missing]:
    """``resume=True`` with a ``load_from`` of another run than the work dir's that is at
    ``train_cfg.max_iters`` already: mmengine resumes that run and ends at once, nothing
    trained, exit 0 (a fine-tune config's synthetic checkpoint, where ``resume=True`` was meant
    to continue the fine-tune)."""
    load_from, work_dir = cfg.get('load_from'), cfg.get('work_dir')
    max_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    if not cfg.get('resume') or not isinstance(load_from, str) or \
            not isinstance(max_iters, int) or _of_work_dir(load_from, work_dir):
        return []
    done = checkpoint_meta(load_from).get('iter')
    if not isinstance(done, int) or done < max_iters:
        return []
    return [Missing(
        f"resume=True resumes load_from ({load_from}), another run's checkpoint, at iteration "
        f'{done}, but train_cfg.max_iters is {max_iters}: the run would end at once with '
        'nothing trained',
        'to start a new run from its weights (a fine-tune), resume=False; to continue the run '
        "of the work dir, tools/train.py --resume (it resumes the work dir's latest checkpoint)",
        ['resume', 'load_from'])]


def check_resumed_schedule(cfg) -> List[Missing]:
    """A resumed run longer than the learning-rate decay its checkpoint records: mmengine
    restores each scheduler's ``end`` from the checkpoint, whatever the config says, so past the
    last ``PolyLR`` with ``eta_min`` 0 every iteration trains at learning rate 0 (a raised
    ``train_cfg.max_iters`` with ``--resume``, ``param_scheduler``'s ``end`` raised too)."""
    max_iters = (cfg.get('train_cfg') or {}).get('max_iters')
    load_from = cfg.get('load_from')
    if not cfg.get('resume') or not isinstance(max_iters, int):
        return []
    schedulers = checkpoint_entry(load_from, 'param_schedulers')
    decays = [(s['end'], i) for i, s in enumerate(schedulers) if isinstance(s, dict) and
              'power' in s and s.get('eta_min') == 0 and not s.get('by_epoch', True)
              and isinstance(s.get('end'), int)] if isinstance(schedulers, list) else []
    done = checkpoint_meta(load_from).get('iter')
    if not decays or max(decays)[0] >= max_iters or not isinstance(done, int) or \
            done >= max_iters:
        return []
    end, index = max(decays)
    return [Missing(
        f'the run resumed from {load_from} keeps its learning-rate schedule, whose PolyLR '
        f'(eta_min 0) ends at iteration {end}: its iterations {end + 1} to '
        f'train_cfg.max_iters {max_iters} would train at learning rate 0 (mmengine restores the '
        "schedule's end from the checkpoint, not the config's)",
        f'to train longer, start a new run from its weights: --cfg-options load_from={load_from} '
        f'train_cfg.max_iters={max_iters} param_scheduler.{index}.end={max_iters}, without '
        f'--resume or resume=True; or resume with max_iters at most {end}',
        ['train_cfg.max_iters', 'resume'])]


def check_run_start(cfg, trained: Optional[List[str]],
                    datasets: List[Tuple[str, dict]]) -> List[Missing]:
    """What a training run starts from: a resumed run's checkpoint (another run's finished one,
    the schedule it keeps) or else the config's schedule and a fine-tune's start weights
    (``trained``: the classes ``load_from`` was trained on)."""
    if cfg.get('resume') and checkpoint_entry(cfg.get('load_from'), 'param_schedulers'):
        return check_resumed_run(cfg) + check_resumed_schedule(cfg)
    missing = check_schedule(cfg) + (check_resumed_run(cfg) if cfg.get('resume') else [])
    if trained and not cfg.get('resume'):
        missing += check_start_weights(cfg.load_from, trained, datasets)
    return missing
