"""Registries of mmdiffseg.

Mask generators get a registry of their own (a child of mmseg's ``MODELS`` so ``mmseg`` configs
can build them); transforms, datasets, metrics and models are registered directly in mmseg's
registries so stock configs with ``default_scope='mmseg'`` find them after
``custom_imports=dict(imports=['mmdiffseg'])``.
"""
from mmengine.registry import DefaultScope, Registry, build_from_cfg
from mmseg.registry import MODELS


def _build_in_own_scope(cfg, registry, default_args=None):
    """Build from ``registry`` whatever the current default scope is: inside an mmseg runner the
    default scope is ``'mmseg'``, which would send the lookup of ``type='ISeg'`` to mmseg's
    ``MODELS`` instead of this child registry."""
    with DefaultScope.overwrite_default_scope(registry.scope):
        return build_from_cfg(cfg, registry, default_args)


MASK_GENERATORS = Registry(
    'mask generator', parent=MODELS, scope='mmdiffseg', locations=['mmdiffseg.generators'],
    build_func=_build_in_own_scope)
