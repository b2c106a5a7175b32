"""The SDPA call with row LSE and the torch map path, against float64 softmax references."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdiffseg.attention.head_maps import add_head_maps
from mmdiffseg.attention.sdpa_lse import sdpa_with_lse

ATOL, RTOL = 2e-6, 1e-5


def _qkv(batch, heads, n_query, n_key, head_dim, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, n, heads, head_dim, generator=gen).to(dtype).transpose(1, 2)
            for n in (n_query, n_key, n_key)]


def _logits(q, k, mask=None):
    logits = q.double() @ k.double().transpose(-1, -2) / math.sqrt(q.shape[-1])
    return logits if mask is None else logits + mask.double()


def _scratch(slot, numel, dtype, device):
    """A slot as a session hands it out, holding what an earlier layer left (NaN here): anything
    the map path reads without writing first shows in the maps."""
    return torch.full((numel,), float('nan'), dtype=dtype, device=device)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('heads,head_dim,n_key',
                         [(8, 40, 64), (5, 64, 77), (10, 80, 64), (8, 160, 77)])
def test_sdpa_output_is_the_plain_call_bit_for_bit(dtype, heads, head_dim, n_key):
    q, k, v = _qkv(2, heads, 64, n_key, head_dim, dtype)
    out, lse = sdpa_with_lse(q, k, v)
    plain = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0, is_causal=False)
    assert torch.equal(out, plain)
    if dtype == torch.float32:  # the CPU flash op's LSE
        assert lse.dtype == torch.float32 and lse.shape == (2, heads, 64)
        torch.testing.assert_close(lse.double(), torch.logsumexp(_logits(q, k), -1), atol=2e-6,
                                   rtol=0)
    else:  # its half-precision LSE is ~2e-5 off: not used
        assert lse is None


def test_sdpa_with_a_mask_is_the_plain_masked_call_without_lse():
    q, k, v = _qkv(1, 2, 16, 8, 16)
    mask = torch.zeros(1, 1, 1, 8)
    mask[..., 5:] = -10000.0
    out, lse = sdpa_with_lse(q, k, v, mask)
    assert lse is None
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


@pytest.mark.parametrize('with_lse', [True, False])
def test_torch_path_chunks_subsets_and_shared_head_sums(with_lse):
    """Chunks of 7 query rows (a remainder at the end), a head subset, two sinks sharing one head
    sum with different weights, accumulation onto what the buffers held."""
    q, k, _ = _qkv(2, 5, 40, 77, 64, seed=1)
    probs = torch.softmax(_logits(q, k), -1)
    lse = sdpa_with_lse(q, k, k)[1] if with_lse else None
    first, second, single = torch.ones(2, 40, 77), torch.zeros(2, 40, 77), torch.zeros(2, 40, 77)
    targets = [(torch.tensor([0, 2, 4]), [(first, 0.5), (second, 1 / 3)]),
               (torch.tensor([3]), [(single, 1.0)])]
    add_head_maps(q, k, lse, None, targets, backend='torch', chunk_bytes=4 * 3 * 7 * 77,
                  scratch=_scratch)
    subset = probs[:, [0, 2, 4]].sum(1)
    torch.testing.assert_close(first.double(), 1 + 0.5 * subset, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(second.double(), subset / 3, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(single.double(), probs[:, 3], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize('mask_shape', [(2, 1, 1, 9), (2, 3, 12, 9)])
def test_torch_path_with_a_mask_is_the_masked_softmax(mask_shape):
    q, k, _ = _qkv(2, 3, 12, 9, 16, seed=2)
    mask = torch.zeros(mask_shape)
    mask[..., -3:] = float('-inf')
    mask[..., 0] = -2.0
    buffer = torch.zeros(2, 12, 9)
    add_head_maps(q, k, None, mask, [(torch.tensor([1, 2]), [(buffer, 0.5)])], backend='triton',
                  scratch=_scratch)  # a masked layer takes the torch path whatever the backend
    expected = torch.softmax(_logits(q, k, mask), -1)[:, [1, 2]].mean(1)
    torch.testing.assert_close(buffer.double(), expected, atol=ATOL, rtol=RTOL)
    assert not buffer[..., -3:].any()


@pytest.mark.parametrize('with_lse', [False, True])
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_torch_path_half_precision_inputs_use_float32_logits(dtype, with_lse):
    """Without an LSE (the CPU's half-precision SDPA gives none) and with one (CUDA without
    Triton): the inputs are scaled after their conversion to float32."""
    q, k, _ = _qkv(1, 4, 30, 77, 40, dtype, seed=3)
    lse = torch.logsumexp(_logits(q, k), -1).float() if with_lse else None
    buffer = torch.zeros(1, 30, 77)
    add_head_maps(q, k, lse, None, [(torch.arange(4), [(buffer, 0.25)])], backend='torch',
                  scratch=_scratch)
    expected = torch.softmax(_logits(q, k), -1).mean(1)
    torch.testing.assert_close(buffer.double(), expected, atol=ATOL, rtol=RTOL)


def test_cuda_chunk_is_sized_from_free_memory(monkeypatch):
    from mmdiffseg.attention import head_maps
    gib = 2 ** 30
    free = {'driver': 2 * gib, 'reserved': 1 * gib, 'allocated': gib // 2}
    monkeypatch.setattr(torch.cuda, 'mem_get_info', lambda device: (free['driver'], 80 * gib))
    monkeypatch.setattr(torch.cuda, 'memory_reserved', lambda device: free['reserved'])
    monkeypatch.setattr(torch.cuda, 'memory_allocated', lambda device: free['allocated'])
    assert head_maps.default_chunk_bytes('cuda:0') == gib // 2   # a quarter of 2.5, rounded
    free['driver'] = 2 * gib + 12345
    assert head_maps.default_chunk_bytes('cuda:0') == gib // 2  # one value: no recompile
    free['driver'] = 60 * gib
    assert head_maps.default_chunk_bytes('cuda') == gib  # capped
    free.update(driver=0, reserved=0, allocated=0)
    assert head_maps.default_chunk_bytes('cuda') == 16 * 2 ** 20  # floor
    assert head_maps.default_chunk_bytes('cpu') == head_maps.CPU_CHUNK_BYTES


def test_torch_path_chunks_a_per_query_mask_with_its_rows():
    """A mask with one row per query is sliced with the query chunk: in chunks of 5 rows (the
    last one 2) each query gets its own row (row i blocks key i mod 9) of the masked softmax."""
    q, k, _ = _qkv(1, 2, 12, 9, 16, seed=4)
    mask = torch.zeros(1, 2, 12, 9)
    rows = torch.arange(12)
    mask[:, :, rows, rows % 9] = float('-inf')
    mask[:, 1, :, 0] -= 1.5   # and the heads differ
    buffer = torch.zeros(1, 12, 9)
    add_head_maps(q, k, None, mask, [(torch.arange(2), [(buffer, 0.5)])], backend='torch',
                  chunk_bytes=4 * 2 * 9 * 5, scratch=_scratch)
    expected = torch.softmax(_logits(q, k, mask), -1).mean(1)
    torch.testing.assert_close(buffer.double(), expected, atol=ATOL, rtol=RTOL)
    assert not buffer[0, rows, rows % 9].any()


@pytest.mark.parametrize('chunk_bytes, chunk', [(4 * 6 * 77 * 5, 5), (4 * 6 * 77 * 6 - 1, 5),
                                                (1, 1), (None, 40)])
def test_chunk_bytes_bounds_the_logits_workspace(chunk_bytes, chunk):
    """The float32 logits of all 6 (batch x head) rows computed at once fit ``chunk_bytes``:
    whole query rows, at least one however small the budget, all 40 under the CPU default;
    the maps are the same whatever the chunk."""
    q, k, _ = _qkv(2, 3, 40, 77, 16, seed=5)
    asked = {}

    def scratch(slot, numel, dtype, device):
        asked[slot] = numel
        return _scratch(slot, numel, dtype, device)
    buffer = torch.zeros(2, 40, 77)
    add_head_maps(q, k, None, None, [(torch.arange(3), [(buffer, 1 / 3)])], backend='torch',
                  chunk_bytes=chunk_bytes, scratch=scratch)
    assert asked['logits'] == 6 * chunk * 77
    expected = torch.softmax(_logits(q, k), -1).mean(1)
    torch.testing.assert_close(buffer.double(), expected, atol=ATOL, rtol=RTOL)


def test_devices_other_than_cuda_get_the_fixed_chunk_budget():
    """Only CUDA sizes the chunk from free memory; any other device (here 'meta', as MPS or
    XPU) gets the CPU budget without asking CUDA."""
    from mmdiffseg.attention import head_maps
    assert head_maps.default_chunk_bytes('meta') == head_maps.CPU_CHUNK_BYTES


def test_rows_without_lse_are_normalised_stably_for_large_logits():
    """Without an LSE (a mask, half precision on CPU) each row is shifted by its maximum first:
    logits of several hundred (2**400 overflows float32) still give the softmax, not NaN."""
    q, k, _ = _qkv(1, 2, 10, 12, 16, seed=6)
    q = q * 150.0
    assert _logits(q, k).abs().max() > 300
    buffer = torch.zeros(1, 10, 12)
    add_head_maps(q, k, None, torch.zeros(1, 1, 1, 12), [(torch.arange(2), [(buffer, 0.5)])],
                  backend='torch', scratch=_scratch)
    expected = torch.softmax(_logits(q, k), -1).mean(1)
    torch.testing.assert_close(buffer.double(), expected, atol=ATOL, rtol=RTOL)


def test_a_mask_shared_by_all_queries_is_added_to_every_chunk():
    """A ``(B, 1, 1, K)`` mask (one row for every query) applies to each chunk of query rows,
    not only the first: chunks of 4 rows over 10 queries, key 2 blocked everywhere."""
    q, k, _ = _qkv(2, 3, 10, 6, 16, seed=7)
    mask = torch.zeros(2, 1, 1, 6)
    mask[:, :, :, 2] = float('-inf')
    mask[1, :, :, 4] = -3.0
    buffer = torch.zeros(2, 10, 6)
    add_head_maps(q, k, None, mask, [(torch.tensor([0, 2]), [(buffer, 0.5)])], backend='torch',
                  chunk_bytes=4 * 4 * 6 * 4, scratch=_scratch)
    expected = torch.softmax(_logits(q, k, mask), -1)[:, [0, 2]].mean(1)
    torch.testing.assert_close(buffer.double(), expected, atol=ATOL, rtol=RTOL)
    assert not buffer[..., 2].any()


def test_backend_before_a_device_is_known():
    """``device=None`` (before the U-Net call) checks only the backend: 'auto' and 'torch' are
    the torch path, 'triton' is kept for the device check at the call."""
    from mmdiffseg.attention.head_maps import resolve_backend
    assert resolve_backend('auto', None, masked=False) == 'torch'
    assert resolve_backend('torch', None, masked=False) == 'torch'
    assert resolve_backend('triton', None, masked=False) == 'triton'
