"""iSeg's per-image tensor steps after the cross-attention (linsun449/iseg.code ``wsss/iSeg.py``
``get_att_map``, "Ent-Self", and ``util/cam.py:cam_to_label``), batched, float32; divisions are
guarded except in the Ent-Self loop, which runs the released operations and turns a 0 / 0 map into
zeros once, at the end.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

__all__ = ['entropy_reduced_attention', 'column_max_normalize', 'reduce_entropy_',
           'refine_with_self_attention', 'assign_labels', 'cam_normalize']

_TINY = torch.finfo(torch.float32).tiny


def entropy_reduced_attention(self_attn: torch.Tensor, ent: float) -> torch.Tensor:
    """Ent-Self steps 3-4 (:func:`column_max_normalize`, then :func:`reduce_entropy_`).

    Args:
        self_attn: ``(B, N, N)``, rows = queries.
    """
    return reduce_entropy_(column_max_normalize(self_attn), ent)


def column_max_normalize(self_attn: torch.Tensor,
                         out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Ent-Self step 3: ``A / max_q A`` (per key column), into ``out`` if given."""
    return torch.div(self_attn, self_attn.amax(dim=-2, keepdim=True).clamp_min(_TINY), out=out)


def reduce_entropy_(a: torch.Tensor, ent: float) -> torch.Tensor:
    """Ent-Self step 4, in place: one closed-form gradient step on the entropy,
    ``A + ent * log10(e * A)`` for ``A > 0``, clamped at 0, so entries below the root ``a*`` of
    ``a + ent * log10(e a) = 0`` vanish. Rows are left unnormalised."""
    if ent == 0:
        return a
    # ent * log10(e A) = c log(A) + c with c = ent / ln 10, in place on A's scratch (two N x N
    # tensors at most). log(0) = -inf survives the affine step and the clamp turns it into 0, as
    # A = 0 is kept at 0.
    c = ent / math.log(10.0)
    return a.add_(a.log(), alpha=c).add_(c).clamp_(min=0)


def refine_with_self_attention(class_maps: torch.Tensor, transition: torch.Tensor,
                               iters: int) -> torch.Tensor:
    """Ent-Self steps 1, 5, 6: ``X = N(X0)``; ``A' = D^-1 A`` (each row of ``transition``
    divided by its sum, as released: in place, the caller's scratch); ``iters`` times
    ``X <- N(A' X)``, computed as ``X A'^T`` (the long axis stays contiguous); ``N`` (steps 1
    and 6) subtracts each map's minimum and divides by its sum.

    The loop runs the released operations, without guards: a map that is or becomes constant
    gives ``0 / 0`` there, a NaN that stays in its own row of ``X`` (the products mix the pixels of
    one map only) and is turned into an all-zero map once, at the end: the values of guarding
    every division, 10 fewer kernel launches. The inputs must be finite (:meth:`ISeg.forward`
    checks the maps).

    Args:
        class_maps: ``(B, C, N)`` one row per class.
        transition: ``(B, N, N)`` from :func:`entropy_reduced_attention`, rows = queries;
            overwritten with ``A'``.

    Returns:
        ``(B, C, N)``.
    """
    transition.div_(transition.sum(dim=-1, keepdim=True).clamp_min_(_TINY))
    x = class_maps - class_maps.amin(dim=-1, keepdim=True)
    x.div_(x.sum(dim=-1, keepdim=True))
    for _ in range(iters):
        x = torch.bmm(x, transition.transpose(1, 2))
        x.sub_(x.amin(dim=-1, keepdim=True))
        x.div_(x.sum(dim=-1, keepdim=True))
    return x.nan_to_num_(nan=0.0)


def assign_labels(cams: torch.Tensor, valid: Optional[torch.Tensor],
                  cam_bg_thr: float) -> torch.Tensor:
    """``cam_to_label``: per pixel an index into ``[background, class_1, ..., class_C]``.

    ``cam_bg_thr == 0``: background score ``(1 - max_c cam)^2``, argmax (ties go to background).
    ``cam_bg_thr > 0``: scores below it are zeroed, argmax, pixels with no score are background.

    Args:
        cams: ``(B, C, H, W)`` in ``[0, 1]``.
        valid: ``(B, C)`` bool, False for padding columns; None: every column is a class.
    """
    mask = None if valid is None else valid[..., None, None]
    if cam_bg_thr > 0:
        keep = cams >= cam_bg_thr
        cams = torch.where(keep if mask is None else keep & mask, cams, torch.zeros_like(cams))
        score, index = cams.max(dim=1)
        return torch.where(score > 0, index + 1, torch.zeros_like(index))
    if mask is None:  # scores in [0, 1]: the background's is too
        return torch.cat([(1 - cams.amax(dim=1, keepdim=True)) ** 2, cams], dim=1).argmax(dim=1)
    cams = torch.where(mask, cams, torch.full_like(cams, -1.0))
    background = (1 - cams.amax(dim=1, keepdim=True).clamp_min(0)) ** 2
    return torch.cat([background, cams], dim=1).argmax(dim=1)


def cam_normalize(cams: torch.Tensor, zero_min: bool = False) -> torch.Tensor:
    """``cam_to_label``'s per-class ``(x - min) / (max - min + 1e-6)``. ``zero_min``: each map's
    minimum is exactly 0 already (:func:`minmax_normalize`'s output), so the subtraction, which
    would not change a bit, is skipped."""
    if not zero_min:
        cams = cams - cams.amin(dim=(-2, -1), keepdim=True)
    return cams / (cams.amax(dim=(-2, -1), keepdim=True) + 1e-6)
