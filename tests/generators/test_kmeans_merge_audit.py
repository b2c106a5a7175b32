"""Mutation-audit tests of ``kmeans``, ``diffseg_merge`` and ``diffseg_first_pass``: known answers
from the released formulation (``transcriptions``) and hand-computed small cases."""
import pytest
import torch

from mmdiffseg.generators.kmeans import grid_seeds, kl_kmeans
from mmdiffseg.generators.transcriptions import iseg_clusters


@pytest.mark.parametrize('precision, kl_dtype', [('float16', torch.float16),
                                                 ('float32', torch.float32)])
def test_kl_kmeans_on_small_maps_with_zeros_equals_the_released_dfc_kl(precision, kl_dtype):
    """Maps of attention scale (1e-4) with exact zeros: the zeros become 1e-6, the seeds' own
    vectors (zeros replaced) start the centres and ``eps`` is added to both sides, as
    ``DFC_KL``; at this scale each of these changes the clusters of the transcription."""
    gen = torch.Generator().manual_seed(0)
    for trial in range(4):
        x = torch.rand(6, 8, 8, generator=gen) * 1e-4
        x[torch.rand(x.shape, generator=gen) < 0.4] = 0
        expected, _ = iseg_clusters(x, kl_dtype, number_cluster=4, stage_num=5)
        ours = kl_kmeans(x.flatten(1).T[None], grid_seeds(8, 4), 5, precision=precision)[0]
        assert torch.equal(torch.unique(ours, return_inverse=True)[1], expected), trial


def test_greedy_leaders_of_a_chain_of_four():
    """Chain 0-1-2-3 (each close to its neighbours only): 0 leads and takes 1; 2 leads and takes
    3; so the leaders are 0 and 2. From "all leaders", two rounds of the recurrence give 0, 2, 3
    (exact on the first t + 1 proposals after t rounds): a third is needed."""
    from mmdiffseg.generators.diffseg_merge import greedy_leaders
    close = torch.eye(4, dtype=torch.bool)
    for i in range(3):
        close[i, i + 1] = close[i + 1, i] = True
    small = torch.tensor([[True, True], [True, True]])
    (leaders, pair), counts = greedy_leaders([close, small])
    assert leaders.tolist() == [0, 2] and pair.tolist() == [0] and counts == [2, 1]


def test_a_merge_threshold_of_zero_keeps_every_proposal_as_it_is():
    """No pair is within a threshold of 0 (or below): each proposal leads a group of itself
    only, whatever its rounded self-distance, so the pass returns the proposals unchanged."""
    from mmdiffseg.generators.diffseg_merge import merge_proposals
    proposals = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.2, 0.3, 0.4]])
    for threshold in (0.0, -1.0):
        assert merge_proposals(proposals, threshold).equal(proposals)


def test_a_pixel_at_exactly_the_float16_threshold_is_not_matched_in_release_mode():
    """Release mode compares the float16 distance with the threshold in float16, strictly
    (``kl < threshold``): a pixel map whose distance equals the threshold stays out of the
    anchor's proposal, one just above it joins."""
    import numpy as np

    from mmdiffseg.generators.diffseg_first_pass import anchor_proposals
    from mmdiffseg.generators.functional import elementwise_symmetric_kl
    attn = torch.tensor([[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1]])
    at = elementwise_symmetric_kl(attn[:1], attn)[0, 1].item()  # the release's float16 value
    above = float(np.nextafter(np.float16(at), np.float16(np.inf)))
    assert at > 0
    alone = anchor_proposals(attn, torch.tensor([0]), threshold=at, precision='float16')[0]
    torch.testing.assert_close(alone, attn[0])
    both = anchor_proposals(attn, torch.tensor([0]), threshold=above, precision='float16')[0]
    torch.testing.assert_close(both, attn.mean(0))
