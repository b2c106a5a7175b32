"""DiffSeg's last step, ``generate_masks`` (google/diffseg ``diffseg/segmentor.py``; ALGORITHMS.md
section 1, step 5): each image's proposals bilinearly upsampled to the output size, the argmax
("NMS") over them (a pixel's id: its winning proposal's index, as released), and for the labelled
mode the winning proposals numbered ``0..n-1`` in order.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ['segments_from_proposals', 'compact_ids']

_ARGMAX_CHUNK = 64  # proposals upsampled at once when taking the argmax


def segments_from_proposals(proposals: torch.Tensor, size: Tuple[int, int],
                            kept: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Argmax over the proposals ``(K, h, w)`` bilinearly upsampled to ``size``: ``(H, W)`` int64
    proposal indices (the first one on ties, as ``argmax``); ``kept`` ``(K,)``: the proposals
    that compete (default: all)."""
    best = None
    for start in range(0, len(proposals), _ARGMAX_CHUNK):
        chunk = F.interpolate(proposals[None, start:start + _ARGMAX_CHUNK], size=size,
                              mode='bilinear', align_corners=False)[0]
        if kept is not None:
            chunk = chunk.masked_fill(~kept[start:start + _ARGMAX_CHUNK, None, None], -math.inf)
        value, index = chunk.max(0)
        if best is None:
            best, ids = value, index
        else:
            better = value > best
            best = torch.where(better, value, best)
            ids = torch.where(better, index + start, ids)
    return ids


def compact_ids(ids: torch.Tensor, count: int) -> torch.Tensor:
    """Each image's ids ``(B, ...)`` in ``[0, count)`` renumbered ``0..n_b-1`` in order of the
    ids it uses (``unique``'s inverse, image by image), for the batch at once, without a host
    sync."""
    flat = ids.flatten(1)
    used = torch.zeros(len(ids), count, dtype=torch.long, device=ids.device)
    used.scatter_(1, flat, 1)
    return (used.cumsum(1) - 1).gather(1, flat).view_as(ids)
