"""iSeg's tensor steps and their graph wrapper, pinned down by a mutation audit: the guarded row
sum of the transition, and :class:`ISegSteps`' default backend and its ``graphed`` flag."""
import torch

from mmdiffseg.cuda_graphs import GraphCache
from mmdiffseg.generators.iseg_graphs import ISegSteps
from mmdiffseg.generators.iseg_steps import (entropy_reduced_attention,
                                             refine_with_self_attention)
from mmdiffseg.generators.kmeans import cluster_mean, grid_seeds, kl_kmeans


def test_a_query_whose_attention_all_falls_below_the_root_spreads_nothing():
    """Query 1 attends every key at 1/100 of the key's column maximum, below the entropy root
    (~0.019 at ent=0.015): its row of the transition is all zero, and its row sum is guarded, so
    that pixel gets 0 and the other pixels keep their maps (no 0 / 0 wiping every map).

    By hand: A' = [[.5, .5, 0], [0, 0, 0], [0, .5, .5]]; N([1, 0, 3]) = [.25, 0, .75], and
    A' [.25, 0, .75] = [.125, 0, .375], which N maps back to [.25, 0, .75] at every step."""
    sa = torch.tensor([[[0.5, 0.5, 0.0], [0.005, 0.005, 0.005], [0.0, 0.5, 0.5]]])
    transition = entropy_reduced_attention(sa, 0.015)
    assert torch.equal(transition[0, 1], torch.zeros(3))
    for iters in (1, 3):
        out = refine_with_self_attention(torch.tensor([[[1.0, 0.0, 3.0]]]), transition.clone(),
                                         iters)
        assert torch.allclose(out, torch.tensor([[[0.25, 0.0, 0.75]]]), atol=1e-6), iters


def test_the_steps_default_to_the_auto_backend_as_iseg_does():
    from mmdiffseg.generators import ISeg
    assert ISegSteps().backend == 'auto' == ISeg().steps.backend


def test_both_steps_replay_their_graph_when_asked(monkeypatch):
    """``graphed=True`` reaches the graph cache for the smoothing and for Ent-Self alike (a CPU
    stand-in for the replay records the call and runs the eager steps)."""
    replayed = []

    def fake_replay(cache, *inputs):
        replayed.append(cache.name)
        return cache.eager(*inputs)
    monkeypatch.setattr(GraphCache, '__call__', fake_replay)
    gen = torch.Generator().manual_seed(2)
    steps = ISegSteps('torch')
    cross = torch.softmax(torch.randn(1, 256, 6, generator=gen), dim=-1)
    seeds = grid_seeds(16, 4)
    smoothed = steps.smooth(cross, seeds, 3, 'float32', graphed=True)
    expected = cluster_mean(cross, kl_kmeans(cross, seeds, 3, precision='float32'), seeds.numel())
    assert torch.equal(smoothed, expected)
    sa = torch.softmax(torch.randn(1, 16, 16, generator=gen) * 3, dim=-1)
    x0 = torch.rand(1, 2, 16, generator=gen)
    refined = steps.ent_self(sa, x0, 0.015, 2, graphed=True)
    assert torch.equal(refined, refine_with_self_attention(
        x0, entropy_reduced_attention(sa, 0.015), 2))
    assert replayed == ['ISeg smooth', 'ISeg ent_self']
    steps.smooth(cross, seeds, 3, 'float32', graphed=False)
    steps.ent_self(sa, x0, 0.015, 2, graphed=False)
    assert len(replayed) == 2  # graphed=False stays eager
