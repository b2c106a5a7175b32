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
from typing import Optional, Sequence

import torch

from ..transfer import host_to_device
from .functional import minmax_normalize, otsu_threshold

__all__ = ['segment_classes', 'batch_segment_classes']

_LEVELS = 255  # otsu_threshold's quantisation (bins - 1)


def segment_classes(segments: torch.Tensor, scores: torch.Tensor, min_contrast: float = 2.0,
                    num_segments: Optional[int] = None) -> torch.Tensor:
    """The class each segment of one image is named after (:func:`batch_segment_classes`).

    Args:
        segments: ``(H, W)`` segment ids (any integers).
        scores: ``(C, H, W)`` non-negative class attention (raw shares, not normalised).
        min_contrast: how many times its class's background level a segment's mean must reach.
        num_segments: if the ids are ``0..num_segments-1``, all used: they are taken as they are
            (no ``unique``, which waits for the device on a GPU).

    Returns:
        ``(H, W)`` int64: per pixel, the index of its segment's class in ``scores``, ``-1`` for
        background.
    """
    if num_segments is None:
        segments = torch.unique(segments, return_inverse=True)[1]
        num_segments = int(segments.max()) + 1
    return batch_segment_classes(segments[None], scores[None], [num_segments], min_contrast)[0]


def batch_segment_classes(segments: torch.Tensor, scores: torch.Tensor,
                          num_segments: Sequence[int], min_contrast: float = 2.0,
                          class_valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Steps 1-3 for a batch at once, each image's values the same as alone.

    Args:
        segments: ``(B, H, W)`` ids ``0..num_segments[b]-1`` of each image, all used.
        scores: ``(B, C, H, W)`` non-negative class attention.
        num_segments: the number of segments of each image.
        min_contrast: how many times its class's background level a segment's mean must reach.
        class_valid: ``(B, C)`` bool, False for padding score maps (None: all are classes).

    Returns:
        ``(B, H, W)`` int64: per pixel, the index of its segment's class, ``-1`` for background.
    """
    b, c = scores.shape[:2]
    k = max(num_segments)
    padded = any(n < k for n in num_segments)  # images with fewer segments: empty ones appended
    ids = segments.flatten(1)
    bins = ids if b == 1 else ids + host_to_device([[i * k] for i in range(b)], ids.device)
    bins = bins.flatten()
    area = torch.zeros(b * k, dtype=scores.dtype, device=scores.device)
    area.index_add_(0, bins, torch.ones_like(bins, dtype=scores.dtype))
    sums = scores.new_zeros(b * k, c).index_add_(0, bins, scores.flatten(2).transpose(1, 2)
                                                 .reshape(-1, c))
    area, sums = area.view(b, k), sums.view(b, k, c)
    mean = sums / (area.clamp_min(1) if padded else area)[..., None]  # (B, K, C); empty ones 0

    if padded:  # per class over the image's own segments, in [0, 1] (as minmax_normalize)
        empty = host_to_device([[[False]] * n + [[True]] * (k - n) for n in num_segments],
                               ids.device, torch.bool)
        level = mean - mean.masked_fill(empty, math.inf).amin(1, keepdim=True)
        level.div_(level.masked_fill(empty, -math.inf).amax(1, keepdim=True).clamp_min(1e-8))
    else:
        level = minmax_normalize(mean, dims=(1,))
    # per class, segments weighted by their pixels
    pixel_levels = level.transpose(1, 2).gather(2, ids[:, None, :].expand(b, c, ids.shape[1]))
    threshold = otsu_threshold(pixel_levels.reshape(b * c, -1)).view(b, 1, c)
    high = (level * _LEVELS).floor() > (threshold * _LEVELS).round()
    low_area = area[..., None] * ~high  # the lowest segment is always low: never all zero
    background = (low_area * mean).sum(1) / low_area.sum(1)  # (B, C)
    tiny = torch.finfo(scores.dtype).tiny
    contrast = mean.clamp_min(tiny).log() - background.clamp_min(tiny).log()[:, None]
    candidate = high & (contrast >= math.log(min_contrast))
    if class_valid is not None:
        candidate &= class_valid[:, None, :]
    _, which = contrast.masked_fill(~candidate, -math.inf).max(2)
    named = torch.where(candidate.any(2), which, torch.full_like(which, -1))
    return named.gather(1, ids).view_as(segments)
