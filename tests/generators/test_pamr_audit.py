"""PAMR: defaults, option checks, linearity, scale invariance, strict early-stop test, output."""
import pytest
import torch

from mmdiffseg.generators.pamr import PAMR, run_in_chunks


def test_defaults_are_seediffs():
    """ALGORITHMS.md 2.3 step 6: 5000 steps, one dilation, factor 0.2; no early stop."""
    pamr = PAMR()
    assert pamr.num_iter == 5000
    assert tuple(pamr.dilations) == (1, )
    assert pamr.sigma_factor == 0.2
    assert pamr.tol is None
    assert pamr.check_every == 10


def test_default_check_every_stops_only_at_multiples_of_ten():
    """With ``tol`` set and the default ``check_every``, the run ends at a step count that is a
    multiple of 10 (a huge tol: at step 10 exactly)."""
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 9, 9, generator=gen) * 255
    mask = torch.rand(1, 1, 9, 9, generator=gen)
    assert torch.equal(PAMR(num_iter=50, tol=10.0)(image, mask), PAMR(num_iter=10)(image, mask))


@pytest.mark.parametrize('kwargs,match', [
    (dict(dilations=()), r'dilations must name at least one dilation, e.g. \[1\]'),
    (dict(sigma_factor=0.0), 'sigma_factor must be a number > 0, got 0.0'),
    (dict(sigma_factor=-0.2), 'sigma_factor must be a number > 0, got -0.2'),
    (dict(tol=-1e-3), 'tol must be a number >= 0, got -0.001'),
    (dict(check_every=0), 'check_every must be a whole number >= 1, got 0'),
])
def test_bad_options_are_named_with_their_range(kwargs, match):
    with pytest.raises(ValueError, match=f'PAMR: {match}'):
        PAMR(**kwargs)


def test_a_mask_without_batch_axis_is_refused():
    with pytest.raises(ValueError, match=r'mask \(B, C, H, W\)'):
        PAMR(num_iter=1)(torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8))


def test_the_propagation_is_linear_in_the_mask():
    """Fixed weights: PAMR(a m1 + b m2) = a PAMR(m1) + b PAMR(m2), also outside [0, 1]."""
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 10, 8, generator=gen) * 255
    m1, m2 = torch.rand(2, 1, 1, 10, 8, generator=gen)
    pamr = PAMR(num_iter=20)
    combined = pamr(image, 3 * m1 - 2 * m2)
    assert combined.min() < 0 or combined.max() > 1
    assert torch.allclose(combined, 3 * pamr(image, m1) - 2 * pamr(image, m2), atol=1e-5)


def test_the_affinity_does_not_depend_on_the_image_scale():
    """|I_i - I_j| / (factor sigma_i) is scale free: an image in 0..1 weighs neighbours as the
    same image in 0..255 does (no rounding to integer levels)."""
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 7, 6, generator=gen) * 255
    pamr = PAMR(num_iter=1)
    assert torch.allclose(pamr.affinity(image / 255), pamr.affinity(image), atol=1e-5)


def test_the_tol_test_is_strict():
    """A check whose change equals ``tol`` does not stop the run (``change < tol``)."""
    calls = []

    def advance(n, measure):
        calls.append(n)
        return torch.tensor(0.5) if measure else None

    run_in_chunks(advance, 9, 9, 0.5, 3)
    assert calls == [3, 3, 3]


def test_the_output_is_a_contiguous_tensor_of_its_own():
    """Not a view into the padded working buffer: contiguous, with storage of its own size."""
    out = PAMR(num_iter=2)(torch.rand(1, 3, 6, 5) * 255, torch.rand(1, 2, 6, 5))
    assert out.shape == (1, 2, 6, 5) and out.dtype == torch.float32
    assert out.is_contiguous()
    assert out.untyped_storage().nbytes() == out.numel() * out.element_size()


def test_repr_names_every_setting():
    assert repr(PAMR(num_iter=3, dilations=[1, 2], sigma_factor=0.5, tol=0.01, backend='torch')) \
        == "PAMR(num_iter=3, dilations=(1, 2), sigma_factor=0.5, tol=0.01, backend='torch')"


class _ReplayedSteps:
    """A CUDA graph stand-in on the CPU: a replay runs the recorded steps and writes their result
    into the tensor the recording returned (as a replay overwrites a graph's outputs)."""

    def __init__(self, steps, out):
        self.steps, self.out = steps, out

    def replay(self):
        change = self.steps()
        if change is not None:
            self.out.copy_(change)


@pytest.mark.parametrize('settings, recorded, unlike', [
    (dict(num_iter=207), [False, False], 206), (dict(num_iter=95, tol=5e-3), [True], 95)])
def test_graph_backends_recordings_leave_the_mask_as_the_pytorch_steps(monkeypatch, settings,
                                                                       recorded, unlike):
    """``backend='graph'`` on a CPU stand-in of CUDA graphs (the capture here runs its steps,
    the warm-up always does): what recording did to the mask is undone, and the replays'
    measured change is the recorded steps' (not the warm-up's), so the graphed run equals the
    PyTorch steps. One recording per chunk length and measuring: 207 steps are chunks of 100,
    100, 7; with ``tol``, 10-step chunks that measure, until one moved less than ``tol``
    (before the 95th step: a step more or less shows in the mask)."""
    from mmdiffseg.generators import pamr as pamr_module
    recordings = []

    def record(warm_up, steps, pool=None):
        warm = warm_up()
        out = steps()
        recordings.append(out is not None)
        return _ReplayedSteps(steps, out), warm, out
    monkeypatch.setattr(pamr_module, 'record_graph', record)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 5, 6, generator=gen) * 255
    mask = (torch.rand(1, 2, 5, 6, generator=gen) > 0.5).float()
    graphed = PAMR(backend='graph', **settings)
    monkeypatch.setattr(graphed, 'backend_for', lambda device: 'graph')
    want = PAMR(backend='torch', **settings)(image, mask)
    assert torch.equal(graphed(image, mask), want)
    assert recordings == recorded
    assert not torch.equal(PAMR(num_iter=unlike)(image, mask), want)
