"""DiffSeg's first pass (``mmdiffseg.generators.diffseg_first_pass``): the aggregation's guards,
the selection of a group's maps, and one graph per setting of :class:`FirstPass` (CUDA graphs
stood in for on the CPU by the ``replaying_graphs`` fixture)."""
import pytest
import torch

from mmdiffseg.generators.diffseg_first_pass import (FirstPass, aggregate_self_attention,
                                                     anchor_grid, images_of)


def test_a_query_that_attends_to_nothing_aggregates_to_zeros_not_nan():
    """A row of zeros is normalised by the smallest positive float, not by its zero sum: it
    stays zeros while the other rows become weighted distributions."""
    attn = torch.tensor([[1.0, 1.0, 2.0, 0.0], [0.0] * 4, [0.0, 0.0, 0.0, 3.0], [1.0] * 4])
    out = aggregate_self_attention([attn], [0.5], 2)
    assert out.tolist() == [[0.125, 0.125, 0.25, 0.0], [0.0] * 4, [0.0, 0.0, 0.0, 0.5],
                            [0.125] * 4]


def test_a_map_whose_tokens_are_not_a_square_is_refused_naming_it():
    with pytest.raises(ValueError, match=r'DiffSeg: self-attention \(5, 5\) has 5 tokens, not '
                                         r'a square grid'):
        aggregate_self_attention([torch.ones(5, 5)], [1.0], 4)


def test_images_of_views_consecutive_samples_and_gathers_others():
    maps = torch.arange(24.0).view(4, 2, 3)
    group = images_of(maps, [1, 2])
    assert torch.equal(group, maps[1:3]) and group.data_ptr() == maps[1].data_ptr()
    assert torch.equal(images_of(maps, [3, 0]), torch.stack([maps[3], maps[0]]))


def test_first_pass_records_one_graph_per_threshold_precision_and_weights(replaying_graphs):
    """A FirstPass called with other settings does not replay the graph of the first ones: each
    call equals the eager steps with its own threshold, precision and weights."""
    gen = torch.Generator().manual_seed(0)
    maps = [(torch.rand(1, r ** 4, generator=gen) * 20).view(1, r * r, r * r).softmax(-1)
            for r in (4, 8)]  # some values underflow float16: the precisions differ
    anchors = anchor_grid(4, 8)
    graphed, eager = FirstPass('auto'), FirstPass('torch')
    calls = [((0.5, 0.5), 1.0, 'float32'), ((0.5, 0.5), 3.0, 'float32'),
             ((0.5, 0.5), 3.0, 'float16'), ((0.9, 0.1), 3.0, 'float16')]
    results = []
    for weights, threshold, precision in calls + calls[:1]:
        args = maps, weights, 8, anchors, threshold, precision
        results.append(graphed(*args, graphed=True))
        assert torch.equal(results[-1], eager(*args, graphed=False))
    assert all(not torch.equal(a, b) for a, b in zip(results, results[1:4]))
    assert len(graphed._caches) == 4 and len(replaying_graphs) == 4
