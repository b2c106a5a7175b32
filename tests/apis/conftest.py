"""Unwritable output folders for the runner's error tests."""
import pytest
from unwritable import full_folder, readonly_folder


@pytest.fixture
def readonly_dir(tmp_path):
    with readonly_folder(tmp_path / 'readonly') as path:
        yield path


@pytest.fixture
def full_dir(tmp_path):
    with full_folder(tmp_path / 'full') as path:
        yield path
