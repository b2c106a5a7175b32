"""The tensor helpers of mmdiffseg.generators.functional on small hand-computed cases."""
import math

import numpy as np
import pytest
import torch

from mmdiffseg.generators.functional import (elementwise_kl_terms, elementwise_symmetric_kl,
                                             float16_symmetric_kl, minmax_normalize,
                                             otsu_threshold, symmetric_kl)

HALF = [0.5, 0.5]
QUARTER = [0.25, 0.75]
# 0.5 * sum (p - q) (log p - log q) for (0.5, 0.5) and (0.25, 0.75): 0.5 * 0.25 * log 3
HALF_QUARTER = 0.125 * math.log(3)


def test_minmax_normalize_hand_computed_and_constant_maps_are_zero():
    x = torch.tensor([[[1.0, 3.0], [5.0, 9.0]], [[2.0, 2.0], [2.0, 2.0]]])
    out = minmax_normalize(x.clone())
    assert out.tolist() == [[[0.0, 0.25], [0.5, 1.0]], [[0.0, 0.0], [0.0, 0.0]]]


@pytest.mark.parametrize('level', [100.0, -100.0])
def test_minmax_normalize_flat_zeroes_rounding_noise_around_a_constant(level):
    """A spread of 1e-4 on a map of magnitude 100 is noise for ``flat=1e-5`` (zeros), whatever
    the sign of the map; without ``flat`` it is stretched to [0, 1]."""
    x = torch.tensor([[level, level + 1e-4]], dtype=torch.float64)
    assert minmax_normalize(x.clone(), flat=1e-5).tolist() == [[0.0, 0.0]]
    assert minmax_normalize(x.clone()).tolist() == [[0.0, 1.0]]


def test_minmax_normalize_flat_includes_a_spread_of_exactly_flat_times_the_magnitude():
    """Spread 2 of a map of magnitude 4 is at most ``flat=0.5`` times it: zeros."""
    x = torch.tensor([[2.0, 4.0]])
    assert minmax_normalize(x.clone(), flat=0.5).tolist() == [[0.0, 0.0]]
    assert minmax_normalize(x.clone(), flat=0.49).tolist() == [[0.0, 1.0]]


def test_symmetric_kl_hand_computed():
    p = torch.tensor([HALF])
    q = torch.tensor([QUARTER, HALF])
    kl = symmetric_kl(p, q)
    assert kl.shape == (1, 2) and kl.dtype == torch.float32
    assert kl[0, 0].item() == pytest.approx(HALF_QUARTER, rel=1e-5)
    assert kl[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert symmetric_kl(q, p)[:, 0].tolist() == pytest.approx(kl[0].tolist(), abs=1e-6)


def test_symmetric_kl_guards_a_zero_with_the_log_epsilon():
    """``log 0`` is taken as ``log 1e-8``: KL((1, 0) || (.5, .5)) = log 2 and
    KL((.5, .5) || (1, 0)) = .5 log .5 + .5 log(.5 / 1e-8), finite."""
    kl = symmetric_kl(torch.tensor([[1.0, 0.0]]), torch.tensor([HALF]))
    want = 0.5 * (math.log(2) + 0.5 * math.log(0.5) + 0.5 * math.log(0.5 / 1e-8))
    assert kl.item() == pytest.approx(want, rel=1e-5)


def test_float16_symmetric_kl_is_nan_exactly_where_a_row_has_a_float16_zero():
    p = torch.tensor([HALF, [1.0, 1e-9]])   # 1e-9 rounds to 0 in float16
    q = torch.tensor([QUARTER, [1.0, 0.0], HALF])
    kl = float16_symmetric_kl(p, q)
    assert kl.dtype == torch.float16 and kl.shape == (2, 3)
    assert kl.isnan().tolist() == [[False, True, False], [True, True, True]]
    assert kl[0, 0].item() == pytest.approx(HALF_QUARTER, rel=1e-3)
    assert kl[0, 2].item() == 0.0


@pytest.mark.parametrize('eps', [0.0, 0.1])
def test_elementwise_symmetric_kl_adds_eps_to_both_sides_and_any_chunk_agrees(eps):
    """``0.5 * sum (p - q) (log p - log q)`` of ``p + eps`` and ``q + eps``, with three rows of
    ``p`` one at a time (every row computed, whatever the blocking)."""
    p = torch.tensor([HALF, QUARTER, [0.9, 0.1]], dtype=torch.float64)
    q = torch.tensor([QUARTER, [0.6, 0.4]], dtype=torch.float64)
    pe, qe = p[:, None] + eps, q[None] + eps
    want = (0.5 * (pe - qe) * (pe.log() - qe.log())).sum(-1)
    out = elementwise_symmetric_kl(p, q, eps=eps, dtype=torch.float64, chunk=1)
    assert out.dtype == torch.float64
    assert torch.allclose(out, want, rtol=1e-12, atol=0)
    if eps == 0:
        assert out[0, 0].item() == pytest.approx(HALF_QUARTER)
    blocked = elementwise_kl_terms(p + eps, (p + eps).log(), q + eps, (q + eps).log(),
                                   rows=2, cols=1)
    assert torch.equal(blocked, out)


def test_otsu_threshold_hand_computed():
    """3 levels (``floor(x * 2)``). Levels 0, 1, 2, 2: the split after level 1 separates the
    means best (0.25 * 1.5**2 against 0.1875 * (5/3)**2): threshold 1/2. Levels 0, 0, 2, 2:
    both splits are the same, the first is taken: 0 (rounding instead of flooring would make
    the levels 1, 1, 2, 2: 1/2). A value above 1 counts as 1."""
    x = torch.tensor([[0.0, 0.5, 1.0, 1.0], [0.3, 0.45, 1.0, 1.0], [0.3, 0.45, 1.0, 1.7]])
    assert otsu_threshold(x, bins=3).tolist() == [0.5, 0.0, 0.0]


def test_otsu_threshold_equals_cv2_on_byte_maps_with_mass_at_the_top_level():
    """256 levels, maps whose top level 255 holds many pixels (the total mean then depends on
    it): the foreground ``level > threshold * 255`` is cv2's ``THRESH_OTSU`` mask."""
    cv2 = pytest.importorskip('cv2')
    gen = torch.Generator().manual_seed(3)
    levels = (torch.rand(6, 32, 32, generator=gen) ** torch.linspace(0.2, 3, 6)[:, None, None]
              * 255).floor()
    levels[:, :10] = 255
    levels[3, :20] = 255
    thresholds = otsu_threshold(levels / 255)
    for level, threshold in zip(levels, thresholds):
        _, binary = cv2.threshold(level.numpy().astype(np.uint8), 0, 255,
                                  cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        assert torch.equal(level > (threshold * 255).round(), torch.from_numpy(binary > 0))
