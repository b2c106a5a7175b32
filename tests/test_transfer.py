"""Host-to-device tables copied without a host-device sync (``mmdiffseg/transfer.py``), counted
with the CPU proxy of GPU cost (``benchmarks/op_counts.py``)."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
from op_counts import count_ops  # noqa: E402


def test_padded_table_pads_marks_and_copies_without_a_sync():
    from mmdiffseg.transfer import padded_table
    x = torch.zeros(1)
    (table, valid), counts = count_ops(lambda t: padded_table([[3, 1], [7], []], t.device, fill=9),
                                       x)
    assert table.tolist() == [[3, 1], [7, 9], [9, 9]]
    assert valid.tolist() == [[True, True], [True, False], [False, False]]
    assert counts.syncs_total == 0 and counts.async_h2d == 2
    table, valid = padded_table([[4], [5]], 'cpu')
    assert table.tolist() == [[4], [5]] and valid is None


def test_host_to_device_gives_the_asked_dtype_int64_by_default():
    """Lists and CPU tensors alike come out as ``dtype`` (int64 unless told); the validity mask
    of a padded table is bool."""
    from mmdiffseg.transfer import host_to_device, padded_table
    assert host_to_device([[1, 2]], 'cpu').dtype == torch.int64
    assert host_to_device(torch.tensor([1, 2], dtype=torch.int32), 'cpu').dtype == torch.int64
    half = host_to_device(torch.tensor([1, 3]), 'cpu', torch.float16)
    assert half.dtype == torch.float16 and half.tolist() == [1.0, 3.0]
    table, valid = padded_table([[1], []], 'cpu')
    assert table.dtype == torch.int64 and valid.dtype == torch.bool


def test_padded_table_is_as_wide_as_its_longest_row_wherever_it_is():
    from mmdiffseg.transfer import padded_table
    table, valid = padded_table([[], [5], [1, 2, 3]], 'cpu', fill=-1)
    assert table.tolist() == [[-1, -1, -1], [5, -1, -1], [1, 2, 3]]
    assert valid.tolist() == [[False] * 3, [True, False, False], [True] * 3]
