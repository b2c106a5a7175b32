"""iSeg's Ent-Self steps: hand-checked against their formulas, and the launch-saving loop against
the released loop with guarded divisions, bit for bit."""
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdiffseg.generators.iseg_steps import entropy_reduced_attention, refine_with_self_attention

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
from op_counts import count_ops  # noqa: E402


def entropy_root(ent):
    """Root a* of a + ent * log10(e a) = 0 by bisection (entries below it vanish)."""
    lo, hi = 1e-12, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mid + ent * math.log10(math.e * mid) < 0 else (lo, mid)
    return lo


@pytest.mark.parametrize('ent,root', [(0.015, 0.019), (0.1, 0.071), (0.2, 0.107), (0.002, 0.004)])
def test_entropy_root_matches_the_documented_thresholds(ent, root):
    assert entropy_root(ent) == pytest.approx(root, abs=1e-3)


def test_one_ent_self_step_equals_the_formula():
    ent = 0.015
    a_star = entropy_root(ent)  # ~0.019 in units of the column max
    # rows = queries; column maxima 0.8, 0.5, 0.4 (column 2 has an exact zero)
    sa = torch.tensor([[0.8, 0.5 * 0.5, 0.0],
                       [0.8 * (a_star * 0.9), 0.5, 0.4],
                       [0.8 * (a_star * 1.1), 0.5 * 0.3, 0.4 * 0.02]])[None]
    out = entropy_reduced_attention(sa, ent)[0]
    scaled = (sa[0] / sa[0].amax(dim=0)).double()
    expected = torch.where(scaled > 0, scaled + ent * torch.log10(math.e * scaled), scaled)
    expected = expected.clamp(min=0)
    assert torch.allclose(out.double(), expected, atol=1e-6)
    assert out[1, 0] == 0  # 0.9 a*: below the root, zeroed
    assert out[2, 0] > 0  # 1.1 a*: survives
    assert out[0, 2] == 0  # zero stays zero
    assert out[0, 0] == pytest.approx(1 + ent * math.log10(math.e))  # the column max
    assert out[2, 2] == pytest.approx(0.02 + ent * math.log10(math.e * 0.02), abs=1e-6)


def test_refinement_equals_a_naive_loop():
    torch.manual_seed(0)
    n, c, iters, ent = 6, 2, 3, 0.1
    sa = torch.softmax(torch.randn(1, n, n) * 2, dim=-1)
    x0 = torch.rand(1, n, c)
    fast = refine_with_self_attention(x0.transpose(1, 2), entropy_reduced_attention(sa, ent), iters)

    a = sa[0].double().numpy()
    colmax = [max(a[q][k] for q in range(n)) for k in range(n)]
    t = [[0.0] * n for _ in range(n)]
    for q in range(n):
        for k in range(n):
            v = a[q][k] / colmax[k]
            t[q][k] = max(0.0, v + ent * math.log10(math.e * v)) if v > 0 else 0.0
        s = sum(t[q])
        t[q] = [v / s for v in t[q]]
    x = x0[0].double().numpy().tolist()

    def renorm(x):
        for j in range(c):
            lo = min(x[i][j] for i in range(n))
            for i in range(n):
                x[i][j] -= lo
            s = sum(x[i][j] for i in range(n))
            for i in range(n):
                x[i][j] /= s
        return x

    x = renorm(x)
    for _ in range(iters):
        x = renorm([[sum(t[i][k] * x[k][j] for k in range(n)) for j in range(c)] for i in range(n)])
    assert np.allclose(fast[0].T.double().numpy(), np.array(x), atol=1e-6)


TINY = torch.finfo(torch.float32).tiny


def normalize_maps(x):
    """Ent-Self steps 1 and 6 with a guarded division: a constant map becomes zeros."""
    x = x - x.amin(dim=-1, keepdim=True)
    return x / x.sum(dim=-1, keepdim=True).clamp_min(TINY)


def guarded_loop(class_maps, transition, iters):
    """The loop as released, with every division guarded."""
    a = transition / transition.sum(dim=-1, keepdim=True).clamp_min(TINY)
    x = normalize_maps(class_maps)
    for _ in range(iters):
        x = normalize_maps(torch.bmm(x, a.transpose(1, 2)))
    return x


def test_refinement_equals_the_guarded_loop_bit_for_bit_also_where_a_map_goes_flat():
    gen = torch.Generator().manual_seed(3)
    n = 256
    sa = torch.softmax(torch.randn(3, n, n, generator=gen) * 3, dim=-1)
    transition = entropy_reduced_attention(sa, 0.015)
    # image 1: every query attends alike, so A' X is flat after one step (0 / 0 in the loop)
    transition[1] = transition[1, :1]
    x0 = torch.rand(3, 4, n, generator=gen)
    x0[0, 1] = 0.25  # a constant class map
    x0[2, 3] = 0  # a padding column
    for iters in (0, 1, 10):
        fast = refine_with_self_attention(x0, transition.clone(), iters)
        assert torch.equal(fast, guarded_loop(x0, transition, iters)), iters
    assert fast[1].abs().sum() == 0 and fast[0, 1].abs().sum() == 0 and fast[2, 3].abs().sum() == 0
    assert torch.isfinite(fast).all() and (fast[0, 0].sum() - 1).abs() < 1e-5


def test_refinement_launches_the_released_five_kernels_a_step():
    transition = entropy_reduced_attention(torch.softmax(torch.randn(1, 64, 64), -1), 0.015)
    _, counts = count_ops(refine_with_self_attention, torch.rand(1, 2, 64), transition, 10)
    # A' once (sum, guard, divide), X0 (min, subtract, sum, divide), 10 x (product, min, subtract,
    # sum, divide), one NaN -> 0 at the end; no host sync
    assert counts.launches == 3 + 4 + 10 * 5 + 1 and counts.syncs_total == 0, counts.describe()


def test_postprocess_backends_are_checked_and_the_cpu_runs_the_eager_steps():
    import copy
    import pickle
    from mmdiffseg.generators import ISeg
    from mmdiffseg.generators.iseg_graphs import ISegSteps
    gen = torch.Generator().manual_seed(5)
    sa = torch.softmax(torch.randn(2, 64, 64, generator=gen) * 3, dim=-1)
    x0 = torch.rand(2, 64, 3, generator=gen).transpose(1, 2)
    eager = refine_with_self_attention(x0, entropy_reduced_attention(sa, 0.015), 10)
    steps = ISegSteps('auto')
    assert not steps.graphed(sa)
    assert torch.equal(steps.ent_self(sa, x0, 0.015, 10, graphed=False), eager)
    with pytest.raises(ValueError, match=r"postprocess_backend='graph'.*cpu.*'auto' or 'torch'"):
        ISegSteps('graph').graphed(sa)
    with pytest.raises(ValueError, match=r"postprocess_backend must be one of .*'cuda'"):
        ISeg(postprocess_backend='cuda')
    iseg = ISeg(postprocess_backend='torch')
    iseg.steps.ent_self(sa, x0, 0.015, 10, graphed=False)  # holds a cache from now on
    assert len(iseg.steps._caches) == 1
    for twin in (copy.deepcopy(iseg), pickle.loads(pickle.dumps(iseg))):
        assert twin.steps.backend == 'torch' and twin.steps._caches == {}
    assert 'backend' not in str(iseg.config_dict())  # the same labels either way


def test_column_max_normalize_into_a_buffer_equals_the_new_tensor():
    sa = torch.softmax(torch.randn(2, 16, 16), dim=-1)
    buffer = torch.full_like(sa, float('nan'))
    from mmdiffseg.generators.iseg_steps import column_max_normalize
    assert column_max_normalize(sa, out=buffer) is buffer
    assert torch.equal(buffer, column_max_normalize(sa))
    assert torch.equal(buffer.amax(dim=-2), torch.ones(2, 16))


def test_a_key_no_query_attends_stays_zero_through_the_column_maxima():
    """An all-zero column of the self-attention gives zeros, not 0 / 0, and no NaN downstream."""
    from mmdiffseg.generators.iseg_steps import column_max_normalize
    sa = torch.tensor([[[0.5, 0.0, 0.5], [0.25, 0.0, 0.75], [1.0, 0.0, 0.0]]])
    out = column_max_normalize(sa)
    assert torch.equal(out, torch.tensor([[[0.5, 0.0, 2 / 3], [0.25, 0.0, 1.0], [1.0, 0.0, 0.0]]]))
    x = refine_with_self_attention(torch.tensor([[[1.0, 0.0, 3.0]]]),
                                   entropy_reduced_attention(sa, 0.015), 2)
    assert torch.isfinite(x).all() and x.sum() == pytest.approx(1.0)


def test_ent_zero_leaves_the_attention_unchanged_zeros_included():
    """``ent=0``: no entropy step, so an exact zero stays 0 (0 * log 0 would be NaN)."""
    from mmdiffseg.generators.iseg_steps import reduce_entropy_
    a = torch.tensor([[0.0, 0.5], [1.0, 0.25]])
    assert torch.equal(reduce_entropy_(a.clone(), 0.0), a)


def test_one_steps_object_runs_each_setting_with_its_own_steps():
    """The steps are cached per setting: a second ``ent`` / ``iters`` / k-means precision on the
    same :class:`ISegSteps` gives what a fresh one gives, not the first setting's result."""
    from mmdiffseg.generators.iseg_graphs import ISegSteps
    from mmdiffseg.generators.kmeans import cluster_mean, grid_seeds, kl_kmeans
    gen = torch.Generator().manual_seed(5)
    sa = torch.softmax(torch.randn(1, 64, 64, generator=gen) * 3, dim=-1)
    x0 = torch.rand(1, 2, 64, generator=gen)
    steps = ISegSteps('torch')
    for ent, iters in ((0.015, 10), (0.2, 10), (0.2, 3)):
        expected = refine_with_self_attention(x0, entropy_reduced_attention(sa, ent), iters)
        assert torch.equal(steps.ent_self(sa, x0, ent, iters, graphed=False), expected)
    # near-uniform token profiles: float16 distances cluster them otherwise than float32
    cross = torch.softmax(torch.randn(1, 1024, 8, generator=gen) * 0.05, dim=-1)
    seeds = grid_seeds(32, 16)
    results = []
    for precision, iters in (('float16', 5), ('float32', 5), ('float32', 1)):
        clusters = kl_kmeans(cross, seeds, iters, precision=precision)
        expected = cluster_mean(cross, clusters, seeds.numel())
        results.append(steps.smooth(cross, seeds, iters, precision, graphed=False))
        assert torch.equal(results[-1], expected), (precision, iters)
    assert not torch.equal(results[0], results[1]) and not torch.equal(results[1], results[2])
