"""Mask generators: attention maps -> labels (pure tensor code, CPU or GPU, batched)."""
from .base import IGNORE_INDEX, MaskGenerator
from .diffseg import *  # noqa: F401,F403
from .iseg import *  # noqa: F401,F403
from .seediff import *  # noqa: F401,F403
