"""What to capture from the U-Net (:class:`CaptureSpec`) and what comes back (:class:`AttentionMaps`).

Conventions (DESIGN.md, "Contracts"):

* A resolution is the side of the square token grid of a layer for the input actually used
  (64, 32, 16, 8 for a 512x512 image in SD 1.x / 2.x-base).
* Self-attention maps are ``(B, N, N)`` with ``N = r*r``: rows are queries, each row a distribution
  over keys. Cross-attention maps are ``(B, N, T)`` with ``T`` text tokens (77). Tokens are
  row-major (``y * r + x``).
* Layers are named by the attention module's name in the U-Net, e.g.
  ``'up_blocks.3.attentions.1.transformer_blocks.0.attn1'`` (``attn1`` = self, ``attn2`` = cross).
* Head selections index the concatenation of the selected layers' heads in forward order,
  layer-major (layer ``l``, head ``h`` -> ``l * heads + h``), as iSeg's released head lists do.
* Everything is averaged on the fly: over the selected heads, over the selected layers (unless
  ``per_layer``) and over the captured denoising steps. Buffers are float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .prompts import selected_tokens

KINDS = ('self', 'cross')


@dataclass(frozen=True)
class CaptureRequest:
    """One averaged attention tensor to capture.

    Args:
        kind: ``'self'`` (attn1) or ``'cross'`` (attn2).
        resolution: side of the token grid of the layers to read (64, 32, 16 or 8 at 512 input).
        layers: names of the attention modules to read, all at ``resolution``; ``None`` = every
            layer of that kind at that resolution.
        heads: indices into the selected layers' heads, concatenated layer-major in forward
            order; ``None`` = all heads.
        per_layer: keep one map per layer (stacked on dim 1, forward order) instead of the mean.
        name: key in :class:`AttentionMaps`; default ``f'{kind}{resolution}'`` (plus
            ``'_layers'`` when ``per_layer``).
        heads_fix: what to change when ``heads`` do not fit the model (the owner's options,
            appended to the error); not part of the request's identity.
    """

    kind: str
    resolution: int
    layers: Optional[Tuple[str, ...]] = None
    heads: Optional[Tuple[int, ...]] = None
    per_layer: bool = False
    name: Optional[str] = None
    heads_fix: Optional[str] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f'CaptureRequest.kind must be one of {KINDS}, got {self.kind!r}')
        if int(self.resolution) <= 0:
            raise ValueError(f'CaptureRequest.resolution must be positive, got {self.resolution}')
        if self.layers is not None:
            object.__setattr__(self, 'layers', tuple(self.layers))
        if self.name is None:
            suffix = '_layers' if self.per_layer else ''
            object.__setattr__(self, 'name', f'{self.kind}{self.resolution}{suffix}')
        if self.heads is not None:
            heads = tuple(int(h) for h in self.heads)
            twice = sorted({h for h in heads if heads.count(h) > 1})
            if twice:  # a mean over the listed heads counts each once (as the layers)
                raise ValueError(f'CaptureRequest {self.name!r}: head(s) {twice} listed twice in '
                                 f'{heads}; list each head once')
            object.__setattr__(self, 'heads', heads)


@dataclass(frozen=True)
class CaptureSpec:
    """The set of :class:`CaptureRequest` a generator needs from one U-Net pass (or denoising run).

    Args:
        requests: the tensors to capture; names must be unique (a request listed twice is
            kept once: each copy would add its maps into the same buffer).
        steps: for ``generate``: indices of the denoising steps to average over (``None`` = all).
    """

    requests: Tuple[CaptureRequest, ...] = ()
    steps: Optional[Tuple[int, ...]] = None

    def __post_init__(self):
        reqs = tuple(dict.fromkeys(r if isinstance(r, CaptureRequest) else CaptureRequest(**r)
                                   for r in self.requests))
        object.__setattr__(self, 'requests', reqs)
        if self.steps is not None:
            object.__setattr__(self, 'steps', tuple(int(s) for s in self.steps))
        seen: Dict[str, CaptureRequest] = {}
        for r in reqs:
            if r.name in seen and seen[r.name] != r:
                raise ValueError(f'CaptureSpec: two different requests are named {r.name!r}: '
                                 f'{seen[r.name]} and {r}')
            seen[r.name] = r

    @property
    def names(self) -> List[str]:
        return [r.name for r in self.requests]

    def merge(self, other: 'CaptureSpec') -> 'CaptureSpec':
        """Union of two specs, so two generators can share one U-Net pass."""
        if self.steps != other.steps:
            raise ValueError(f'CaptureSpec.merge: step selections differ ({self.steps} vs '
                             f'{other.steps})')
        merged = list(self.requests)
        merged += [r for r in other.requests if r not in merged]
        return replace(self, requests=tuple(merged))


def as_capture_spec(capture) -> CaptureSpec:
    """``capture`` as a :class:`CaptureSpec`: a spec, one request, or a list of requests."""
    if isinstance(capture, CaptureSpec):
        return capture
    if isinstance(capture, CaptureRequest):
        return CaptureSpec((capture, ))
    if isinstance(capture, (list, tuple)):
        return CaptureSpec(tuple(capture))
    raise TypeError(f'capture: expected a CaptureSpec (e.g. generator.capture_spec), a '
                    f'CaptureRequest or a list of them, got {type(capture).__name__}')


class NonFiniteMaps(ValueError):
    """Maps holding NaN or inf (:meth:`AttentionMaps.check_finite`), or images generated with
    them (``DiffusionAttentionEngine.generate``): an overflow."""


@dataclass
class AttentionMaps:
    """Averaged attention captured from one batch.

    Attributes:
        maps: request name -> float32 tensor, ``(B, N, N)`` for self and ``(B, N, T)`` for cross
            attention (``(B, L, N, ...)`` for ``per_layer`` requests).
        prompts: the prompt of each sample (``''`` for the empty prompt).
        token_positions: per sample, class name -> indices of its tokens in the prompt
            (BOS = index 0), for every class name the prompt was built with.
        image_size: ``(H, W)`` of the images given to the U-Net (after resizing).
    """

    maps: Dict[str, torch.Tensor]
    prompts: List[str] = field(default_factory=list)
    token_positions: List[Dict[str, List[int]]] = field(default_factory=list)
    image_size: Tuple[int, int] = (512, 512)

    def __getitem__(self, name: str) -> torch.Tensor:
        try:
            return self.maps[name]
        except KeyError:
            raise KeyError(f'AttentionMaps has no {name!r}; captured: {sorted(self.maps)}. '
                           "Extract with the generator's capture_spec (merge_specs for several "
                           'generators) or add a CaptureRequest named so.') from None

    def __contains__(self, name: str) -> bool:
        return name in self.maps

    @property
    def batch_size(self) -> int:
        if not self.maps:
            raise ValueError('AttentionMaps holds no map (extracted with an empty capture spec): '
                             "extract with capture=generator.capture_spec")
        return next(iter(self.maps.values())).shape[0]

    def to(self, device) -> 'AttentionMaps':
        return replace(self, maps={k: v.to(device) for k, v in self.maps.items()})

    def check_finite(self) -> None:
        """Raise a ValueError naming the first map holding NaN or inf (one host sync for all
        maps on a GPU)."""
        if not self.maps:
            return
        # a sum is finite iff every entry is (probabilities never overflow float32); each map's
        # float32 sum is written into one buffer (no float32 copy of a half-precision map)
        device = next(iter(self.maps.values())).device
        sums = torch.empty(len(self.maps), dtype=torch.float32, device=device)
        for i, v in enumerate(self.maps.values()):
            if v.device == device:
                torch.sum(v, dim=tuple(range(v.dim())), dtype=torch.float32, out=sums[i])
            else:
                sums[i] = v.sum(dtype=torch.float32).to(device)
        sums = sums.tolist()
        for name, total in zip(self.maps, sums):
            if not math.isfinite(total):
                raise NonFiniteMaps(f'AttentionMaps[{name!r}] contains NaN or inf: the U-Net '
                                    'overflowed (float16: run in float32 or bfloat16), or an '
                                    'input held NaN')

    def class_positions(self, b: int, name: str, owner: str = '') -> List[int]:
        """The token positions of class ``name`` in sample ``b``'s prompt.

        Raises:
            KeyError: the class has none, naming the prompt; where no class has any, the fix:
                the engine was not given the class names.
        """
        positions = self.token_positions[b] if b < len(self.token_positions) else {}
        if name in positions:
            return positions[name]
        prompt = self.prompts[b] if b < len(self.prompts) else ''
        fix = ('; no class was located in it: pass the class names to engine.extract / '
               'engine.generate (class_names=...) as to the generator') if not positions else ''
        raise KeyError(f'{owner}class {name!r} is not in the prompt of sample {b} ({prompt!r}); '
                       f'prompt classes: {sorted(positions)}{fix}')

    def class_token_columns(self, name: str, class_names: Sequence[Sequence[str]],
                            token_offsets: Optional[Dict[str, Sequence[int]]] = None
                            ) -> List[torch.Tensor]:
        """Per sample, the cross-attention columns of each class, ``(N, C_b)`` float32.

        Each class's column is the mean over its tokens (or over ``token_offsets[name]``, the
        offsets within the class's tokens that iSeg selects, e.g. ``'potted plant': [1]``).

        Raises:
            KeyError: a class name has no recorded token positions for that sample.
            ValueError: an offset lies past its class's tokens.
        """
        cross = self[name]
        if cross.ndim != 3:
            raise ValueError(f'class_token_columns needs a (B, N, T) cross-attention map; '
                             f'{name!r} has shape {tuple(cross.shape)} (a per_layer request?)')
        columns = []
        for b, names in enumerate(class_names):
            cols = [_token_mean(cross[b], selected_tokens(cls, self.class_positions(b, cls),
                                                          token_offsets)) for cls in names]
            columns.append(torch.stack(cols, dim=-1) if cols else cross.new_zeros(cross.shape[1], 0))
        return columns

    def class_token_matrix(self, name: str, class_names: Sequence[Sequence[str]],
                           token_offsets: Optional[Dict[str, Sequence[int]]] = None
                           ) -> torch.Tensor:
        """``(B, N, C)`` float32: each sample's :meth:`class_token_columns`, then zero columns up
        to ``C``, the most classes of a sample (a batch of one: its columns, no copy)."""
        columns = self.class_token_columns(name, class_names, token_offsets)
        if len(columns) == 1:
            return columns[0][None]
        num = max(col.shape[1] for col in columns)
        return torch.stack([col if col.shape[1] == num else F.pad(col, (0, num - col.shape[1]))
                            for col in columns])


def _token_mean(cross: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
    """Mean of the ``(N, T)`` map's columns ``idx``: a view for one token, a slice for a run of
    tokens (a word's sub-tokens), else token by token (a list index would be a blocking
    host-to-device copy)."""
    if len(idx) == 1:
        return cross[:, idx[0]]
    if list(idx) == list(range(idx[0], idx[0] + len(idx))):
        return cross[:, idx[0]:idx[0] + len(idx)].mean(dim=-1)
    return torch.stack([cross[:, i] for i in idx], -1).mean(dim=-1)


def merge_specs(specs: Iterable[CaptureSpec]) -> CaptureSpec:
    """Union of several specs (see :meth:`CaptureSpec.merge`)."""
    specs = list(specs)
    merged = specs[0] if specs else CaptureSpec()
    for spec in specs[1:]:
        merged = merged.merge(spec)
    return merged
