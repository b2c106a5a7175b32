"""Folders that cannot be written: read-only and full. Permission bits do not stop root, so as
root a small tmpfs is mounted (the test is skipped when that is not possible either)."""
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


@contextmanager
def readonly_folder(path):
    """An existing folder where creating files fails (EROFS as root, EACCES otherwise)."""
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with _tmpfs(path, 'ro,size=64k') as mounted:
        yield mounted


@contextmanager
def full_folder(path):
    """A folder on a 64 KiB file system (ENOSPC after a few files); root only."""
    if os.geteuid() != 0:
        pytest.skip('a full file system needs a tmpfs mount (root)')
    with _tmpfs(path, 'size=64k') as mounted:
        yield mounted
