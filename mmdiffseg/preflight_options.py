"""Pre-flight check of the options a config gives the model, datasets and metrics (part of
:mod:`mmdiffseg.preflight`).

A misspelt key (``--cfg-options model.sd_modle=...``, ``test_evaluator.num_clases=27``) would
otherwise stop the run with a ``TypeError`` traceback when the runner builds that part, or go
unnoticed while the pre-flight check names the setting the key was meant to change. Each unknown
key is named with the nearest option of its class. So are a generator's head lists that the
model's U-Net lacks (iSeg's SD 2.1-base heads on SD 1.x), which would stop training at its first
batch.
"""
from __future__ import annotations

import inspect
from dataclasses import replace
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

from .names import nearest
from .preflight_data import Missing
from .provenance import model_path, names_a_local_path
from .registry import accepted_options, config_type, unknown_options

#: entries of a model part that other builders make (norm and activation layers, weight
#: initialisation, the assigners of ``train_cfg``): not options of a class in ``MODELS``
_BUILT_ELSEWHERE = frozenset({'norm_cfg', 'act_cfg', 'conv_cfg', 'init_cfg', 'train_cfg',
                              'test_cfg'})
#: a dataset's entries built from a registry: its transforms and the datasets it wraps
_DATASET_CHILDREN = {'pipeline': 'TRANSFORMS', 'dataset': 'DATASETS', 'datasets': 'DATASETS'}


def _nested(where: str, part: dict, registry_name: str) -> Iterator[Tuple[str, dict, str]]:
    """``part`` and the typed dicts its registry's classes build from it, at any depth: a
    model's backbone, head, losses and data preprocessor; a dataset's transforms."""
    yield where, part, registry_name
    for key, value in part.items():
        child = (None if key in _BUILT_ELSEWHERE else 'MODELS') if registry_name == 'MODELS' \
            else _DATASET_CHILDREN.get(key) if registry_name == 'DATASETS' else None
        if child is None:
            continue
        items = enumerate(value) if isinstance(value, (list, tuple)) else [(None, value)]
        for index, item in items:
            if isinstance(item, dict) and 'type' in item:
                yield from _nested(f'{where}.{key}' + ('' if index is None else f'.{index}'),
                                   item, child)


def _parts(cfg) -> Iterator[Tuple[str, dict, str]]:
    """``(config key, part, registry name)`` of the model, each dataloader's dataset and each
    metric of the evaluators, with the parts built inside them."""
    model = cfg.get('model')
    if isinstance(model, dict):
        yield from _nested('model', model, 'MODELS')
    for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = (cfg.get(name) or {}).get('dataset')
        if isinstance(dataset, dict):
            yield from _nested(f'{name}.dataset', dataset, 'DATASETS')
    for name in ('val_evaluator', 'test_evaluator'):
        metrics = cfg.get(name)
        if isinstance(metrics, dict):
            yield name, metrics, 'METRICS'
        elif isinstance(metrics, (list, tuple)):
            for index, metric in enumerate(metrics):
                if isinstance(metric, dict):
                    yield f'{name}.{index}', metric, 'METRICS'


def _unknown_key(where: str, owner: str, key: str, options: List[str]) -> Missing:
    """A key ``owner`` does not take, with the nearest of its ``options`` (set or not: a
    ``--cfg-options`` key misspelt beside the config's own is meant to change that one)."""
    near = nearest(key, options)
    return Missing(
        f'{where}: {owner} has no option {key!r}' + (f' (did you mean {near!r}?)' if near else ''),
        (f'set {where}.{near} instead of {where}.{key} (in the config or --cfg-options)'
         if near else f'remove {where}.{key} (the options of {owner}: {", ".join(options)}; '
         '--cfg-options cannot remove a key: in a derived config, give the entry whole with '
         '_delete_=True, e.g. after switching its type)'),
        [f'{where}.{key}'])


def check_generator_entry(node: dict, where: str) -> List[Missing]:
    """A ``generator`` entry (a label cache's, ``DiffusionSegmentor``'s) that is no generator
    config: ``--cfg-options ...generator="dict(type='DiffSeg')"`` gives a string, which
    passed every check and stopped the run at its first batch (an AttributeError)."""
    value = node.get('generator', {})
    owner = 'cache_dir' in node or config_type(node) == 'DiffusionSegmentor'
    if not owner or 'generator' not in node or (isinstance(value, dict) and 'type' in value):
        return []
    return [Missing(f'{where}.generator is {value!r}, no generator config (a dict with a type)',
                    f'set its options one by one (--cfg-options {where}.generator.OPTION=VALUE: '
                    '--cfg-options reads dict(...) as a string); for another generator type, a '
                    "derived config with generator=dict(_delete_=True, type='DiffSeg', ...) "
                    "(--cfg-options cannot remove the first type's options)",
                    [f'{where}.generator'])]


def check_cache_keys(cache: dict, where: str) -> List[Missing]:
    """The keys of a label cache's settings (``LoadPseudoLabel(cache=...)``): unknown ones with
    the nearest key, missing required ones."""
    from .datasets.cache_settings import CACHE_KEYS
    found = [_unknown_key(where, 'the label cache', key, list(CACHE_KEYS))
             for key in sorted(cache) if key not in CACHE_KEYS]
    for key in CACHE_KEYS[:3]:
        if key not in cache:
            found.append(Missing(f'{where}: the label cache has no {key!r} setting',
                                 f'set {where}.{key} (in the config or --cfg-options)',
                                 [f'{where}.{key}']))
    timeout = cache.get('wait_timeout', 0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout < 0:
        found.append(Missing(f'{where}.wait_timeout is {timeout!r}: seconds to wait for a label '
                             'another process is making', f'--cfg-options {where}.wait_timeout=600 '
                             '(a number of seconds, the default)', [f'{where}.wait_timeout']))
    return found


def unknown_option_keys(where: str, cls, part: dict, registry=None) -> List[Missing]:
    """The keys of ``part`` (the config of ``cls`` at ``where``) that ``cls`` does not take, each
    with its nearest option; the ``**kwargs`` a class passes to the class its ``*_type`` option
    names in ``registry`` (mmcv's ``RandomResize`` to its ``resize_type``) are that one's."""
    target = _forwarded_to(cls, part, registry)
    if target is None:
        options, keys = list(accepted_options(cls) or ()), unknown_options(cls, part)
    else:
        own = [name for name, p in inspect.signature(cls).parameters.items()
               if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        options = own + [name for name in accepted_options(target) or () if name not in own]
        keys = unknown_options(target, {k: v for k, v in part.items() if k not in own})
    retired = getattr(cls, 'RETIRED_OPTIONS', {})
    return [Missing(f'{where}: {cls.__name__} no longer takes {key!r}',
                    f'remove {where}.{key}: {retired[key]}', [f'{where}.{key}'])
            if key in retired else _unknown_key(where, cls.__name__, key, options)
            for key in sorted(keys)]


def _forwarded_to(cls, part: dict, registry) -> Optional[type]:
    """The class ``cls`` passes its ``**kwargs`` to: the one its single ``*_type`` option names
    (given in ``part``, else its default); None for any other class."""
    if registry is None or accepted_options(cls) is not None:
        return None
    params = inspect.signature(cls).parameters
    kinds = [name for name in params if name.endswith('_type')]
    if len(kinds) != 1:
        return None
    kind = part.get(kinds[0], params[kinds[0]].default)
    target = registry.get(kind) if isinstance(kind, str) else kind
    return target if inspect.isclass(target) else None


def check_options(cfg, sections: Tuple[str, ...]) -> List[Missing]:
    """Keys of the model, datasets and metrics (those under ``sections`` and the matching
    evaluators) that their class does not take; a transform's key that another step of its
    pipeline takes is sent there (the step index is off)."""
    from mmseg import registry
    found, classes = dataloader_problems(cfg, sections), {}
    for where, part, registry_name in _parts(cfg):
        top = where.split('.')[0].replace('_evaluator', '_dataloader')
        if top not in sections:
            continue
        kind = part.get('type')
        cls = getattr(registry, registry_name).get(kind) if isinstance(kind, str) else kind
        if inspect.isclass(cls):
            classes[where] = cls
            unknown = unknown_option_keys(where, cls, part, getattr(registry, registry_name))
            found += unknown or (transform_refusal(where, cls, part)
                                 if registry_name == 'TRANSFORMS' else [])
    return [_in_another_step(item, classes) for item in found]


def transform_refusal(where: str, cls, step: dict) -> List[Missing]:
    """An mmseg / mmcv transform whose constructor refuses its settings (``crop_size=[96, 96]``,
    a list where mmseg asserts a tuple): the runner would stop building the dataloader, with a
    traceback. Built once here (cheap); this package's own transforms have checks of their
    own."""
    from mmseg.registry import TRANSFORMS
    if cls.__module__.startswith('mmdiffseg'):
        return []
    try:
        TRANSFORMS.build(step)
    except Exception as err:  # noqa: BLE001  each transform asserts in its own way
        reason = str(err).strip() or type(err).__name__
        return [Missing(f'{where}: {cls.__name__} refuses its settings ({reason})',
                        f'correct {where} (in the config or --cfg-options; a tuple is written '
                        '(H,W) there, [H,W] is a list)', [where])]
    return []


#: the keys mmengine's Runner.build_dataloader reads itself, beside torch's DataLoader options
_RUNNER_DATALOADER_KEYS = ('num_batch_per_epoch', 'disable_subprocess_warning')


def dataloader_problems(cfg, sections: Tuple[str, ...]) -> List[Missing]:
    """Keys of the dataloaders in ``sections`` that neither torch's ``DataLoader`` nor mmengine
    takes (``batchsize``: a TypeError once the runner builds it), and ``persistent_workers``
    without workers (torch's ValueError)."""
    import torch
    options = [name for name in inspect.signature(torch.utils.data.DataLoader).parameters
               if name != 'self'] + list(_RUNNER_DATALOADER_KEYS)
    found = []
    for name in sections:
        loader = cfg.get(name)
        if not isinstance(loader, dict) or not name.endswith('_dataloader'):
            continue
        found += [_unknown_key(name, "torch's DataLoader", key, options)
                  for key in loader if key not in options]
        if loader.get('persistent_workers') and not loader.get('num_workers'):
            found.append(Missing(
                f'{name}: persistent_workers=True with num_workers={loader.get("num_workers")!r} '
                '(torch keeps workers only where there are some)',
                f'--cfg-options {name}.persistent_workers=False with {name}.num_workers=0',
                [f'{name}.persistent_workers']))
    return found


def _in_another_step(item: Missing, classes: dict) -> Missing:
    """``item`` (an unknown key of pipeline step ``where``) sent to the one other step of its
    pipeline that takes that key, if there is one."""
    where, key = item.where[0].rsplit('.', 1)
    pipeline, _, index = where.rpartition('.')
    takers = [other for other, cls in classes.items() if other != where and index.isdigit()
              and other.rpartition('.')[0] == pipeline and key in (accepted_options(cls) or ())]
    if len(takers) != 1:
        return item
    (other,) = takers
    return Missing(f'{where}: {classes[where].__name__} has no option {key!r}; step '
                   f'{other.rpartition(".")[2]} ({classes[other].__name__}) has',
                   f'set {other}.{key} instead of {where}.{key} (the step index is off; in the '
                   'config or --cfg-options)', item.where)


def generator_refusal(generator: dict, params, where: str, err: Exception) -> Missing:
    """A generator config its constructor refused with ``err``, naming the one option to blame
    (the config builds without it, its default standing in) where there is one."""
    from .registry import MASK_GENERATORS
    key = None
    for name, param in params.items():
        if name not in generator or param.default is param.empty:
            continue
        try:
            MASK_GENERATORS.build({k: v for k, v in generator.items() if k != name}).config_dict()
        except Exception:  # noqa: BLE001  (another option is refused too)
            continue
        key = name
        break
    return Missing(f'{where}{f".{key}={generator[key]!r}" if key else ""}: '
                   f'{err.args[0] if err.args else err}',
                   f'correct {where}.{key or "OPTION"} in the config or with --cfg-options' +
                   (f' (its default: {params[key].default!r})' if key else ''), [where])


def model_config_folder(model: str) -> Optional[Path]:
    """The folder holding ``model``'s ``unet/config.json``: a local diffusers folder, or its
    snapshot in the Hugging Face cache; None where the config is not here."""
    from huggingface_hub import try_to_load_from_cache
    try:
        folder = model_path(model)
    except ValueError:  # '~name' of no user here: the model check names it
        return None
    if folder.is_dir():
        return folder if (folder / 'unet' / 'config.json').is_file() else None
    cached = None if names_a_local_path(model) else \
        try_to_load_from_cache(model, 'unet/config.json')
    return Path(cached).parents[1] if isinstance(cached, str) else None


def capture_fit_error(model: str, capture, image_size: int = 512,
                      heads_only: bool = False) -> Optional[ValueError]:
    """The engine's refusal of a ``capture`` spec ``model``'s U-Net cannot serve at
    ``image_size`` (resolutions or layers it lacks, head indices past its heads: iSeg's SD 2.1
    head lists on SD 1.x), read from its config (no weights). None where it fits, where the
    config is not here or is of no U-Net the check reads (the engine names it after the load),
    and, ``heads_only``, where more than heads does not fit (the engine's check then names the
    image sizes that serve it)."""
    from .attention.maps import as_capture_spec
    from .attention.unet_layers import check_capture_on_config
    folder = model_config_folder(model)
    if folder is None:
        return None
    capture = as_capture_spec(capture)
    headless = replace(capture, requests=tuple(replace(r, heads=None) for r in capture.requests))
    for spec in ([headless] if heads_only else []) + [capture]:
        try:
            check_capture_on_config(folder, spec, image_size)
        except ValueError as err:
            return None if spec is headless else err
        except Exception:  # noqa: BLE001  another architecture: the engine's load names it
            return None
    return None


def check_head_layout(generator: dict, model: str, where: str) -> List[Missing]:
    """What of the generator's capture spec (``where``: its config key) ``model``'s U-Net lacks
    (:func:`capture_fit_error`): head indices, with the generator's fix; resolutions or
    layers."""
    from .registry import MASK_GENERATORS
    built = MASK_GENERATORS.build(dict(generator))
    spec = getattr(built, 'capture_spec', None)
    if spec is None:
        return []
    err = capture_fit_error(model, spec, heads_only=True)
    if err is not None:
        head_fix = getattr(built, 'head_layout_fix', None)
        fix = head_fix(where) if head_fix else f'choose head indices {model!r} has in {where}'
    else:
        err = capture_fit_error(model, spec)
        if err is None:
            return []
        fix = f'choose in {where} what {model!r} has (the resolutions or layers named)'
    return [Missing(f'{where} cannot run on {model!r}: {str(err).split("; fix: ")[0]}', fix,
                    [where])]


def check_schedule(cfg) -> List[Missing]:
    """An iteration-based run longer than its learning-rate decay: past the last ``PolyLR`` with
    ``eta_min=0`` the rate is 0, and every further iteration is spent learning nothing (a
    ``train_cfg.max_iters`` raised without ``param_scheduler``'s ``end``: mmengine says
    nothing)."""
    train_cfg = cfg.get('train_cfg') or {}
    max_iters, schedulers = train_cfg.get('max_iters'), cfg.get('param_scheduler') or []
    alone = isinstance(schedulers, dict)   # mmengine takes one scheduler without a list
    schedulers = [schedulers] if alone else list(schedulers)
    timed = [(i, s) for i, s in enumerate(schedulers)
             if isinstance(s, dict) and not s.get('by_epoch', True)]
    decays = [(i, s) for i, s in timed   # (a warm-up's end is not the decay's)
              if s.get('type') == 'PolyLR' and s.get('eta_min', 0) == 0]
    if not isinstance(max_iters, int) or not decays:
        return []
    index, last = max(decays, key=lambda pair: pair[1].get('end', float('inf')))
    end = last.get('end', float('inf'))
    if end >= max_iters or any(s.get('begin', 0) >= end for _, s in timed):
        return []   # (a scheduler after the decay sets the rate again)
    name = 'param_scheduler' if alone else f'param_scheduler.{index}'
    return [Missing(f'train_cfg.max_iters is {max_iters}, but {name} (PolyLR, eta_min 0) ends at '
                    f'iteration {end}: the iterations after it would train at learning rate 0',
                    f'--cfg-options {name}.end={max_iters} (with train_cfg.max_iters='
                    f'{max_iters}); for a shorter run, max_iters={end}',
                    [f'{name}.end', 'train_cfg.max_iters'])]
