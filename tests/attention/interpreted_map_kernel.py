"""The Triton map kernels on CPU tensors through Triton's interpreter, against float64 references.

Not collected by ``pytest tests`` (no ``test_`` prefix): ``test_map_kernel.py`` runs this file in a
subprocess with ``TRITON_INTERPRET=1``, which Triton reads when a kernel is decorated, i.e. before
``mmdiffseg.attention.map_kernel`` is imported. The interpreter takes tens of milliseconds per
128 x 128 tile and head (float16 more: numpy multiplies it without BLAS), so 64x64 self-attention
runs on a slice of 128 query rows against all 4096 keys (the kernel's indexing does not depend on
the query count), 32x32 on 256 rows.
"""
import math
import os

import pytest
import torch
from sample_data import shared_path

from mmdiffseg.attention import CaptureRequest, CaptureSpec
from mmdiffseg.attention.head_maps import add_head_maps

assert os.environ.get('TRITON_INTERPRET') == '1', 'run through tests/attention/test_map_kernel.py'
from mmdiffseg.attention import map_kernel  # noqa: E402

SD1, SD2 = 'stable-diffusion-v1-4', 'stable-diffusion-2-1-base'
ATOL, RTOL = 2e-6, 1e-5  # float32 rounding of logits and sums


def _qk(batch, heads, n_query, n_key, head_dim, dtype, seed=0):
    """``(B, H, N, d)`` views of ``(B, N, H*d)`` projections, as the processors get them."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_query, heads, head_dim, generator=gen).to(dtype).transpose(1, 2)
    k = torch.randn(batch, n_key, heads, head_dim, generator=gen).to(dtype).transpose(1, 2)
    return q, k


def _probs(q, k):
    return torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


def _scratch(slot, numel, dtype, device):
    return torch.empty(numel, dtype=dtype, device=device)


def _maps(q, k, lse, heads, weight=1.0, buffer=None):
    buffer = torch.zeros(q.shape[0], q.shape[2], k.shape[2]) if buffer is None else buffer
    add_head_maps(q, k, lse, None, [(torch.tensor(heads), [(buffer, weight)])], backend='triton',
                  scratch=_scratch)
    return buffer


# name: batch, heads, query tokens, key tokens, head dim, dtype, selected heads
CASES = {  # numpy multiplies float16 slowly: the large cases are float32 / bfloat16
    'sd1_self8x8_fp16_all_heads': (2, 8, 64, 64, 160, torch.float16, range(8)),
    'sd1_cross16x16_fp32_subset': (2, 8, 256, 77, 160, torch.float32, (0, 3, 7)),
    'sd1_cross32x32_bf16': (1, 8, 1024, 77, 80, torch.bfloat16, (5,)),
    'sd1_cross64x64_bf16': (1, 8, 4096, 77, 40, torch.bfloat16, (6,)),
    'sd2_self16x16_fp16_subset': (2, 20, 256, 256, 64, torch.float16, (2, 11, 19)),
    'sd2_self32x32_fp32_256_query_rows': (1, 10, 256, 1024, 64, torch.float32, (3, 9)),
    'sd2_self64x64_bf16_128_query_rows': (1, 5, 128, 4096, 64, torch.bfloat16, (4,)),
    'sd2_cross8x8_fp32_all_heads': (2, 20, 64, 77, 64, torch.float32, range(20)),
    'head_dim_36_unaligned_fp32': (2, 3, 64, 77, 36, torch.float32, (0, 2)),  # HEAD_ALIGN 1
}


@pytest.mark.parametrize('case', sorted(CASES))
def test_kernel_equals_float64_softmax_head_sum(case):
    batch, heads, n_query, n_key, head_dim, dtype, selected = CASES[case]
    q, k = _qk(batch, heads, n_query, n_key, head_dim, dtype)
    probs = _probs(q, k)
    lse = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / math.sqrt(head_dim), -1)
    got = _maps(q, k, lse.float(), list(selected), weight=1 / len(selected))
    expected = probs[:, list(selected)].mean(1)
    torch.testing.assert_close(got.double(), expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
def test_row_lse_kernel_for_backends_without_lse(dtype):
    q, k = _qk(1, 4, 100, 77, 40, dtype, seed=1)  # neither count a tile multiple
    expected = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / math.sqrt(40), -1)
    torch.testing.assert_close(map_kernel.row_lse(q, k, 40 ** -0.5).double(), expected,
                               atol=2e-6, rtol=0)
    got = _maps(q, k, None, [0, 3])  # add_head_maps computes the LSE itself
    torch.testing.assert_close(got.double(), _probs(q, k)[:, [0, 3]].sum(1), atol=ATOL, rtol=RTOL)


def test_cfg_half_layer_slots_shared_head_sums_and_accumulation():
    """The conditional half of a CFG batch (a strided view), two sinks on one head set (one head
    sum, two weights), a per-layer slot of a ``(B, L, N, K)`` buffer, and accumulation onto an
    earlier layer / step."""
    q, k = _qk(4, 5, 256, 256, 64, torch.float16, seed=2)
    q, k = q[2:], k[2:]
    probs = _probs(q, k)
    lse = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / 8.0, -1).float()
    mean = torch.full((2, 256, 256), 0.25)
    per_layer = torch.zeros(2, 3, 256, 256)
    per_layer[:, 2] = 1.0
    targets = [(torch.tensor([1, 4]), [(mean, 0.5), (per_layer[:, 1], 0.25)]),
               (torch.tensor([0]), [(per_layer[:, 2], 2.0)])]
    add_head_maps(q, k, lse, None, targets, backend='triton', scratch=_scratch)
    pair = probs[:, [1, 4]].sum(1)
    torch.testing.assert_close(mean.double(), 0.25 + 0.5 * pair, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(per_layer[:, 1].double(), 0.25 * pair, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(per_layer[:, 2].double(), 1 + 2 * probs[:, 0], atol=ATOL, rtol=RTOL)
    assert not per_layer[:, 0].any()


@pytest.mark.parametrize('n_sinks', [1, 2])
def test_overwrite_writes_without_reading(n_sinks):
    """``overwrite``: each buffer (NaN before, which an addition would keep) gets ``weight x``
    the head sum, for one sink and for sinks sharing one head sum."""
    q, k = _qk(2, 3, 20, 24, 16, torch.float32, seed=4)
    lse = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / 4.0, -1).float()
    buffers = [torch.full((2, 20, 24), float('nan')) for _ in range(n_sinks)]
    weights = [0.5, 3.0][:n_sinks]
    targets = [(torch.tensor([0, 2]), list(zip(buffers, weights)))]
    map_kernel.add_head_maps(q, k, lse, 0.25, targets, _scratch, overwrite=True)
    pair = _probs(q, k)[:, [0, 2]].sum(1)
    for buffer, weight in zip(buffers, weights):
        torch.testing.assert_close(buffer.double(), weight * pair, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('dtype', [torch.float16, torch.float32])
def test_graph_operators_fake_shapes_match_their_kernels(dtype):
    """The operators a compiled graph calls: registered shapes and dtypes (a float32 LSE for
    half-precision queries too) and the mutated buffer agree with the launches."""
    q, k = _qk(1, 2, 20, 24, 16, dtype, seed=5)
    torch.library.opcheck(torch.ops.mmdiffseg.row_lse, (q, k, 0.25),
                          test_utils=('test_schema', 'test_faketensor'))
    lse = map_kernel.row_lse(q, k, 0.25)
    assert lse.dtype == torch.float32
    args = (q, k, lse, torch.zeros(1, 20, 24), torch.tensor([1]), 0.25, 2.0, True)
    torch.library.opcheck(torch.ops.mmdiffseg.add_head_map, args,
                          test_utils=('test_schema', 'test_faketensor'))


@pytest.fixture(scope='module')
def engine():
    """``engine(model, dtype, backend)``: tiny engines, one per model and dtype."""
    from mmdiffseg.attention.testing import tiny_engine
    built = {}

    def get(model, dtype, backend):
        if (model, dtype) not in built:
            built[model, dtype] = tiny_engine(shared_path('sd_configs', model), dtype=dtype)
        built[model, dtype].map_backend = backend
        return built[model, dtype]
    return get


def _images(batch):
    return torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize('model,dtype', [(SD1, torch.float32), (SD2, torch.float16)])
def test_engine_maps_equal_the_torch_path(engine, model, dtype):
    """The whole capture (LSE from the CPU flash op in float32; from the row-LSE kernel in float16)
    gives the torch path's maps: self and cross attention, a head subset, a mean and a per-layer
    map of the same layers (one shared head sum)."""
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4, heads=(0, 3, 5)),
                        CaptureRequest('self', 2), CaptureRequest('self', 2, per_layer=True)])
    kwargs = dict(prompts=['a photo of a cat', 'a dog'], capture=spec, image_size=64)
    ref = engine(model, dtype, 'torch').extract(_images(2), **kwargs)
    got = engine(model, dtype, 'triton').extract(_images(2), **kwargs)
    for name in spec.names:
        torch.testing.assert_close(got[name], ref[name], atol=ATOL, rtol=RTOL)


def test_generate_with_guidance_maps_equal_the_torch_path(engine):
    spec = CaptureSpec([CaptureRequest('cross', 4), CaptureRequest('self', 8, heads=(0,))])
    kwargs = dict(steps=2, seed=[1, 2], capture=spec, height=64, width=64)
    images, ref = engine(SD2, torch.float32, 'torch').generate(['a cat', 'a dog'], **kwargs)
    again, got = engine(SD2, torch.float32, 'triton').generate(['a cat', 'a dog'], **kwargs)
    assert torch.equal(images, again)
    for name in spec.names:
        torch.testing.assert_close(got[name], ref[name], atol=ATOL, rtol=RTOL)


@pytest.fixture
def deferred(monkeypatch):
    """Every layer-averaged buffer deferred (:mod:`mmdiffseg.attention.deferred_maps`); returns
    ``(staged layers, overwrite)`` of each flush. A buffer's first flush writes it without reading
    it: it is filled with NaN before, which an addition would keep."""
    from mmdiffseg.attention import deferred_maps
    flushes, flush = [], deferred_maps.LayerStash.flush

    def counted(stash, buffer, scratch, overwrite=False):
        flushes.append((len(stash.pending), overwrite))
        if overwrite:
            buffer.fill_(float('nan'))
        flush(stash, buffer, scratch, overwrite)
    monkeypatch.setattr(deferred_maps, 'DEFER_MIN_BYTES', 0)
    monkeypatch.setattr(deferred_maps.LayerStash, 'flush', counted)
    return flushes


@pytest.mark.parametrize('model,dtype', [(SD1, torch.float32), (SD2, torch.float16)])
def test_deferred_layers_give_the_torch_paths_maps(engine, deferred, model, dtype):
    """Layer-averaged requests staged and summed by one launch per forward (float16: LSE from the
    row-LSE kernel at staging): all five 8x8 self layers, a head subset spread over three of the
    five 4x4 cross layers, beside a per-layer request of the same layers (never deferred)."""
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4, heads=(1, 4, 9)),
                        CaptureRequest('self', 8, per_layer=True)])
    kwargs = dict(prompts=['a photo of a cat', 'a dog'], capture=spec, image_size=64)
    ref = engine(model, dtype, 'torch').extract(_images(2), **kwargs)
    assert deferred == []  # the torch path never stages
    got = engine(model, dtype, 'triton').extract(_images(2), **kwargs)
    # one flush per averaged request, its buffer's first write
    assert sorted(deferred) == [(2 if model == SD1 else 3, True), (5, True)]
    for name in spec.names:
        torch.testing.assert_close(got[name], ref[name], atol=ATOL, rtol=RTOL)


def test_deferred_layers_under_guidance_and_steps(engine, deferred):
    """The conditional half of CFG batches, summed over the U-Net calls (one flush per call and
    request)."""
    spec = CaptureSpec([CaptureRequest('cross', 4), CaptureRequest('self', 8, heads=(1, 3))])
    kwargs = dict(steps=2, seed=[1, 2], capture=spec, height=64, width=64)
    images, ref = engine(SD2, torch.float32, 'torch').generate(['a cat', 'a dog'], **kwargs)
    again, got = engine(SD2, torch.float32, 'triton').generate(['a cat', 'a dog'], **kwargs)
    assert torch.equal(images, again)
    # 3 U-Net calls (PNDM's 2 steps), each: the 5 cross layers, the 2 self layers holding heads
    assert sorted(deferred) == [(2, False)] * 2 + [(2, True)] + [(5, False)] * 2 + [(5, True)]
    for name in spec.names:
        torch.testing.assert_close(got[name], ref[name], atol=ATOL, rtol=RTOL)


def test_small_buffers_are_not_deferred(engine, monkeypatch):
    """At the default threshold the tiny models' buffers are added layer by layer."""
    from mmdiffseg.attention import deferred_maps
    monkeypatch.setattr(deferred_maps.LayerStash, 'add', lambda *args: pytest.fail('staged'))
    spec = CaptureSpec([CaptureRequest('self', 8)])
    engine(SD2, torch.float32, 'triton').extract(_images(1), prompts=['a cat'], capture=spec,
                                                 image_size=64)


def test_a_layer_added_directly_to_a_deferred_buffer(engine, deferred, monkeypatch):
    """A layer the stash does not take (here: the third of five) is added at once: to the
    uninitialised buffer (filled with NaN here), which is zeroed first; the staged layers then add
    to it."""
    from mmdiffseg.attention import capture, deferred_maps
    calls, accepts, stage = [], deferred_maps.LayerStash.accepts, capture.CaptureSession.stage

    def third_refused(stash, *args):
        calls.append(None)
        return len(calls) != 3 and accepts(stash, *args)

    def stage_on_garbage(session, sink, *args):
        staged = stage(session, sink, *args)
        if sink.request in session._unset:
            session.buffers[sink.request].fill_(float('nan'))
        return staged
    monkeypatch.setattr(deferred_maps.LayerStash, 'accepts', third_refused)
    monkeypatch.setattr(capture.CaptureSession, 'stage', stage_on_garbage)
    spec = CaptureSpec([CaptureRequest('self', 8)])
    kwargs = dict(prompts=['a cat', 'a dog'], capture=spec, image_size=64)
    ref = engine(SD2, torch.float32, 'torch').extract(_images(2), **kwargs)
    got = engine(SD2, torch.float32, 'triton').extract(_images(2), **kwargs)
    assert deferred == [(4, False)]
    torch.testing.assert_close(got['self8'], ref['self8'], atol=ATOL, rtol=RTOL)


def test_a_compiled_unet_calls_the_kernels_as_graph_operators(engine, monkeypatch):
    """``torch.compile`` with the Triton path (inductor: AOT autograd's functionalisation, then
    C++ code for the CPU around the kernels, about half a minute): the kernels are the graph's
    ``mmdiffseg::`` operators, no graph break, no recompile for the next batch's session, the
    torch path never traced, and the maps of the eager run (a head subset; a mean and a
    per-layer map of the same layers sharing one head sum: a new tensor in the graph instead of
    the session's scratch, written through a view of the per-layer buffer)."""
    from torch._dynamo.utils import counters

    from mmdiffseg.attention import deferred_maps, head_maps
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4, heads=(0, 3, 5)),
                        CaptureRequest('self', 2), CaptureRequest('self', 2, per_layer=True)])
    kwargs = dict(prompts=['a photo of a cat', 'a dog'], capture=spec, image_size=64)
    eager = engine(SD2, torch.float32, 'triton')
    ref = [eager.extract(_images(2) + seed, **kwargs) for seed in (0, 1)]
    compiled = tiny_engine_compiled('inductor', map_backend='triton')
    launches, launch = [], map_kernel._launch_head_map
    monkeypatch.setattr(map_kernel, '_launch_head_map',
                        lambda *args: launches.append(None) or launch(*args))
    monkeypatch.setattr(head_maps, '_add_torch', lambda *args: pytest.fail('torch path traced'))
    monkeypatch.setattr(deferred_maps, 'DEFER_MIN_BYTES', 0)  # traced: never staged
    torch._dynamo.reset()
    counters.clear()
    got = [compiled.extract(_images(2) + seed, **kwargs) for seed in (0, 1)]
    assert not counters['graph_break'], list(counters['graph_break'])
    assert counters['stats']['unique_graphs'] == 1
    assert len(launches) == 2 * 13  # per batch: 5 + 5 + 3 layers of the three head sets
    for want, have in zip(ref, got):
        for name in spec.names:
            torch.testing.assert_close(have[name], want[name], atol=ATOL, rtol=RTOL)
    torch._dynamo.reset()


def tiny_engine_compiled(backend, **kwargs):
    from mmdiffseg.attention.testing import tiny_engine
    built = tiny_engine(shared_path('sd_configs', SD2), **kwargs)
    built.unet.compile(backend=backend)
    return built


@pytest.mark.parametrize('head_dim', [8, 36])
def test_columns_past_the_head_dim_never_enter_the_product(head_dim):
    """Heads sliced from wider rows whose extra columns are NaN (read by the padded dot widths
    16 and 32 + 16 unless masked on both operands): the maps stay the float64 softmax."""
    gen = torch.Generator().manual_seed(6)
    wide = torch.randn(2, 2, 44, 3, head_dim + 12, generator=gen)
    wide[..., head_dim:] = float('nan')
    q = wide[0, :, :20, :, :head_dim].transpose(1, 2)  # (B, H, N, d), head stride d + 12
    k = wide[1, :, :24, :, :head_dim].transpose(1, 2)
    lse = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / math.sqrt(head_dim), -1)
    got = _maps(q, k, lse.float(), [0, 2])
    torch.testing.assert_close(got.double(), _probs(q, k)[:, [0, 2]].sum(1), atol=ATOL, rtol=RTOL)


def test_maps_past_two_to_the_31_elements_are_indexed_in_int64():
    """A map row starting past element 2**31 (a layer of 46k tokens, ~1728 px images): the
    kernel's int32 row offsets wrapped and wrote elsewhere (a segmentation fault here). The rows
    of a (33, 16) map 2**26 elements apart reach past it; only their pages are touched."""
    n_query, n_key, row_stride = 33, 16, 2 ** 26
    q, k = _qk(1, 2, n_query, n_key, 64, torch.float32, seed=3)
    far = torch.empty(n_query * row_stride).as_strided((1, n_query, n_key), (0, row_stride, 1))
    for row in range(n_query):
        far[0, row].zero_()
    lse = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / 8, -1).float()
    got = _maps(q, k, lse, [0, 1], weight=0.5, buffer=far)
    torch.testing.assert_close(got.double(), _probs(q, k).mean(1), atol=ATOL, rtol=RTOL)


def test_a_kernel_triton_fails_to_compile_names_the_pytorch_paths(monkeypatch):
    """Triton's own error at a launch (here: a tile that is not a power of two, as a compiler
    bug or an unsupported GPU would fail) says which kernel failed and how to run without it."""
    tiles = map_kernel._tiles
    monkeypatch.setattr(map_kernel, '_tiles', lambda *args: dict(tiles(*args), BLOCK_M=24))
    q, k = _qk(1, 2, 24, 16, 64, torch.float32)
    with pytest.raises(RuntimeError, match=r"Triton failed to compile or launch mmdiffseg's row "
                                           r"log-sum-exp kernel on cpu \(.*MMDIFFSEG_KERNELS=torch"
                                           r" in the environment \(or pass map_backend='torch' "
                                           r"\(DiffusionAttentionEngine's\)\)") as failed:
        map_kernel.row_lse(q, k, 0.125)
    assert type(failed.value.__cause__).__module__.startswith('triton.')  # (the original kept)
