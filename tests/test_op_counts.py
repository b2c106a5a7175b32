"""The CPU proxy of GPU cost (``benchmarks/op_counts.py``) on hand-counted calls."""
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))
from op_counts import OpCounts, count_ops  # noqa: E402


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


X = torch.tensor([0., 2., 0., 3., 1.])


def syncs(fn, x=X):
    return dict(count_ops(fn, x.clone())[1].syncs)


def test_data_dependent_operators_count_their_syncs():
    """bincount reads min and max (2); a boolean mask, read or written, is one; repeat_interleave
    syncs without ``output_size`` only; nonzero, unique, masked_select and equal one each."""
    assert syncs(lambda t: torch.bincount(t.long())) == {'bincount': 2}
    assert syncs(lambda t: t[t > 0]) == {'boolean mask': 1}
    assert syncs(lambda t: t.__setitem__(t > 0, 1.0)) == {'boolean mask': 1}
    assert syncs(lambda t: t.repeat_interleave(t.long())) == {'repeat_interleave': 1}
    assert syncs(lambda t: t.repeat_interleave(t.long(), output_size=6)) == {}
    assert syncs(torch.nonzero) == {'nonzero': 1}
    assert syncs(torch.unique) == {'unique': 1}
    assert syncs(lambda t: torch.masked_select(t, t > 0)) == {'masked_select': 1}
    assert syncs(lambda t: torch.equal(t, t)) == {'equal': 1}
    assert syncs(lambda t: t.masked_fill(t > 1, t.max())) == {'item': 1}  # a device value
    assert syncs(lambda t: t.masked_fill(t > 1, 5.0)) == {}


def test_transfers_follow_where_each_tensor_lives():
    """Device data read back is a D2H sync, host data never; a host tensor of one or more
    dimensions used in device work is an H2D copy, a 0-dim one (a kernel argument) is not; results
    of host work stay host tensors; ``new_tensor`` and ``torch.tensor(device=)`` copy; a factory on
    ``'cpu:0'`` is host work (no launch)."""
    assert syncs(lambda t: t.cpu()) == {'D2H': 1}
    assert syncs(lambda t: t.tolist()) == {'D2H': 1}
    assert syncs(lambda t: torch.tensor([1., 2.]).tolist()) == {}
    assert syncs(lambda t: t * torch.tensor(2.0)) == {}
    assert syncs(lambda t: t * torch.tensor([2.0])) == {'H2D': 1}
    assert syncs(lambda t: t + torch.tensor([1., 2., 3., 4., 5.]) * 2) == {'H2D': 1}
    assert syncs(lambda t: t.new_tensor([1., 2.])) == {'H2D': 1}
    assert syncs(lambda t: torch.tensor([1, 2], device=t.device)) == {'H2D': 1}
    _, counts = count_ops(lambda: torch.zeros(3, device='cpu:0') + 1)
    assert counts.launches == 0 and counts.syncs_total == 0


def test_loops_is_cuda_one_hot_and_describe():
    """Iterating over a device tensor is one host loop; ``is_cuda`` reads True for device tensors
    only under ``simulate_cuda``; ``one_hot`` with ``num_classes`` has no sync (CUDA does not check
    its input), without it does; ``describe`` gives bytes in MiB."""
    assert count_ops(lambda t: list(t.view(5, 1)), X)[1].loops == 1
    assert count_ops(lambda t: (t.is_cuda, torch.zeros(1).is_cuda), X)[0] == (True, False)
    assert count_ops(lambda t: t.is_cuda, X, simulate_cuda=False)[0] is False
    assert count_ops(lambda t: F.one_hot(t.long(), 5), X)[1].syncs_total == 0
    assert count_ops(lambda t: F.one_hot(t.long()), X)[1].syncs_total > 0
    assert '(100 MiB)' in OpCounts(bytes=100 * 2 ** 20).describe()


def test_move_targets_and_nested_uncounted_work():
    """``Tensor.to``'s device argument: a string, a ``torch.device`` or an int index is a device
    (``'cpu...'`` the host), bools (``non_blocking``, ``copy``) and dtypes are not; ``.cuda()``
    with no argument moves a host tensor to the device (a blocking H2D copy). Work inside nested
    uncounted blocks stays uncounted after the inner block ends."""
    from op_counts import _AtenCounter, _CallCounter, _uncounted
    counts = OpCounts()
    calls = _CallCounter(counts, _AtenCounter(counts), True)
    assert calls._target(('cpu:0',), {}) == 'host'
    assert calls._target((0,), {}) == 'device'
    assert calls._target((torch.device('cuda', 1),), {}) == 'device'
    assert calls._target((torch.float16, False, True), {}) == ''
    host = torch.zeros(2)
    calls.host[host] = True
    assert calls._classify('cuda', (host,), {}, [host]) is False
    assert dict(counts.syncs) == {'H2D': 1}

    def call(t):
        with _uncounted():
            with _uncounted():
                t * 2
            t * 3
        return t * 4
    assert count_ops(call, X)[1].launches == 1


def test_an_interpreted_triton_kernel_is_one_launch_and_nothing_inside(monkeypatch):
    """Under ``TRITON_INTERPRET=1`` each ``InterpretedFunction.run`` counts one launch and the
    torch work the interpreter does inside it none (a stand-in interpreter module here); the
    launcher is put back afterwards."""
    import types

    class InterpretedFunction:
        def run(self, t):
            return (t * 2).sum()  # the interpreter's own torch work: not counted

    monkeypatch.setitem(sys.modules, 'triton.runtime.interpreter',
                        types.SimpleNamespace(InterpretedFunction=InterpretedFunction))
    monkeypatch.setenv('TRITON_INTERPRET', '1')
    run = InterpretedFunction.run
    kernel = InterpretedFunction()
    out, counts = count_ops(lambda t: kernel.run(t) + kernel.run(t + 1), X)
    assert out.item() == 2 * 6 + 2 * 11 and counts.launches == 2 + 2  # kernels; t + 1 and the sum
    assert InterpretedFunction.run is run
