"""Shared fixtures: the sample data folder, single-threaded torch (fastest on 2 cores), CUDA graphs
stood in for on the CPU."""
import pytest
import torch

from sample_data import shared_path

torch.set_num_threads(1)


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture
def sd_config_dir():
    def get(name: str):
        return shared_path('sd_configs', name)
    return get


class ReplayingGraph:
    """A CUDA graph's stand-in: each replay re-runs the recorded steps on the same buffers into the
    same output tensor, which is what a CUDA graph does."""

    def __init__(self, steps, out):
        self.steps, self.out = steps, out

    def replay(self):
        self.out.copy_(self.steps())

    def pool(self):
        return 'pool'


@pytest.fixture
def replaying_graphs(monkeypatch):
    """``mmdiffseg.cuda_graphs.record_graph`` recording :class:`ReplayingGraph` s on the CPU; the
    fixture's value lists the ``pool`` argument of each recording."""
    from mmdiffseg import cuda_graphs
    recorded = []

    def record(warm_up, steps, pool=None):
        warm = warm_up()
        out = steps().clone()  # a recorded output: its own memory, rewritten by each replay
        recorded.append(pool)
        return ReplayingGraph(steps, out), warm, out
    monkeypatch.setattr(cuda_graphs, 'record_graph', record)
    return recorded
