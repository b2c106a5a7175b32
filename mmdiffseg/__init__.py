"""mmdiffseg: Stable Diffusion attention as a source of segmentation labels for MMSegmentation.

Importing the package applies the mmengine work-arounds (:mod:`mmdiffseg.compat`) and registers
every module in mmseg's registries, so a config needs only
``custom_imports=dict(imports=['mmdiffseg'], allow_failed_imports=False)``.
"""
from . import compat

compat.apply()

from . import datasets, evaluation, generators, models  # noqa: E402,F401  (registration)
from .attention import AttentionMaps, CaptureRequest, CaptureSpec  # noqa: E402,F401

__version__ = '0.1.0'
