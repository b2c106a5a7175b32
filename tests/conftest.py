"""Shared fixtures: the sample data folder and single-threaded torch (fastest on 2 cores)."""
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
