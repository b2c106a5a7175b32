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
