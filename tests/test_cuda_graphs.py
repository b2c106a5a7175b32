"""``GraphCache``'s bookkeeping on the CPU: which graph a call replays, what fills its buffers,
which buffers graphs share, when graphs are dropped, and the eager fallback when recording fails.

CUDA graphs need a GPU; here ``record_graph`` is replaced by a recorder whose "graph" re-runs the
recorded steps on the same buffers into the same output tensor at each replay, which is what a
CUDA graph does (the ``replaying_graphs`` fixture of ``conftest.py``). A cache that replayed the
wrong graph, left a buffer unfilled or shared one that must not be shared returns wrong numbers
here. On a GPU the real graphs are checked by ``tests/generators/test_postprocess_graphs_cuda.py``
(the GPU suite's ``cuda_tests`` step).
"""
import contextlib

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from mmdiffseg import cuda_graphs
from mmdiffseg.cuda_graphs import AUTO_MAX_BYTES, GraphCache, use_graphs


def scale_rows(x, w):
    """Overwrites its first input, as Ent-Self's steps do."""
    return x.mul_(w[:, None]).cumsum(1)


def test_each_call_gets_its_own_inputs_result(replaying_graphs):
    cache = GraphCache(scale_rows, 'test', writers={0: lambda t, out=None: torch.mul(t, 2, out=out)})
    gen = torch.Generator().manual_seed(0)
    calls = [(torch.rand(3, 5, generator=gen), torch.rand(3, generator=gen)) for _ in range(3)]
    calls += [(torch.rand(2, 5, generator=gen), torch.rand(2, generator=gen)), calls[1]]
    for x, w in calls:
        x_before = x.clone()
        out = cache(x, w)
        assert torch.equal(out, scale_rows(2 * x_before, w))
        assert torch.equal(x, x_before)  # the caller's input is not the buffer fn overwrites
    assert len(cache.graphs) == 2 and len(replaying_graphs) == 2
    assert replaying_graphs == [None, 'pool']  # the second graph shares the first one's pool
    first = cache(*calls[0])
    second = cache(*calls[2])
    assert not torch.equal(first, second)  # a returned result is a copy, not the graph's output


def test_graphs_share_buffers_of_equal_layout_only(replaying_graphs):
    cache = GraphCache(lambda big, small: big.sum(1)[:, None] * small, 'test')
    big = torch.rand(2, 64)
    for classes in (1, 3, 1, 4):
        small = torch.rand(2, classes)
        assert torch.allclose(cache(big, small), big.sum(1)[:, None] * small)
    (_, b1, _), (_, b3, _), (_, b4, _) = cache.graphs.values()
    assert b1[0] is b3[0] is b4[0]  # one buffer for the large input
    assert len({id(b1[1]), id(b3[1]), id(b4[1])}) == 3
    assert len(cache.buffers) == 4


def test_past_max_graphs_the_least_recently_used_goes(replaying_graphs):
    cache = GraphCache(lambda x, w: x * w, 'test', max_graphs=2)
    weights = {n: torch.rand(n) for n in (1, 2, 3)}
    for n in (1, 2, 1, 3):  # 2 is the least recently used when 3 comes
        assert torch.equal(cache(torch.ones(n), weights[n]), weights[n])
    assert [layouts[0][0] for layouts in cache.graphs] == [(1, ), (3, )]
    assert len(cache.buffers) == 4  # the buffers of 2 went with its graph
    assert torch.equal(cache(torch.full((1, ), 2.0), weights[1]), 2 * weights[1])  # replayed
    assert len(replaying_graphs) == 3


def test_a_failed_recording_warns_once_and_runs_eagerly(monkeypatch):
    def refuse(warm_up, steps, pool=None):
        warm_up()
        raise RuntimeError('operation not permitted when stream is capturing')
    monkeypatch.setattr(cuda_graphs, 'record_graph', refuse)
    cache = GraphCache(lambda x: x + 1, 'ISeg ent_self')
    with pytest.warns(UserWarning, match=r'ISeg ent_self: recording into a CUDA graph failed '
                                         r'\(operation not permitted.*eagerly from now on'):
        assert torch.equal(cache(torch.zeros(2)), torch.ones(2))
    monkeypatch.setattr(cuda_graphs, 'record_graph', None)  # never called again
    assert torch.equal(cache(torch.ones(2)), torch.full((2, ), 2.0))


class _Stream:
    def wait_stream(self, other):
        pass


def stand_in_streams(monkeypatch, capture, **calls):
    """torch.cuda's streams, ``capture`` as ``torch.cuda.graph`` and ``calls`` stood in for (no
    GPU); returns the caller's stream."""
    current = _Stream()
    for name, value in dict(current_stream=lambda: current, Stream=_Stream, graph=capture,
                            **calls).items():
        monkeypatch.setattr(torch.cuda, name, value)
    return current


def test_a_capture_that_fails_to_end_leaves_the_caller_on_its_stream(monkeypatch):
    """``torch.cuda.graph``'s exit, when ending the capture raises, skips restoring the stream it
    switched to: ``record_graph`` restores the caller's, so the eager fallback does not run on the
    capture stream (torch.cuda's stream calls stood in for)."""
    streams = []

    class CaptureEndFails:
        def __init__(self, graph, pool=None, stream=None, capture_error_mode=None):
            self.stream = stream

        def __enter__(self):
            streams.append(self.stream)

        def __exit__(self, *exc):
            raise RuntimeError('operation not permitted when stream is capturing')
    current = stand_in_streams(monkeypatch, CaptureEndFails, CUDAGraph=object,
                               stream=lambda s: contextlib.nullcontext(),
                               set_stream=streams.append)
    with pytest.raises(RuntimeError, match='stream is capturing'):
        cuda_graphs.record_graph(lambda: None, lambda: None)
    assert len(streams) == 2 and streams[0] is not current and streams[-1] is current


def test_copies_carry_no_graphs(replaying_graphs):
    import copy
    import pickle
    cache = GraphCache(lambda x: x * 3, 'test')
    cache(torch.ones(2))
    for twin in (copy.deepcopy(cache), pickle.loads(pickle.dumps(GraphCache(torch.neg, 'neg')))):
        assert twin.graphs == {} and twin.buffers == {} and twin.pool is None
    assert len(cache.graphs) == 1


def test_auto_replays_graphs_up_to_auto_max_bytes_of_a_cuda_map():
    """'auto' replays graphs for a CUDA batch whose largest map holds at most AUTO_MAX_BYTES
    (bytes, not elements: twice the float16 elements fit), never on the CPU; 'graph' always
    (on CUDA), 'torch' never. Fake CUDA tensors: shapes and devices without a GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from mmdiffseg.cuda_graphs import AUTO_MAX_BYTES, use_graphs
    with FakeTensorMode():
        at_limit = torch.empty(AUTO_MAX_BYTES // 4, device='cuda')
        past = torch.empty(AUTO_MAX_BYTES // 4 + 1, device='cuda')
        half = torch.empty(AUTO_MAX_BYTES // 4 + 1, device='cuda', dtype=torch.float16)
    assert use_graphs('auto', at_limit, 'x') and use_graphs('auto', half, 'x')
    assert not use_graphs('auto', past, 'x') and use_graphs('graph', past, 'x')
    assert not use_graphs('torch', at_limit, 'x')
    assert not use_graphs('auto', torch.empty(4), 'x')


def test_an_input_of_another_dtype_gets_its_own_graph(replaying_graphs):
    """A float64 call after a float32 one of the same shape is not squeezed through the float32
    graph's buffer: its result keeps float64 and its digits."""
    cache = GraphCache(lambda x: x / 3, 'test')
    cache(torch.ones(2))
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = cache(x)
    assert out.dtype == torch.float64 and torch.equal(out, x / 3)
    assert len(cache.graphs) == 2


def test_on_another_device_the_graphs_are_dropped_and_recorded_there(replaying_graphs):
    """The graphs and buffers of one device are not replayed for inputs on another (here the
    meta device stands for a second GPU): they are dropped and a graph is recorded there."""
    cache = GraphCache(lambda x: x * 3, 'test')
    assert torch.equal(cache(torch.ones(2)), torch.full((2, ), 3.0))
    out = cache(torch.ones(2, device='meta'))
    assert out.device.type == 'meta' and len(replaying_graphs) == 2
    assert [b.device.type for b in cache.buffers.values()] == ['meta']
    assert torch.equal(cache(torch.ones(2)), torch.full((2, ), 3.0))


def test_the_eager_fallback_writes_the_inputs_and_leaves_the_callers(monkeypatch):
    """When recording fails, the call that found out returns what every later (eager) call
    would: fn on the written input (here doubled), and the caller's tensor is not overwritten."""
    def refuse(warm_up, steps, pool=None):
        raise RuntimeError('operation not permitted when stream is capturing')
    monkeypatch.setattr(cuda_graphs, 'record_graph', refuse)
    double = {0: lambda t, out=None: torch.mul(t, 2, out=out)}
    cache = GraphCache(scale_rows, 'test', writers=double)
    x, w = torch.ones(2, 3), torch.tensor([1.0, 3.0])
    with pytest.warns(UserWarning, match='eagerly from now on'):
        first = cache(x, w)
    assert torch.equal(first, scale_rows(2 * torch.ones(2, 3), w))
    assert torch.equal(first, cache(x, w))
    assert torch.equal(x, torch.ones(2, 3))


def test_graphed_steps_record_only_graphed_calls_and_count_buffer_bytes(replaying_graphs):
    """GraphedSteps.run records a graph only when asked (graphed=True); buffer_bytes is the bytes
    of the recorded graphs' input buffers (float64: 8 a value)."""
    from mmdiffseg.cuda_graphs import GraphedSteps
    steps = GraphedSteps('auto', 'Test')
    x = torch.arange(6, dtype=torch.float64)
    assert torch.equal(steps.run(('neg', ), torch.neg, False, x), -x)
    assert replaying_graphs == [] and steps.buffer_bytes() == 0
    assert torch.equal(steps.run(('neg', ), torch.neg, True, x), -x)
    assert len(replaying_graphs) == 1 and steps.buffer_bytes() == 6 * 8


def test_an_input_of_another_stride_gets_its_own_graph_and_keeps_its_layout(replaying_graphs):
    """A transposed input of a recorded shape is not copied into the contiguous buffer: it gets
    a graph of its own whose result has the layout the eager call gives."""
    cache = GraphCache(lambda x: x * 2, 'test')
    cache(torch.ones(2, 3))
    x = torch.arange(6.0).view(3, 2).t()
    out = cache(x)
    assert torch.equal(out, x * 2) and out.stride() == (x * 2).stride() == (1, 2)
    assert len(cache.graphs) == 2


def test_graphed_steps_copies_and_pickles_carry_no_caches(replaying_graphs):
    """A GraphedSteps that ran a local function (not picklable) still pickles, and its copies
    start with no caches: they record their own graphs."""
    import copy
    import pickle
    from mmdiffseg.cuda_graphs import GraphedSteps
    steps = GraphedSteps('auto', 'Test')
    x = torch.ones(2)
    assert torch.equal(steps.run(('add', ), lambda t: t + 1, True, x), x + 1)
    for twin in (copy.deepcopy(steps), pickle.loads(pickle.dumps(steps))):
        assert twin._caches == {} and twin.backend == 'auto' and twin.owner == 'Test'
    assert len(steps._caches) == 1


def test_auto_limit_is_four_4096_square_float32_self_attentions():
    """AUTO_MAX_BYTES is what its comment says: 4 images of 4096x4096 float32 self-attention
    (256 MiB), so such a batch still replays graphs on 'auto' and a fifth image does not."""
    assert AUTO_MAX_BYTES == 4 * 4096 * 4096 * 4
    with FakeTensorMode():
        four = torch.empty(4, 4096, 4096, device='cuda')
        five = torch.empty(5, 4096, 4096, device='cuda')
    assert use_graphs('auto', four, 'x')
    assert not use_graphs('auto', five, 'x')


def test_a_recording_returns_the_warm_up_result_marked_as_used_on_the_callers_stream(
        monkeypatch):
    """The warm-up runs on the side stream and its tensor is marked used on the caller's stream
    (the caller reads it; freed, its block must not go to the side stream's next allocation
    before that read); the steps run inside the capture, on that side stream; the graph, the
    warm-up's result and the steps' outputs come back, with the caller's stream current again
    (torch.cuda's stream calls stood in for)."""
    events = []

    class Capture:
        def __init__(self, graph, pool=None, stream=None, capture_error_mode=None):
            self.stream = stream

        def __enter__(self):
            events.append(('capture', self.stream))

        def __exit__(self, *exc):
            events.append(('captured', ))
    current = stand_in_streams(monkeypatch, Capture, CUDAGraph=list,
                               stream=lambda s: contextlib.nullcontext(events.append(('on', s))),
                               set_stream=lambda s: events.append(('set', s)))
    monkeypatch.setattr(torch.Tensor, 'record_stream',
                        lambda t, s: events.append(('used on', s)), raising=False)
    warm = torch.ones(2)
    graph, got_warm, out = cuda_graphs.record_graph(lambda: warm,
                                                    lambda: events.append(('steps', )) or 'out')
    side = events[0][1]
    assert side is not current and graph == [] and got_warm is warm and out == 'out'
    assert events == [('on', side), ('used on', current), ('capture', side), ('steps', ),
                      ('captured', ), ('set', current)]


def test_graphed_steps_repr_names_the_backend():
    from mmdiffseg.cuda_graphs import GraphedSteps
    assert repr(GraphedSteps('graph', 'ISeg')) == "GraphedSteps(backend='graph')"
