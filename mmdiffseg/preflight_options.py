"""Pre-flight check of the options a config gives the model, datasets and metrics (part of
:mod:`mmdiffseg.preflight`).

A misspelt key (``--cfg-options model.sd_modle=...``, ``test_evaluator.num_clases=27``) would
otherwise stop the run with a ``TypeError`` traceback when the runner builds that part, or go
unnoticed while the pre-flight check names the setting the key was meant to change. Each unknown
key is named with the nearest option of its class.
"""
from __future__ import annotations

import inspect
from typing import Iterator, List, Optional, Set, Tuple

from .preflight_data import Missing, nearest

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_options(cls) -> Optional[Set[str]]:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` up its base classes;
    None where a class takes any (``**kwargs`` up to ``object``) or has no signature."""
    names: Set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        if klass is object:
            return None
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return None
        names |= {name for name, p in params.items() if p.kind in _NAMED} - {'self'}
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return names
    return None


def _parts(cfg) -> Iterator[Tuple[str, dict, str]]:
    """``(config key, part, registry name)`` of the model, each dataloader's dataset and each
    metric of the evaluators."""
    model = cfg.get('model')
    if isinstance(model, dict):
        yield 'model', model, 'MODELS'
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(name) or {}).get('dataset')
        if isinstance(dataset, dict):
            yield f'{name}.dataset', dataset, 'DATASETS'
    for name in ('val_evaluator', 'test_evaluator'):
        metrics = cfg.get(name)
        if isinstance(metrics, dict):
            yield name, metrics, 'METRICS'
        elif isinstance(metrics, (list, tuple)):
            for index, metric in enumerate(metrics):
                if isinstance(metric, dict):
                    yield f'{name}.{index}', metric, 'METRICS'


def check_options(cfg, sections: Tuple[str, ...]) -> List[Missing]:
    """Keys of the model, datasets and metrics (those under ``sections`` and the matching
    evaluators) that their class does not take."""
    from mmseg import registry
    found = []
    for where, part, registry_name in _parts(cfg):
        top = where.split('.')[0].replace('_evaluator', '_dataloader')
        if top not in sections:
            continue
        kind = part.get('type')
        cls = getattr(registry, registry_name).get(kind) if isinstance(kind, str) else kind
        options = accepted_options(cls) if inspect.isclass(cls) else None
        if options is None:
            continue
        for key in sorted(k for k in part if k != 'type' and k not in options
                          and not (k.startswith('_') and k.endswith('_'))):  # _scope_
            near = nearest(key, sorted(options))
            found.append(Missing(
                f'{where}: {cls.__name__} has no option {key!r}' +
                (f' (did you mean {near!r}?)' if near else ''),
                (f'set {where}.{near} instead of {where}.{key} (in the config or --cfg-options)'
                 if near else f'remove {where}.{key} (the options of {cls.__name__}: '
                 f'{", ".join(sorted(options))})'), [f'{where}.{key}']))
    return found
