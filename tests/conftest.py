"""Shared fixtures: the sample data folder, single-threaded torch (fastest on 2 cores), CUDA graphs
stood in for on the CPU."""
import sys
from pathlib import Path

import pytest
import torch

from sample_data import shared_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))  # op_counts

torch.set_num_threads(1)


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture
def sd_config_dir():
    def get(name: str):
        return shared_path('sd_configs', name)
    return get


@pytest.fixture
def replaying_graphs(monkeypatch):
    """``mmdiffseg.cuda_graphs.record_graph`` recording stand-ins of CUDA graphs on the CPU
    (``benchmarks/op_counts.py``: a replay re-runs the recorded steps on the graph's buffers); the
    fixture's value lists the ``pool`` argument of each recording."""
    from mmdiffseg import cuda_graphs
    from op_counts import record_stand_in
    recorded = []

    def record(warm_up, steps, pool=None):
        recorded.append(pool)
        return record_stand_in(warm_up, steps, pool)
    monkeypatch.setattr(cuda_graphs, 'record_graph', record)
    return recorded
