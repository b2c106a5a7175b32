"""Output folders that cannot be written: read-only and full (a small tmpfs when running as root,
where permission bits do not stop writes; skipped when neither is possible)."""
import os
import subprocess
from contextlib import contextmanager

import pytest


@contextmanager
def _tmpfs(path, options):
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(path)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f'cannot mount a tmpfs for this test: {result.stderr.strip()}')
    try:
        yield path
    finally:
        subprocess.run(['umount', str(path)], check=False)


@pytest.fixture
def readonly_dir(tmp_path):
    """An existing folder where creating files fails (EROFS as root, EACCES otherwise)."""
    path = tmp_path / 'readonly'
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    with _tmpfs(path, 'ro,size=64k') as mounted:
        yield mounted


@pytest.fixture
def full_dir(tmp_path):
    """A folder on a 64 KiB file system (ENOSPC after a few files); root only."""
    if os.geteuid() != 0:
        pytest.skip('a full file system needs a tmpfs mount (root)')
    with _tmpfs(tmp_path / 'full', 'size=64k') as mounted:
        yield mounted
