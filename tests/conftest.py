"""Shared fixtures: the sample data folder and single-threaded torch (fastest on 2 cores)."""
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('MMDIFFSEG_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_path(*parts) -> Path:
    """A path under the shared sample data; skips the test, naming the folder, when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'sample data not found: {path} (set MMDIFFSEG_SHARED_DATA)')
    return path


@pytest.fixture
def shared_data():
    return shared_path


@pytest.fixture
def sd_config_dir():
    def get(name: str) -> Path:
        return shared_path('sd_configs', name)
    return get
