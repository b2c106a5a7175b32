"""The CPU proxy of GPU cost (``benchmarks/op_counts.py``) on hand-counted calls."""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
from op_counts import count_ops  # noqa: E402


def test_launches_bytes_and_syncs_of_small_calls():
    x = torch.ones(4, 8)  # 128 bytes

    def call(t):
        t.add_(1)  # reads 128, writes 128
        row = t[:1]  # a view: no launch
        product = t * row.expand(4, 8)  # 128 + 32 (a broadcast row counts once) + 128
        return product.sum().item()  # 128 + 4, then a sync
    value, counts = count_ops(call, x)
    assert value == 4 * 8 * 4
    assert counts.launches == 3
    assert counts.bytes == 256 + 288 + 132
    assert dict(counts.syncs) == {'item': 1}


def test_host_to_device_copies():
    x = torch.zeros(3)

    def call(t):
        t[[0, 2]] = 1.0  # a Python list as an index: copied to the device first
        return t + torch.tensor([1.0, 2.0, 3.0]).to(t.device, non_blocking=True)  # queued
    _, counts = count_ops(call, x)
    assert dict(counts.syncs) == {'H2D': 1} and counts.async_h2d == 1



def test_cuda_graphs_recorded_through_the_package_count_one_launch_a_replay():
    from mmdiffseg.cuda_graphs import GraphCache

    def steps(x):  # three launches
        return (x * 2).add_(1).neg_()
    cache = GraphCache(steps, 'test')
    x = torch.rand(5)
    out, recording = count_ops(cache, x)  # fill (copy), warm-up (3); the capture launches nothing
    assert torch.equal(out, steps(x)) and recording.launches == 1 + 3
    y = torch.rand(5)
    out, replay = count_ops(cache, y)  # fill, one replay, the copy out
    assert torch.equal(out, steps(y)) and replay.launches == 3
    assert torch.equal(cache(x), steps(x))  # a replay outside a count runs too
