"""Registries of mmdiffseg.

Mask generators get a registry of their own (a child of mmseg's ``MODELS`` so ``mmseg`` configs
can build them); transforms, datasets, metrics and models are registered directly in mmseg's
registries so stock configs with ``default_scope='mmseg'`` find them after
``custom_imports=dict(imports=['mmdiffseg'])``.
"""
from mmengine.registry import Registry
from mmseg.registry import MODELS

MASK_GENERATORS = Registry(
    'mask generator', parent=MODELS, scope='mmdiffseg', locations=['mmdiffseg.generators'])
