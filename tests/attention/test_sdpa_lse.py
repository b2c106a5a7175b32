"""The one-time check that lets a fused SDPA op's LSE into the maps (``verified_call``), on the
CPU flash op: the check that admits cuDNN's LSE on a GPU accepts what is exact and rejects an
LSE in other units, an LSE ~3e-5 off (the CPU op's own in half precision) and a changed output."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdiffseg.attention import sdpa_lse
from mmdiffseg.attention.sdpa_lse import LSE_TOLERANCE, verified_call


def _qkv(dtype, heads=5, n_query=96, n_key=77, head_dim=64):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(2, n, heads, head_dim, generator=gen).to(dtype).transpose(1, 2)
            for n in (n_query, n_key, n_key)]


class CountingOp:
    """The CPU flash op, optionally with its LSE or output altered; counts its calls."""

    def __init__(self, lse_fn=lambda lse: lse, out_fn=lambda out: out):
        self.calls, self.lse_fn, self.out_fn = 0, lse_fn, out_fn

    def __call__(self, q, k, v):
        self.calls += 1
        op = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        out, lse = op(q, k, v, 0.0, False)[:2]
        return self.out_fn(out), self.lse_fn(lse)


@pytest.fixture(autouse=True)
def fresh_checks(monkeypatch):
    monkeypatch.setattr(sdpa_lse, '_VERIFIED', {})


def test_an_exact_op_is_admitted_once_and_then_called_without_a_check(monkeypatch):
    q, k, v = _qkv(torch.float32)
    op = CountingOp()
    out, lse = verified_call('test', op, q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    reference = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / 8, -1)
    assert (lse.double() - reference).abs().max() <= LSE_TOLERANCE and lse.shape == (2, 5, 96)
    plain_calls = []
    with monkeypatch.context() as patch:
        patch.setattr(sdpa_lse.F, 'scaled_dot_product_attention',
                      lambda *a, **kw: plain_calls.append(1))
        again = verified_call('test', op, q, k, v)
    assert op.calls == 2 and not plain_calls and torch.equal(again[1], lse)
    contiguous = q.contiguous()  # another signature (memory layout): checked on its own
    assert verified_call('test', op, contiguous, k, v) is not None and op.calls == 3
    assert sorted(s[3] for s in sdpa_lse._VERIFIED) == sorted([q.stride(), contiguous.stride()])


@pytest.mark.parametrize('offset', [2e-5, -3e-5])
def test_an_lse_a_few_1e5_off_is_refused(offset):
    # what torch 2.9-2.14's half-precision CPU flash op gives (~3e-5; 6.5e-7 on 2.6-2.8), made
    # explicit so the check does not depend on the torch version
    q, k, v = _qkv(torch.float32)
    op = CountingOp(lse_fn=lambda lse: lse + offset)
    assert verified_call('test', op, q, k, v) is None
    assert verified_call('test', op, q, k, v) is None and op.calls == 1  # not tried again


@pytest.mark.parametrize('alter', [
    dict(lse_fn=lambda lse: lse / math.log(2)),                    # log2 units
    dict(lse_fn=lambda lse: lse.unsqueeze(-1).expand(-1, -1, -1, 2)),  # another layout
    dict(out_fn=lambda out: torch.nextafter(out, out + 1)),        # the output's last bit
    dict(lse_fn=lambda lse: torch.cat([lse[..., :1], lse[..., :-1]], -1)),  # rows shifted
])
def test_other_units_layouts_or_outputs_are_refused(alter):
    q, k, v = _qkv(torch.float32)
    op = CountingOp(**alter)
    assert verified_call('test', op, q, k, v) is None
    assert verified_call('test', op, q, k, v) is None and op.calls == 1


def test_an_op_that_raises_on_its_first_call_is_refused_for_good():
    q, k, v = _qkv(torch.float32)

    def op(*args):  # e.g. another torch's signature of the cuDNN op
        calls.append(1)
        raise TypeError('unexpected argument')
    calls = []
    assert verified_call('test', op, q, k, v) is None
    assert verified_call('test', op, q, k, v) is None and len(calls) == 1


def test_cpu_float32_gives_sdpas_output_and_the_row_lse():
    """The CPU flash op's LSE is used in float32 only (its half-precision LSE is ~2e-5 off) and
    never with a mask (the op takes none): those return SDPA's output alone."""
    q, k, v = _qkv(torch.float32, n_query=40, n_key=24, head_dim=16)
    out, lse = sdpa_lse.sdpa_with_lse(q, k, v)
    assert torch.equal(out, F.scaled_dot_product_attention(q, k, v))
    reference = torch.logsumexp(q.double() @ k.double().transpose(-1, -2) / 4, -1)
    assert lse.shape == (2, 5, 40) and (lse.double() - reference).abs().max() <= LSE_TOLERANCE
    mask = torch.zeros(2, 1, 1, 24)
    mask[..., -3:] = -10000.0
    out, lse = sdpa_lse.sdpa_with_lse(q, k, v, mask)
    assert lse is None and torch.equal(out, F.scaled_dot_product_attention(q, k, v, mask))
    half = [x.to(torch.float16) for x in (q, k, v)]
    out, lse = sdpa_lse.sdpa_with_lse(*half)
    assert lse is None and torch.equal(out, F.scaled_dot_product_attention(*half))


def test_an_admitted_op_that_fails_later_raises():
    """Once a signature's op passed its check, an error of a later call is a real failure:
    raised, not hidden behind the slower path."""
    q, k, v = _qkv(torch.float32)
    op = CountingOp()
    assert verified_call('test', op, q, k, v) is not None

    def failing(*args):
        raise RuntimeError('out of memory')
    with pytest.raises(RuntimeError, match='out of memory'):
        verified_call('test', failing, q, k, v)


def test_a_signature_of_another_dtype_is_checked_on_its_own():
    q, k, v = _qkv(torch.float32)
    assert verified_call('test', CountingOp(), q, k, v) is not None
    doubled = [x.double() for x in (q, k, v)]
    assert [x.stride() for x in doubled] == [x.stride() for x in (q, k, v)]
    assert verified_call('test', CountingOp(lse_fn=lambda lse: lse + 1e-3), *doubled) is None
