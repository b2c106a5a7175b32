"""The :class:`MaskGenerator` contract: attention maps in, label maps out.

A generator declares what it needs from the U-Net (:attr:`capture_spec`) and how the engine must run
(:meth:`extract_kwargs`: prompt, timestep, noise, class-token enhancement), then turns the captured
:class:`~mmdiffseg.attention.AttentionMaps` into labels with :meth:`forward`. Generators are pure
tensor code: they never load a model, run batched on CPU or GPU, and work from a config or
directly.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from ..attention.maps import AttentionMaps, CaptureSpec

IGNORE_INDEX = 255


class MaskGenerator(torch.nn.Module):
    """Base class of the mask generators.

    Args:
        classes: the dataset's class names; output labels are indices into this list. A class named
            ``'background'`` receives the pixels a generator assigns to background; without one,
            background pixels get :data:`IGNORE_INDEX`. ``None`` only for generators that return
            unlabelled segment ids (DiffSeg without class names).
        ignore_index: label of pixels the generator is unsure about.
    """

    #: short name used in manifests and cache keys
    method: str = 'base'

    def __init__(self, classes: Optional[Sequence[str]] = None, ignore_index: int = IGNORE_INDEX):
        super().__init__()
        self.classes = list(classes) if classes is not None else None
        self.ignore_index = int(ignore_index)

    # -- what the engine must do -------------------------------------------------------------
    @property
    def capture_spec(self) -> CaptureSpec:
        raise NotImplementedError

    def extract_kwargs(self, class_names: Sequence[Sequence[str]]) -> Dict:
        """Keyword arguments for ``DiffusionAttentionEngine.extract`` for a batch whose samples
        contain ``class_names[b]`` (prompts, class names for token positions, timestep, noise,
        class-token enhancement). ``capture`` is added by the caller."""
        raise NotImplementedError

    # -- labels ------------------------------------------------------------------------------
    @property
    def background_index(self) -> int:
        if self.classes is not None and 'background' in self.classes:
            return self.classes.index('background')
        return self.ignore_index

    def class_indices(self, names: Sequence[str]) -> List[int]:
        """Dataset indices of ``names``; a clear error for a name not in :attr:`classes`."""
        if self.classes is None:
            raise ValueError(f'{type(self).__name__} was built without `classes`, so class names '
                             f'{list(names)} cannot be mapped to label indices')
        missing = [n for n in names if n not in self.classes]
        if missing:
            raise KeyError(f'{type(self).__name__}: unknown class name(s) {missing}; '
                           f'known classes: {self.classes}')
        return [self.classes.index(n) for n in names]

    def forward(self, maps: AttentionMaps, images: Optional[torch.Tensor],
                class_names: Optional[Sequence[Sequence[str]]]) -> torch.Tensor:
        """Labels ``(B, H, W)`` int64 (dataset indices, :attr:`ignore_index` where unsure).

        Args:
            maps: attention captured with :attr:`capture_spec` (float32).
            images: ``(B, 3, H, W)`` RGB in ``[0, 255]`` at the output size (generators that refine
                with the image use it; others take only its size). ``None``: output at
                ``maps.image_size``.
            class_names: per sample, the names (from :attr:`classes`) present in the image.
        """
        raise NotImplementedError

    def config_dict(self) -> Dict:
        """Everything that changes the output, for manifests and cache keys."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ', '.join(f'{k}={v!r}' for k, v in self.config_dict().items())
