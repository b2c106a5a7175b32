"""Naming segments from class-token cross-attention: DiffSeg's labelled mode.

The released semantic step (google/diffseg ``get_semantics``) gives every mask the caption noun of
highest mean (L2-normalised) cross-attention; the caption's nouns include the stuff around the
objects, so no mask needs a "none" answer. mmdiffseg's prompts name only the image's object classes,
so each segment must also be able to stay background, and that is decided from what separates an
object from its surroundings in the class's own map, never from an absolute level:

1. For class ``c`` and segment ``k``, ``m[k, c]`` is the mean of ``c``'s attention share inside
   ``k``. With the class's level ``b`` off its object and ``o`` on it, a segment of which the object
   covers a share ``f`` has ``m = b + f (o - b)``: the mean is a vote of the segment's pixels.
2. Otsu's threshold over the segments' means, weighted by their areas (Otsu on the map in which
   every pixel holds its segment's mean: :func:`~.functional.otsu_threshold`), splits the segments
   into the class's high and low groups, between the two levels; the low group's area-weighted mean
   is the class's background level ``b[c]``.
3. A segment of the high group whose mean is at least ``min_contrast`` times the background level
   may take ``c``; among its candidate classes it takes the one it stands out most for (largest
   ``m[k, c] / b[c]``); a segment with no candidate is background. The contrast floor keeps a class
   whose token attends nowhere in particular (Otsu always splits) from claiming the segments its
   noise favours.

Both tests are relative to the image's own segments, so the map's scale does not matter and a hot
spot inside an object only raises that object's mean (min-max normalisation divided the whole map by
it, pushing the object below an absolute threshold). A hot spot that forms a segment of its own can
still pull the split up (on VOC ground-truth attention with an 8x hot spot and 100-200 segments,
labelled mIoU 0.71 instead of 0.82). Computing the split on log means would resist that better but
name segments that hold only a small share of object (the geometric mean of the two levels), which
cost more on the same fixtures.

Limits: with nothing to compare against, an image of a single segment, or a class whose object
covers every segment, comes out background.
"""
from __future__ import annotations

import math

import torch

from .functional import minmax_normalize, otsu_threshold

__all__ = ['segment_classes']

_LEVELS = 255  # otsu_threshold's quantisation (bins - 1)


def segment_classes(segments: torch.Tensor, scores: torch.Tensor,
                    min_contrast: float = 2.0) -> torch.Tensor:
    """The class each segment is named after, by contrast with the class's background level.

    Args:
        segments: ``(H, W)`` segment ids (any integers).
        scores: ``(C, H, W)`` non-negative class attention (raw shares, not normalised).
        min_contrast: how many times its class's background level a segment's mean must reach.

    Returns:
        ``(H, W)`` int64: per pixel, the index of its segment's class in ``scores``, ``-1`` for
        background.
    """
    ids = torch.unique(segments, return_inverse=True)[1].flatten()
    k = int(ids.max()) + 1
    area = torch.bincount(ids, minlength=k).to(scores.dtype)
    sums = scores.new_zeros(k, scores.shape[0]).index_add_(0, ids, scores.flatten(1).T)
    mean = sums / area[:, None]  # (K, C)

    level = minmax_normalize(mean, dims=(0,))  # per class over the segments, in [0, 1]
    threshold = otsu_threshold(level.T[:, ids])  # per class, segments weighted by their pixels
    high = (level * _LEVELS).floor() > (threshold * _LEVELS).round()
    low_area = area[:, None] * ~high  # the lowest segment is always low: never all zero
    background = (low_area * mean).sum(0) / low_area.sum(0)
    tiny = torch.finfo(scores.dtype).tiny
    contrast = mean.clamp_min(tiny).log() - background.clamp_min(tiny).log()
    candidate = high & (contrast >= math.log(min_contrast))
    _, which = contrast.masked_fill(~candidate, -math.inf).max(1)
    named = torch.where(candidate.any(1), which, torch.full_like(which, -1))
    return named[ids].view_as(segments)
