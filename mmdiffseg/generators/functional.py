"""Tensor helpers shared by the generators: normalisations, symmetric KL, Otsu threshold.

All work batched on CPU or GPU in float32, except the two symmetric KLs that reproduce a release's
float16 arithmetic (:func:`float16_symmetric_kl`, :func:`elementwise_symmetric_kl`).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

LOG_EPS = 1e-8


def minmax_normalize(x: torch.Tensor, dims=(-2, -1), eps: float = 1e-8,
                     flat: float = 0.0) -> torch.Tensor:
    """``(x - min) / (max - min)`` over ``dims``; a constant map becomes all zeros, and so does,
    with ``flat > 0``, a map whose spread is at most ``flat`` times its largest magnitude (float
    rounding around a constant, which min-max would stretch to [0, 1]). The minimum of the
    result is exactly 0, and ``max - min`` is taken as the maximum of ``x - min`` (the same
    value: rounding is monotonic), one launch fewer."""
    size = x.abs().amax(dim=dims, keepdim=True) if flat > 0 else None
    x = x - x.amin(dim=dims, keepdim=True)
    spread = x.amax(dim=dims, keepdim=True).clamp_min(eps)
    if size is not None:
        spread = spread.masked_fill(spread <= flat * size, float('inf'))
    return x.div_(spread)


def safe_log(x: torch.Tensor, eps: float = LOG_EPS) -> torch.Tensor:
    """``log(max(x, eps))`` in float32: no ``-inf``/NaN for zero probabilities."""
    return x.float().clamp_min(eps).log()


def kl_side(x: torch.Tensor, eps: float = LOG_EPS) -> Tuple[torch.Tensor, ...]:
    """What :func:`symmetric_kl` needs of one side: ``x`` in float32, ``log(max(x, eps))`` and
    ``sum x log x`` (computed once for a side that is compared many times)."""
    x = x.float()
    log_x = safe_log(x, eps)
    return x, log_x, (x * log_x).sum(-1)


def symmetric_kl(p, q, eps: float = LOG_EPS) -> torch.Tensor:
    """Pairwise symmetric KL ``0.5 * (KL(p_i || q_j) + KL(q_j || p_i))`` between rows.

    DiffSeg's distance (Tian et al., Eq. 3), written as matrix products so no
    ``(M, N, D)`` tensor is formed:
    ``0.5 * (sum p log p + sum q log q - p . log q - q . log p)``.

    Args:
        p: ``(..., M, D)`` rows are distributions (or :func:`kl_side` of them).
        q: ``(..., N, D)`` (or :func:`kl_side` of them).

    Returns:
        ``(..., M, N)`` float32.
    """
    p, log_p, self_p = p if isinstance(p, tuple) else kl_side(p, eps)
    q, log_q, self_q = q if isinstance(q, tuple) else kl_side(q, eps)
    cross = p @ log_q.transpose(-1, -2) + log_p @ q.transpose(-1, -2)
    return 0.5 * (self_p.unsqueeze(-1) + self_q.unsqueeze(-2) - cross)


def float16_zero_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` ``(..., N, D)`` holding a value that rounds to 0 in float16 (below about
    ``3e-8``, half of float16's smallest subnormal): ``(..., N)`` bool."""
    return (x.to(torch.float16) == 0).any(-1)


def float16_symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The symmetric KL of DiffSeg's released first merging pass (google/diffseg ``mask_merge``
    iteration 0): both sides cast to float16, ``log(p) - log(q)`` without epsilon.

    A row with a float16 zero makes ``0 * log 0`` and ``0 * (log p - log 0)`` NaN there, so its
    distance to every row is NaN (and ``NaN < tau`` is false): here those entries are NaN. The
    other distances are those of the float16-rounded rows, evaluated as matrix products in float32
    (the release sums float16 products; the two differ by a few float16 ulps:
    :func:`released_kl_near` recomputes the pairs near a threshold as released) and rounded to
    float16, the dtype the release compares in.

    Args:
        p: ``(..., M, D)``; q: ``(..., N, D)``: rows are distributions.

    Returns:
        ``(..., M, N)`` float16 with NaN rows / columns for rows of ``p`` / ``q`` with a float16
        zero.
    """
    p16, q16 = p.to(torch.float16), q.to(torch.float16)
    # no float16 value is below the guard (6e-8 > LOG_EPS) except 0, whose entries become NaN
    kl = symmetric_kl(p16, q16).to(torch.float16)
    undefined = float16_zero_rows(p16).unsqueeze(-1) | float16_zero_rows(q16).unsqueeze(-2)
    return kl.masked_fill(undefined, float('nan'))


#: pairs of :func:`released_kl_near` recomputed term by term: the float16 matrix-product KL
#: differs from the release's term-by-term float16 sums by a few float16 ulps, so only the pairs
#: nearest the threshold can be decided otherwise (a few hundred of 256 x 4096 on VOC maps)
RECHECKED_PAIRS = 4096
#: pairs recomputed at once (bounds the gathered rows: 2 x 512 x 4096 float16 an image)
RECHECK_CHUNK = 512


def released_kl_near(p: torch.Tensor, q: torch.Tensor, threshold: float) -> torch.Tensor:
    """:func:`float16_symmetric_kl` with the :data:`RECHECKED_PAIRS` distances nearest
    ``threshold`` recomputed as the release computes them (:func:`elementwise_symmetric_kl`,
    term by term in float16), so that ``< threshold`` decides every pair as released; fixed
    shapes, no host sync (it runs in DiffSeg's CUDA graph). ``p``: ``(..., M, D)``, ``q``:
    ``(..., N, D)``; returns ``(..., M, N)`` float16."""
    kl = float16_symmetric_kl(p, q)
    n = q.shape[-2]
    flat = kl.flatten(-2)
    gap = (flat.float() - threshold).abs().nan_to_num(float('inf'))
    nearest = gap.topk(min(RECHECKED_PAIRS, flat.shape[-1]), dim=-1, largest=False).indices
    p16, q16 = p.to(torch.float16), q.to(torch.float16)
    log_p, log_q = p16.log(), q16.log()
    exact = []
    for chunk in nearest.split(RECHECK_CHUNK, dim=-1):
        rows = (chunk // n)[..., None].expand(*chunk.shape, p.shape[-1])
        cols = (chunk % n)[..., None].expand(*chunk.shape, q.shape[-1])
        quotient = log_p.gather(-2, rows) - log_q.gather(-2, cols)
        exact.append((p16.gather(-2, rows) * quotient).sum(-1) * 0.5
                     - (q16.gather(-2, cols) * quotient).sum(-1) * 0.5)
    return flat.scatter(-1, nearest, torch.cat(exact, -1)).view_as(kl)


def elementwise_symmetric_kl(p: torch.Tensor, q: torch.Tensor, eps: float = 0.0,
                             dtype: torch.dtype = torch.float16, chunk: int = 64) -> torch.Tensor:
    """Pairwise symmetric KL evaluated term by term in ``dtype``, as both releases write it
    (google/diffseg ``DiffSeg.KL``; iseg.code ``util/attn.py:kl_dis``): ``p`` and ``q`` cast to
    ``dtype``, ``eps`` added, ``r = log p - log q`` per term, ``0.5 * sum p r - 0.5 * sum q r``,
    every operation in ``dtype`` over an ``(M, N, D)`` tensor (``chunk`` rows of ``p`` at a time).
    No guard: a zero without ``eps`` gives NaN, as released.

    Args:
        p: ``(M, D)``; q: ``(N, D)``.

    Returns:
        ``(M, N)`` in ``dtype``.
    """
    p, q = p.to(dtype) + eps, q.to(dtype) + eps
    return elementwise_kl_terms(p, p.log(), q, q.log(), rows=chunk)


def elementwise_kl_terms(p: torch.Tensor, log_p: torch.Tensor, q: torch.Tensor,
                         log_q: torch.Tensor, rows: int = 64,
                         cols: Optional[int] = None) -> torch.Tensor:
    """:func:`elementwise_symmetric_kl` from its operands (cast, ``eps`` added) and their logs,
    ``(..., M, D)`` and ``(..., N, D)`` with the same leading dims, in blocks of ``rows x cols``
    pairs (``None``: all). Each pair's value depends on its two rows only, so any blocking gives
    the same bits; blocks whose ``(rows, cols, D)`` terms stay in cache are several times faster
    on a CPU."""
    m, n = p.shape[-2], q.shape[-2]
    rows, cols = min(rows, m), min(cols or n, n)
    out = p.new_empty(*p.shape[:-1], n)
    for i in range(0, m, rows):
        p_i, log_p_i = p[..., i:i + rows, None, :], log_p[..., i:i + rows, None, :]
        for j in range(0, n, cols):
            q_j = q[..., None, j:j + cols, :]
            quotient = log_p_i - log_q[..., None, j:j + cols, :]
            out[..., i:i + rows, j:j + cols] = \
                (p_i * quotient).sum(-1) * 0.5 - (q_j * quotient).sum(-1) * 0.5
    return out


def otsu_threshold(x: torch.Tensor, bins: int = 256) -> torch.Tensor:
    """Otsu's threshold of each map in a batch, as ``cv2.threshold(..., THRESH_OTSU)`` computes it.

    ``x``: ``(B, ...)`` with values in ``[0, 1]``; each map is quantised to ``bins`` integer levels
    (``floor(x * (bins - 1))``, as OpenCV quantises a map scaled to ``bins - 1``; SeeDiff's
    ``uint16(x * 255)`` levels: :func:`.seediff.otsu_foreground`).

    Returns:
        ``(B,)`` thresholds in ``[0, 1]``: a value is foreground when its level is strictly
        above ``threshold * (bins - 1)``.
    """
    b = x.shape[0]
    levels = (x.reshape(b, -1).float().clamp(0, 1) * (bins - 1)).floor().long()
    hist = torch.zeros(b, bins, device=x.device, dtype=torch.float64)
    hist.scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float64))
    prob = hist / hist.sum(1, keepdim=True)
    grid = torch.arange(bins, device=x.device, dtype=torch.float64)
    w0 = prob.cumsum(1)
    mu0_sum = (prob * grid).cumsum(1)
    mu_total = mu0_sum[:, -1:]
    w1 = 1 - w0
    between = (mu_total * w0 - mu0_sum) ** 2 / (w0 * w1).clamp_min(1e-12)
    between = torch.where((w0 > 0) & (w1 > 0), between, torch.zeros_like(between))
    level = between.argmax(1)
    return level.float() / (bins - 1)
