"""``CheckpointFitHook``: a checkpoint whose weights do not fit the model is refused as mmengine
loads it, before its weights reach the model. mmengine's loading is non-strict: a weight of
another shape (a checkpoint trained for another class count) or one the checkpoint lacks (another
model's, or its keys named otherwise) is logged and left at its random initial value, and the run
scores the rest. ``tools/test.py`` adds this hook when it is given a
CHECKPOINT; the fine-tune configs list it in ``custom_hooks`` (their ``load_from``), as may any
config for its own runs.
"""
from __future__ import annotations

import re
from typing import Optional

from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import BaseLoop
from mmseg.registry import HOOKS


class CheckpointMismatch(ValueError):
    """A checkpoint whose weights do not fit the model (the message names one and both shapes)."""


def fit_problem(model, checkpoint: dict) -> Optional[str]:
    """The weights of a loaded ``checkpoint`` whose shapes differ from ``model``'s, or else the
    model's parameters it lacks (the first, and how many more), or None. Keys as mmengine
    revises them (``module.`` dropped); weights only the checkpoint has, and buffers it lacks
    (an older checkpoint's BatchNorm counters), are mmengine's to report."""
    weights = {re.sub(r'^module\.', '', k): v
               for k, v in checkpoint.get('state_dict', checkpoint).items()}
    model = model.module if is_model_wrapper(model) else model
    # --tta's SegTTAModel holds the model as ``module``: mmengine loads into that one too
    model = model.module if isinstance(model, BaseTTAModel) else model
    own = model.state_dict()
    wrong = [f'{k} is {list(v.shape)} there, {list(own[k].shape)} in the model'
             for k, v in weights.items() if k in own and v.shape != own[k].shape]
    if not wrong:
        params = [k for k, _ in model.named_parameters() if k in own]
        wrong = [f'it lacks {k}' for k in params if k not in weights]
        if wrong:
            wrong[0] += f', of the {len(params)} parameters of the model'
    if not wrong:
        return None
    return wrong[0] + (f' (and {len(wrong) - 1} more)' if len(wrong) > 1 else '')


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """Raise :class:`CheckpointMismatch` for a loaded checkpoint that does not fit the model: in
    a test, the checkpoint to score; in training, the start weights (``load_from``, as the
    fine-tune configs list this hook) or the checkpoint resumed."""

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        problem = fit_problem(runner.model, checkpoint)
        if not problem:
            return
        if not isinstance(getattr(runner, '_train_loop', None), BaseLoop):  # Runner.train's
            fix = 'give the config it was trained with'
        elif getattr(runner, '_resume', False):  # its optimizer state cannot fit either
            fix = ('resume a run of this config (its work dir), or start a new run (without '
                   '--resume or resume=True)')
        else:
            fix = ('load_from a checkpoint of this model trained on its classes (a fine-tune: '
                   'the synthetic-only run of the same config family), or, to keep only the '
                   'weights that fit (the rest random), remove CheckpointFitHook from '
                   'custom_hooks')
        raise CheckpointMismatch(
            f"the checkpoint's weights do not fit the model of the config: {problem}; it was "
            'trained with another config (another class count, another model?), or is no '
            f'whole checkpoint of this one: {fix}')
