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
