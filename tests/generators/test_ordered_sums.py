"""The row limit of :func:`cpu_order_cluster_sums` (``MAX_ROWS = 2 ** 16`` per image): the
largest image allowed still gives the CPU's bits, one row more is refused with the reason."""
import pytest
import torch

from mmdiffseg.generators.ordered_sums import cpu_order_cluster_sums


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # ATen's CPU sum order with one thread (see ordered_sums)
    yield
    torch.set_num_threads(threads)


def test_an_image_of_2_to_the_16_rows_is_summed_in_cpu_order_and_one_more_is_refused():
    gen = torch.Generator().manual_seed(0)
    n = 2 ** 16
    x = torch.rand(1, n, 3, generator=gen) * torch.rand(1, n, 1, generator=gen) ** 4
    clusters = (torch.rand(1, n, generator=gen) < 0.1).long()  # cluster 0: ~90% of the rows
    sums = cpu_order_cluster_sums(x, clusters, 2, backend='torch')
    for c in range(2):
        assert torch.equal(sums[0, c], x[0][clusters[0] == c].sum(0)), c
    with pytest.raises(ValueError, match=r'65537 rows per image.*up to 65536'):
        cpu_order_cluster_sums(torch.rand(1, n + 1, 3), torch.zeros(1, n + 1, dtype=torch.long),
                               2, backend='torch')
