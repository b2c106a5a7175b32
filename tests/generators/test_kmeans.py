"""Lloyd's k-means of DiffSeg's refinement (``mmdiffseg.generators.kmeans``), as sklearn's
``KMeans(init=centres, n_init=1)``: hand-computed iterations, empty-cluster relocation and the
stopping rule."""
import pytest
import torch

from mmdiffseg.generators.kmeans import kmeans


def test_kmeans_lloyd_by_hand_and_empty_cluster_relocation():
    x = torch.tensor([[0.0], [1.0], [10.0], [11.0]])
    centers, labels = kmeans(x, torch.tensor([[0.0], [1.0]]))
    # iteration 1: {0}, {1, 10, 11} -> 0, 7.33; iteration 2: {0, 1}, {10, 11} -> 0.5, 10.5
    torch.testing.assert_close(centers, torch.tensor([[0.5], [10.5]]))
    assert labels.tolist() == [0, 0, 1, 1]
    # centres nobody picks take the points farthest from their centre (sklearn's relocation):
    # all points go to 0 first; 11 (farthest) moves to centre 1, 10 to centre 2
    centers, labels = kmeans(x, torch.tensor([[0.0], [100.0], [-100.0]]))
    torch.testing.assert_close(centers, torch.tensor([[0.5], [11.0], [10.0]]))
    assert labels.tolist() == [0, 0, 2, 1]
    with pytest.raises(ValueError, match='initial centres'):
        kmeans(x, torch.zeros(5, 1))


def test_kmeans_stops_when_the_centres_shift_less_than_tol_times_the_mean_variance():
    """sklearn's rule: stop once the total squared centre shift is at most ``tol`` times the
    mean (not the sum) of the features' variances, although labels still change. The points'
    variances are 25.25 and 0 (mean 12.625); the first step moves centre 1 from 1 to 22/3
    (squared shift 361/9 = 40.1), the second to 10.5."""
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]])
    init = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    one_step = torch.tensor([[0.0, 0.0], [22 / 3, 0.0]])
    converged = torch.tensor([[0.5, 0.0], [10.5, 0.0]])
    torch.testing.assert_close(kmeans(x, init, tol=3.3)[0], one_step)   # 40.1 <= 41.7
    torch.testing.assert_close(kmeans(x, init, tol=2.5)[0], converged)  # 40.1 > 31.6
    centers, labels = kmeans(x, init, tol=1e9)
    torch.testing.assert_close(centers, one_step)
    assert labels.tolist() == [0, 0, 1, 1]      # the labels of the centres returned
