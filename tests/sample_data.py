"""Where the shared sample data lives; tests import from here (``from sample_data import ...``).

Several folders have a ``conftest.py``, so ``from sample_data import`` would be ambiguous.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get('MMDIFFSEG_SHARED_DATA', REPO.parent / 'shared' / 'data'))


def shared_path(*parts) -> Path:
    """A path under the shared sample data; skips the test, naming the folder, when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'sample data not found: {path} (set MMDIFFSEG_SHARED_DATA)')
    return path
