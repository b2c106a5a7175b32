"""PAMR: hand-computed steps, invariants, edge alignment, early stop, bad input."""
import itertools

import numpy as np
import pytest
import torch

from mmdiffseg.generators.functional import minmax_normalize
from mmdiffseg.generators.pamr import ORIGINAL_PAMR, PAMR, run_in_chunks


def direct_pamr_step(image: np.ndarray, mask: np.ndarray, dilations, factor):
    """One PAMR step written pixel by pixel from the formula (replicate border = clamped index;
    std pooled over the 3x3 windows of all dilations, unbiased; channel mean; softmax)."""
    k, h, w = image.shape
    out = np.zeros_like(mask)
    offsets = [(dy * d, dx * d) for d in dilations for dy in (-1, 0, 1) for dx in (-1, 0, 1)
               if (dy, dx) != (0, 0)]
    for y, x in itertools.product(range(h), range(w)):
        def at(arr, dy, dx):
            return arr[..., min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]
        logits = np.zeros(len(offsets))
        for c in range(k):
            window = [image[c, y, x]] * len(dilations) + [at(image[c], dy, dx)
                                                          for dy, dx in offsets]
            sigma = np.std(window, ddof=1)
            scale = 1e-8 + factor * sigma
            logits += np.array([-abs(image[c, y, x] - at(image[c], dy, dx)) / scale
                                for dy, dx in offsets]) / k
        weights = np.exp(logits - logits.max())
        weights /= weights.sum()
        out[:, y, x] = sum(wt * at(mask, dy, dx) for wt, (dy, dx) in zip(weights, offsets))
    return out


def test_one_step_on_a_constant_image_is_the_neighbour_mean():
    # flat image: every neighbour weighs 1/8; a single 1 in the centre of a 3x3 mask reaches
    # every other pixel (replicate border) with weight 1/8 and leaves the centre at 0.
    image = torch.full((1, 3, 3, 3), 100.0)
    mask = torch.zeros(1, 1, 3, 3)
    mask[0, 0, 1, 1] = 1
    out = PAMR(num_iter=1)(image, mask)[0, 0]
    expected = torch.full((3, 3), 1 / 8)
    expected[1, 1] = 0
    assert torch.allclose(out, expected, atol=1e-7)


@pytest.mark.parametrize('dilations,factor,size', [((1, ), 0.2, 3), ((1, 2), 0.1, 5)])
def test_one_step_equals_the_direct_formula(dilations, factor, size):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (3, size, size)).astype(np.float64)
    mask = rng.random((2, size, size))
    expected = direct_pamr_step(image, mask, dilations, factor)
    out = PAMR(num_iter=1, dilations=dilations, sigma_factor=factor)(
        torch.from_numpy(image)[None].float(), torch.from_numpy(mask)[None].float())
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)


@pytest.mark.parametrize('settings', [dict(num_iter=100), ORIGINAL_PAMR])
def test_constant_mask_stays_constant(settings):
    image = torch.rand(2, 3, 24, 20, generator=torch.Generator().manual_seed(0)) * 255
    mask = torch.full((2, 2, 24, 20), 0.7)
    out = PAMR(**settings)(image, mask)
    # float32 weights sum to 1 within a few ulp: 100 steps may drift by ~1e-5, not more
    assert torch.allclose(out, mask, atol=1e-4)


def test_mask_snaps_to_the_image_edge_and_does_not_leak():
    # two flat regions split at x = 16; the mask is a soft ramp centred at x = 19 (wrong place)
    image = torch.full((1, 3, 32, 32), 40.0)
    image[..., 16:] = 200.0
    x = torch.arange(32).float()
    ramp = ((22 - x) / 12).clamp(0, 1)  # 1 up to x = 10, 0 from x = 22
    mask = ramp.expand(1, 1, 32, 32).clone()
    out = PAMR(num_iter=3000)(image, mask)[0, 0]
    left, right = out[:, :16], out[:, 16:]
    # no leak: each side stays within the range of its own initial values
    assert right.max() <= mask[0, 0, :, 16:].max() + 1e-4
    assert left.min() >= mask[0, 0, :, :16].min() - 1e-4
    # each side has flattened to (close to) its own mean, and the edge is the image's
    assert right.max() - right.min() < 0.02 and left.max() - left.min() < 0.02
    binary = minmax_normalize(out) > 0.5
    assert torch.equal(binary, (x < 16).expand(32, 32))


def test_early_stop():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 16, 16, generator=gen) * 255
    mask = (torch.rand(1, 1, 16, 16, generator=gen) > 0.5).float()
    exact = PAMR(num_iter=400)(image, mask)
    # tol = 0 never stops early; a huge tol stops at the first check (check_every steps)
    assert torch.equal(PAMR(num_iter=400, tol=0.0)(image, mask), exact)
    assert torch.equal(PAMR(num_iter=400, tol=10.0, check_every=7)(image, mask),
                       PAMR(num_iter=7)(image, mask))
    # a small tol stops once steps change less than tol; the result stays close
    early = PAMR(num_iter=400, tol=1e-4)(image, mask)
    assert (early - exact).abs().max() < 1e-2


def test_bad_input_is_named():
    with pytest.raises(ValueError, match='PAMR'):
        PAMR()(torch.rand(1, 3, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ValueError, match='dilations'):
        PAMR(dilations=(0, ))
    with pytest.raises(ValueError, match='num_iter'):
        PAMR(num_iter=-1)


def test_chunked_driver_ends_chunks_at_the_checks_and_stops_below_tol():
    calls, changes = [], iter([1.0, 0.1])

    def advance(n, measure):
        calls.append((n, measure))
        return torch.tensor(next(changes)) if measure else None

    run_in_chunks(advance, 15, 4, 0.5, 6)
    # checks at steps 6 (change 1.0: go on) and 12 (0.1 < 0.5: stop); no chunk crosses a check
    assert calls == [(4, False), (2, True), (4, False), (2, True)]
    calls.clear()
    run_in_chunks(advance, 10, 4, None, 6)
    assert calls == [(4, False), (4, False), (2, False)]


def test_backends_are_checked_and_cpu_runs_the_pytorch_path(monkeypatch):
    image, mask = torch.rand(1, 3, 6, 5) * 255, torch.rand(1, 1, 6, 5)
    assert PAMR(backend='auto').backend_for(torch.device('cpu')) == 'torch'
    assert torch.equal(PAMR(num_iter=3, backend='auto')(image, mask),
                       PAMR(num_iter=3, backend='torch')(image, mask))
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    for backend in ('graph', 'triton'):
        with pytest.raises(ValueError, match=f"backend='{backend}'.*'auto' or 'torch'"):
            PAMR(num_iter=3, backend=backend)(image, mask)
    with pytest.raises(ValueError, match='backend must be one of'):
        PAMR(backend='cuda')
    with pytest.raises(ValueError, match='steps_per_launch'):
        PAMR(steps_per_launch=0)


def test_a_converged_flat_output_is_no_mask_where_min_max_would_stretch_its_rounding():
    """A flat grey image: 5000 PAMR steps spread a square's mask to 0.25 everywhere, within
    float32 rounding (2.4e-7); min-max made half the image foreground from that noise (released),
    SeeDiff's flat guard makes it none. A real spread is untouched."""
    from mmdiffseg.generators.seediff import FLAT_PAMR_OUTPUT
    image = torch.full((1, 3, 64, 64), 128.)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:48, 16:48] = 1
    out = PAMR(num_iter=5000)(image, mask)
    assert 0 < float(out.max() - out.min()) < 1e-6
    assert (minmax_normalize(out) > 0.8).float().mean() > 0.1
    assert minmax_normalize(out, flat=FLAT_PAMR_OUTPUT).eq(0).all()
    sharp = PAMR(num_iter=10)(image, mask)
    assert torch.equal(minmax_normalize(sharp, flat=FLAT_PAMR_OUTPUT), minmax_normalize(sharp))


def test_early_stop_is_at_the_first_check_whose_own_step_moved_less_than_tol():
    """``tol`` is tested on the step that ends each ``check_every`` block, as its largest
    change (not the block's first step, not a mean): the run equals a plain run to that step."""
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 12, 12, generator=gen) * 255
    mask = (torch.rand(1, 1, 12, 12, generator=gen) > 0.5).float()
    runs = [mask] + [PAMR(num_iter=i)(image, mask) for i in range(1, 41)]
    changes = [float((b - a).abs().max()) for a, b in zip(runs, runs[1:])]
    tol, every = 0.1, 5
    stop = next(t for t in range(every, 41, every) if changes[t - 1] < tol)
    assert every < stop < 40  # not the first check, not the end
    assert changes[stop - every] >= tol  # the block's first step would not have stopped
    assert torch.equal(PAMR(num_iter=400, tol=tol, check_every=every)(image, mask), runs[stop])


def test_image_and_mask_batches_must_match():
    with pytest.raises(ValueError, match='batch size'):
        PAMR(num_iter=1)(torch.rand(2, 3, 8, 8), torch.rand(1, 1, 8, 8))
