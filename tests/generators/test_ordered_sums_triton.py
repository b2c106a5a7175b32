"""The Triton kernel of the CPU-order cluster sums (iSeg's float16 k-means on a GPU).

Its bit-for-bit cases run in a child pytest process under ``TRITON_INTERPRET=1``
(``interpreted_ordered_sums.py``); this process checks the backend choice and its errors.
"""
import importlib.util
from pathlib import Path

import pytest
import torch
from interpreted import run_interpreted

from mmdiffseg.generators.ordered_sums import cpu_order_cluster_sums


@pytest.mark.skipif(importlib.util.find_spec('triton') is None,
                    reason='triton is not installed (a test extra: pip install -e ".[tests]")')
def test_cluster_sums_kernel_under_the_triton_interpreter():
    run_interpreted(Path(__file__).with_name('interpreted_ordered_sums.py'), passed=7)


def test_backends_are_checked_and_the_cpu_takes_the_pytorch_path(monkeypatch):
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    x, clusters = torch.rand(1, 40, 8), torch.randint(0, 3, (1, 40))
    assert torch.equal(cpu_order_cluster_sums(x, clusters, 3),
                       cpu_order_cluster_sums(x, clusters, 3, backend='torch'))
    with pytest.raises(ValueError, match=r"backend='triton'.*TRITON_INTERPRET=1.*'auto' or 'torch'"):
        cpu_order_cluster_sums(x, clusters, 3, backend='triton')
    with pytest.raises(ValueError, match='backend must be one of'):
        cpu_order_cluster_sums(x, clusters, 3, backend='cuda')
    with pytest.raises(ValueError, match=r'float32 rows needed.*\.float\(\)'):
        cpu_order_cluster_sums(x.half(), clusters, 3)

