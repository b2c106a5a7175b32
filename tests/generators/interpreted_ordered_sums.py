"""The Triton CPU-order cluster sums on CPU tensors through Triton's interpreter.

Not collected by ``pytest tests`` (no ``test_`` prefix): ``test_ordered_sums_triton.py`` runs this
file in a subprocess with ``TRITON_INTERPRET=1``, which Triton reads when a kernel is decorated.
The references are the CPU's own ``x[cluster == c].sum(0)`` (on the threads given) and the
PyTorch emulation; the kernel must equal both bit for bit.
"""
import os
import sys
from pathlib import Path

import pytest
import torch

from mmdiffseg.generators.ordered_sums import cpu_order_cluster_sums

assert os.environ.get('TRITON_INTERPRET') == '1', \
    'run through tests/generators/test_ordered_sums_triton.py'
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
from op_counts import count_ops  # noqa: E402


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rows_and_clusters(n, d, k, seed):
    """Two images of ``n`` rows; cluster ``k - 1`` empty, image 1's first half in cluster 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(2, n, d, generator=gen) * torch.rand(2, n, 1, generator=gen) ** 4
    clusters = torch.randint(0, k - 1, (2, n), generator=gen)
    clusters[1, : n // 2] = 0
    return x, clusters


@pytest.mark.parametrize('n, d, k, threads', [
    (37, 8, 4, 1),      # fewer rows than a block; 8 columns: row_sum only
    (600, 77, 12, 1),   # iSeg's 77 tokens: 64 columns multi_row_sum, 13 row_sum
    (300, 200, 5, 1),   # several column blocks of each kind
    (4500, 9, 2, 1),    # a cluster of more than 4096 rows: two runs
    (700, 100, 3, 16),  # a third launch: columns 96-99 summed as ATen's thread parts sum them
])
def test_kernel_sums_equal_the_cpu_sums_bit_for_bit(n, d, k, threads):
    x, clusters = rows_and_clusters(n, d, k, seed=n)
    if n > 4096:
        clusters[0, :4200] = 0
    sums = cpu_order_cluster_sums(x, clusters, k, backend='triton', threads=threads)
    assert torch.equal(sums, cpu_order_cluster_sums(x, clusters, k, backend='torch',
                                                    threads=threads))
    torch.set_num_threads(threads)
    for b in range(2):
        for c in range(k):
            assert torch.equal(sums[b, c], x[b][clusters[b] == c].sum(0)), (b, c)
    assert not sums[:, k - 1].any()  # the empty cluster


def test_auto_takes_the_kernel_here_with_two_launches_instead_of_hundreds():
    x, clusters = rows_and_clusters(200, 77, 6, seed=0)
    counted = {}
    for backend in ('auto', 'torch'):
        sums, counted[backend] = count_ops(cpu_order_cluster_sums, x, clusters, 6,
                                           backend=backend)
        assert counted[backend].syncs_total == 0, counted[backend].describe()
    # sort, gather, counts, starts and the two kernels (13), against ~300 operators
    assert counted['auto'].launches <= 16 and counted['torch'].launches >= 150


def test_runs_of_4096_rows_are_summed_apart_then_added():
    """Known answers for clusters of more than 4096 rows (lane rows for ``row_sum``): in column
    0 (``multi_row_sum``) and 32 (``row_sum``, lane 0) two 1s in the second half of the first run
    vanish one by one into 2 ** 24 (ties to even); in columns 1 and 33 two 1s in the second run
    add to 2 first, then to 2 ** 24, which keeps them. Runs of 2048 rows, or the groups added
    straight to the total, give the other answer."""
    n, d = 17603, 35  # cluster 0: the first 17600 rows (4400 a lane); cluster 1: the last 3
    x = torch.zeros(1, n, d)
    x[0, 0, :] = 2.0 ** 24
    x[0, [2048, 2304], 0] = x[0, [4096, 4352], 1] = 1.0
    x[0, [4 * 2048, 4 * 2304], 32] = x[0, [4 * 4096, 4 * 4352], 33] = 1.0
    x[0, n - 3:] = 0.5
    clusters = torch.zeros(1, n, dtype=torch.long)
    clusters[0, n - 3:] = 1
    sums = cpu_order_cluster_sums(x, clusters, 2, backend='triton', threads=1)
    big = 2.0 ** 24
    expected = torch.full((d, ), big)
    expected[[1, 33]] = big + 2
    assert torch.equal(sums[0, 0], expected)
    assert torch.equal(sums[0, 1], torch.full((d, ), 1.5))
    assert torch.equal(sums[0, 0], x[0, :n - 3].sum(0))
    assert torch.equal(sums, cpu_order_cluster_sums(x, clusters, 2, backend='torch', threads=1))
