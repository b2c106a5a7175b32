"""The bookkeeping of deferred head maps on the CPU (the kernel itself: test_map_kernel.py through
Triton's interpreter, test_deferred_maps_cuda.py on a GPU): which buffers are deferred, where each
layer's heads are staged, which staged heads a flush sums."""
import torch

from mmdiffseg.attention import map_kernel
from mmdiffseg.attention.deferred_maps import DEFER_MIN_BYTES, LayerStash


def _qkl(batch, heads, n_query=3, n_key=5, head_dim=2, start=0.0):
    q = torch.arange(batch * heads * n_query * head_dim, dtype=torch.float32).add_(start)
    return (q.view(batch, heads, n_query, head_dim), torch.zeros(batch, heads, n_key, head_dim),
            torch.full((batch, heads, n_query), start))


def test_a_buffer_of_defer_min_bytes_is_deferred_and_a_smaller_one_is_not():
    """DEFER_MIN_BYTES is the first deferred size (a 64x64 map at batch 4: 4 x 4096^2 float32)."""
    assert DEFER_MIN_BYTES == 4 * 4096 * 4096 * 4
    q, k, _ = _qkl(1, 2)
    stash = LayerStash({'a': (2, [0])}, 1.0)
    assert stash.accepts(q, k, DEFER_MIN_BYTES)
    assert not stash.accepts(q, k, DEFER_MIN_BYTES - 1)


def test_layers_are_staged_at_their_head_offsets_and_a_flush_sums_the_selected_ones(monkeypatch):
    """Layer a (4 heads, heads 1 and 3 averaged) is staged at heads 0..3, layer b (2 heads, head
    0) at 4..5: the flush sums staged heads 1, 3 and 4 with the request's weight. A layer of
    another batch size is not staged with them."""
    calls = []
    monkeypatch.setattr(map_kernel, 'add_head_maps',
                        lambda q, k, lse, scale, targets, scratch, overwrite: calls.append(
                            (targets[0][0].tolist(), targets[0][1][0][1], overwrite)))
    stash = LayerStash({'a': (4, [1, 3]), 'b': (2, [0])}, 1 / 3)
    assert stash.offsets == {'a': 0, 'b': 4} and stash.total_heads == 6
    qa, ka, la = _qkl(1, 4)
    qb, kb, lb = _qkl(1, 2, start=100.0)
    stash.add('a', qa, ka, la)
    assert stash.accepts(qb, kb, DEFER_MIN_BYTES)
    assert not stash.accepts(*_qkl(2, 2)[:2], DEFER_MIN_BYTES)
    stash.add('b', qb, kb, lb)
    query, _, lse = stash.stage
    assert torch.equal(query[:, :4], qa) and torch.equal(query[:, 4:], qb)
    assert torch.equal(lse[:, 4:], lb)
    stash.flush(torch.zeros(1, 3, 5), lambda *a: None, overwrite=True)
    assert calls == [([1, 3, 4], 1 / 3, True)] and not stash.pending
    stash.add('b', qb, kb, lb)   # a flush of layer b alone: its own head only
    stash.flush(torch.zeros(1, 3, 5), lambda *a: None)
    assert calls[1] == ([4], 1 / 3, False)


def test_a_layer_is_staged_only_with_layers_of_its_shapes_dtype_and_device():
    """The staging tensors hold the first staged layer's query rows, head size, key count, dtype
    and device: a layer differing in any of them is not staged (it is added at once)."""
    q, k, lse = _qkl(1, 2)
    stash = LayerStash({'a': (2, [0]), 'b': (2, [1])}, 0.5)
    stash.add('a', q, k, lse)
    assert stash.accepts(q, k, DEFER_MIN_BYTES)
    others = {'query rows': _qkl(1, 2, n_query=4), 'head size': _qkl(1, 2, head_dim=4),
              'key count': _qkl(1, 2, n_key=6), 'dtype': (q.half(), k.half(), lse),
              'device': (q.to('meta'), k.to('meta'), lse)}
    for what, (query, key, _) in others.items():
        assert not stash.accepts(query, key, DEFER_MIN_BYTES), what


def test_a_released_stash_drops_its_staging_tensors():
    """At the session's end the staging tensors go (their memory with them): a stash released
    holds none and stages the next layer afresh, whatever its batch size."""
    stash = LayerStash({'a': (2, [0])}, 1.0)
    stash.add('a', *_qkl(1, 2))
    stash.release()
    assert stash.stage is None and not stash.pending
    q, k, lse = _qkl(3, 2)
    assert stash.accepts(q, k, DEFER_MIN_BYTES)
    stash.add('a', q, k, lse)
    assert torch.equal(stash.stage[0], q)


def test_a_half_precision_layer_is_staged_as_is_with_its_float32_lse():
    """Query and key are staged in the layer's precision (the kernel reads them so); the row LSE
    stays float32: 1000.125 survives, which float16 would round to 1000."""
    q, k, lse = _qkl(1, 2)
    lse = torch.full_like(lse, 1000.125)
    stash = LayerStash({'a': (2, [0])}, 1.0)
    stash.add('a', q.half(), k.half(), lse)
    query, key, staged_lse = stash.stage
    assert query.dtype == key.dtype == torch.float16 and torch.equal(query, q.half())
    assert staged_lse.dtype == torch.float32 and torch.equal(staged_lse, lse)


def test_the_lse_and_the_flush_use_the_head_sizes_scale(monkeypatch):
    """A layer staged without an LSE has it computed with ``1/sqrt(head size)`` (head size 4,
    not the 3 query rows), and the flush sums with that same scale."""
    scales = []
    monkeypatch.setattr(map_kernel, 'row_lse', lambda q, k, scale: (
        scales.append(('lse', scale)), torch.zeros(q.shape[:3]))[1])
    monkeypatch.setattr(map_kernel, 'add_head_maps', lambda q, k, lse, scale, *a, **kw: (
        scales.append(('flush', scale))))
    stash = LayerStash({'a': (2, [0, 1])}, 0.5)
    q, k, _ = _qkl(1, 2, n_query=3, head_dim=4)
    stash.add('a', q, k, None)
    stash.flush(torch.zeros(1, 3, 5), lambda *a: None)
    assert scales == [('lse', 0.5), ('flush', 0.5)]
