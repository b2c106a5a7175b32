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


def test_a_centre_shift_of_exactly_tol_times_the_mean_variance_stops():
    """The rule is ``shift <= tol * variance``: points 0, 3, 8, 13 (variance 24.5) from 0 and 1
    move to 0 and 8 (squared shift 49 = 2 * 24.5): tol 2 stops there, a smaller tol goes on to
    the fixed point 1.5, 10.5."""
    x = torch.tensor([[0.0], [3.0], [8.0], [13.0]])
    init = torch.tensor([[0.0], [1.0]])
    centers, labels = kmeans(x, init, tol=2.0)
    assert centers.flatten().tolist() == [0.0, 8.0] and labels.tolist() == [0, 0, 1, 1]
    centers, labels = kmeans(x, init, tol=1.99)
    assert centers.flatten().tolist() == [1.5, 10.5] and labels.tolist() == [0, 0, 1, 1]


def test_as_many_centres_as_points_is_allowed():
    """K = N is a valid start (each point its own cluster); only K > N is refused."""
    x = torch.tensor([[0.0], [1.0], [10.0]])
    centers, labels = kmeans(x, x.flip(0))
    assert centers.flatten().tolist() == [10.0, 1.0, 0.0] and labels.tolist() == [2, 1, 0]
    with pytest.raises(ValueError, match='kmeans: 4 initial centres for only 3 points'):
        kmeans(x, torch.zeros(4, 1))


def test_grid_seeds_refuse_more_clusters_than_the_grid_holds():
    from mmdiffseg.generators.kmeans import grid_seeds
    assert grid_seeds(4, 4).tolist() == [0, 2, 8, 10]
    assert grid_seeds(2, 4).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match=r'ISeg: num_clusters=5 is more than the 2x2 self-'
                                         r'attention grid .* set num_clusters to at most 4'):
        grid_seeds(2, 5)


def test_a_cluster_whose_only_point_is_relocated_keeps_a_zero_centre_as_sklearn():
    """Centres 2 and 3 are empty at first and take the farthest points, 4.5 (centre 0's only
    point) and 14: centre 0 is left with no point and becomes 0 (sklearn's sum minus the moved
    point), not 0 / 0; next step it takes 11.5, the point farthest from its centre; then the
    labels hold."""
    x = torch.tensor([[4.5], [9.0], [10.0], [11.5], [14.0]])
    init = torch.tensor([[0.0], [10.0], [1000.0], [-1000.0]])
    centers, labels = kmeans(x, init, max_iter=1)
    torch.testing.assert_close(centers.flatten(), torch.tensor([0.0, 61 / 6, 4.5, 14.0]))
    assert labels.tolist() == [2, 1, 1, 1, 3]  # of the centres returned, not the initial ones
    centers, labels = kmeans(x, init)
    assert centers.flatten().tolist() == [11.5, 9.5, 4.5, 14.0]
    assert labels.tolist() == [2, 1, 1, 0, 3]
