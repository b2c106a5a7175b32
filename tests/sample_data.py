"""Where the shared sample data lives; tests import from here (``from sample_data import ...``).

Several folders have a ``conftest.py``, so ``from sample_data import`` would be ambiguous.
"""
import struct
import zlib
from pathlib import Path

import pytest

from mmdiffseg.attention.testing import shared_data_dir

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = shared_data_dir()


def shared_path(*parts) -> Path:
    """A path under the shared sample data; skips the test, naming the folder, when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f'sample data not found: {path} (set MMDIFFSEG_SHARED_DATA)')
    return path


def png_header(width: int, height: int) -> bytes:
    """A 1-bit grey PNG of that size whose pixels are not all there: what Pillow's open reads
    (the header) without the memory of the image."""
    def chunk(kind, data):
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I',
                                                                       zlib.crc32(kind + data))
    header = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)  # 1-bit grey
    return (b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header)
            + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))
