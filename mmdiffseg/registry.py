"""Registries of mmdiffseg.

Mask generators get a registry of their own (a child of mmseg's ``MODELS`` so ``mmseg`` configs
can build them); transforms, datasets, metrics and models are registered directly in mmseg's
registries so stock configs with ``default_scope='mmseg'`` find them after
``custom_imports=dict(imports=['mmdiffseg'])``.
"""
import inspect
from typing import Dict, List, Mapping, Optional, Tuple

from mmengine.registry import DefaultScope, Registry, build_from_cfg
from mmseg.registry import MODELS


def config_type(cfg) -> str:
    """The class name a config dict builds, without a registry scope (``'mmseg.LoadPseudoLabel'``
    -> ``'LoadPseudoLabel'``; a class given as ``type`` -> its name); ``''`` for anything else."""
    kind = cfg.get('type') if isinstance(cfg, Mapping) else None
    if inspect.isclass(kind):
        return kind.__name__
    return kind.rsplit('.', 1)[-1] if isinstance(kind, str) else ''


_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


def accepted_options(cls) -> Optional[Tuple[str, ...]]:
    """The keyword arguments ``cls(...)`` (a class or a function) takes, following ``**kwargs``
    up its base classes, in signature order (the class's own first); None where it takes any
    (``**kwargs`` up to ``object``) or has no signature."""
    names: Dict[str, None] = {}
    inits = [klass.__dict__.get('__init__') for klass in cls.__mro__] \
        if inspect.isclass(cls) else [cls]
    for init in inits:
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters
        except (TypeError, ValueError):
            return None
        names.update((name, None) for name, p in params.items()
                     if p.kind in _NAMED and name != 'self')
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return tuple(names)
    return None


def unknown_options(cls, options: Mapping) -> List[str]:
    """The keys of ``options`` that ``cls`` does not take (``type`` and mmengine's ``_scope_``
    aside): none when it takes any."""
    accepted = accepted_options(cls)
    if accepted is None:
        return []
    return [key for key in options if key != 'type' and key not in accepted
            and not (key.startswith('_') and key.endswith('_'))]


def unknown_options_error(cls, options: Mapping) -> TypeError:
    """The error of ``cls`` given ``options`` it does not take, each with its nearest option."""
    from .names import nearest
    unknown = unknown_options(cls, options)
    free = list(accepted_options(cls) or ())  # given or not: a preset sets many
    named = []
    for key in unknown:
        near = nearest(key, free)
        named.append(f'{key!r}' + (f' (did you mean {near!r}?)' if near else ''))
    return TypeError(f'{cls.__name__}: unknown option {", ".join(named)}; its options: '
                     f'{", ".join(free)}')


def _build_in_own_scope(cfg, registry, default_args=None):
    """Build from ``registry`` whatever the current default scope is: inside an mmseg runner the
    default scope is ``'mmseg'``, which would send the lookup of ``type='ISeg'`` to mmseg's
    ``MODELS`` instead of this child registry. A build refused for an option the class does not
    take names it with the nearest one it does."""
    with DefaultScope.overwrite_default_scope(registry.scope):
        kind = cfg.get('type')
        cls = registry.get(kind) if isinstance(kind, str) else kind
        try:
            return build_from_cfg(cfg, registry, default_args)
        except TypeError as exc:  # a subclass may read its own options out of **kwargs
            if inspect.isclass(cls) and unknown_options(cls, cfg):
                raise unknown_options_error(cls, cfg) from exc
            raise


MASK_GENERATORS = Registry(
    'mask generator', parent=MODELS, scope='mmdiffseg', locations=['mmdiffseg.generators'],
    build_func=_build_in_own_scope)
