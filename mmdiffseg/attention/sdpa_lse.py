"""A captured layer's attention output from the very SDPA call an uncaptured layer makes, plus the
log-sum-exp (LSE) of each query row's scaled logits where the fused kernel returns it.

diffusers' ``AttnProcessor2_0`` calls ``F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
dropout_p=0.0, is_causal=False)`` (default scale ``1/sqrt(d)``). Without a mask, SDPA dispatches to
the backend ``torch.ops.aten._fused_sdp_choice`` names; calling that backend's op directly runs the
same kernel with the same arguments, so the output is bit-identical, and the op also returns the
row LSE, in natural-log units, float32:

* CPU flash (``_scaled_dot_product_flash_attention_for_cpu``): ``(B, H, N)`` (memory laid out
  ``(B, N, H)``). Used for float32 inputs only: for float16/bfloat16 its LSE is off by ~2e-5
  (measured against float64), more than float32 maps tolerate.
* CUDA flash (``_scaled_dot_product_flash_attention``, fp16/bf16): ``(B, H, N)``. SDPA pads head dims
  that are not a multiple of 8 before calling it; such heads (none in SD) take the fallback.
* CUDA memory-efficient (``_scaled_dot_product_efficient_attention``, also float32): ``(B, H, N')``
  with ``N'`` rounded up to a multiple of 32 on some builds: sliced to ``N``.

* CUDA cuDNN (``_scaled_dot_product_cudnn_attention`` with ``compute_log_sumexp``; SDPA's
  float16 / bfloat16 choice on Hopper with torch 2.11): SDPA calls it without the LSE, so the op
  is trusted for a call signature (shapes, strides, dtype, device) only once its first call there
  has given SDPA's own output bit for bit and an LSE within 1e-5 of float64 logits
  (:func:`verified_call`); otherwise that signature keeps the plain call.

Any other case (a mask, the math backend, half precision on CPU) calls SDPA itself and returns no
LSE: the map code then computes its own row statistics (a second pass over ``Q K^T``). So does a
U-Net under ``torch.compile``: the backend choice is a Python int, which would break the graph at
every captured layer, and SDPA in the graph is the call an uncaptured layer makes there.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from torch.nn.attention import SDPBackend

_FLASH = SDPBackend.FLASH_ATTENTION.value
_EFFICIENT = SDPBackend.EFFICIENT_ATTENTION.value
_CUDNN = SDPBackend.CUDNN_ATTENTION.value
#: natural-log units; an LSE off by ``x`` scales every map value of its row by ``exp(x)``
LSE_TOLERANCE = 1e-5
#: call signature -> whether the op gave SDPA's output and the row LSE (see :func:`verified_call`)
_VERIFIED: Dict[tuple, bool] = {}


def sdpa_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: Optional[torch.Tensor] = None
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(output, lse)``: ``output`` equals ``AttnProcessor2_0``'s SDPA call on the same tensors
    bit for bit; ``lse`` is ``(B, H, N)`` float32 ``log sum_j exp(q.k_j / sqrt(d))`` or ``None``."""
    if attn_mask is None and not torch.compiler.is_compiling():
        aten = torch.ops.aten
        backend = aten._fused_sdp_choice(query, key, value, None, 0.0, False)
        if query.device.type == 'cpu' and backend == _FLASH and query.dtype == torch.float32:
            out, lse = aten._scaled_dot_product_flash_attention_for_cpu(query, key, value, 0.0, False)
            return out, lse
        if query.is_cuda and backend == _FLASH and query.shape[-1] % 8 == 0:
            out, lse = aten._scaled_dot_product_flash_attention(query, key, value, 0.0, False, False)[:2]
            return out, lse
        if query.is_cuda and backend == _EFFICIENT:
            out, lse = aten._scaled_dot_product_efficient_attention(query, key, value, None, True,
                                                                    0.0, False)[:2]
            return out, lse[..., :query.shape[2]]
        if query.is_cuda and backend == _CUDNN:
            checked = verified_call('cudnn', _cudnn_with_lse, query, key, value)
            if checked is not None:
                return checked
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=0.0,
                                         is_causal=False)
    return out, None


def _cudnn_with_lse(query, key, value):
    out, lse = torch.ops.aten._scaled_dot_product_cudnn_attention(query, key, value, None, True,
                                                                  0.0, False, False)[:2]
    return out, lse


def verified_call(name: str, op: Callable, query: torch.Tensor, key: torch.Tensor,
                  value: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """``op(q, k, v) -> (output, lse)`` with ``lse`` as ``(B, H, N)``, or ``None`` where ``op``
    failed its check for this call signature: on the first call of a signature, the output must
    equal SDPA's bit for bit and the LSE of the first 64 query rows of image 0 must be within
    :data:`LSE_TOLERANCE` of float64 logits (catches an op whose kernel differs once it writes
    the LSE, or whose LSE is in other units or layout). A failed check is logged once and the
    signature is not tried again."""
    signature = (name, tuple(query.shape), tuple(key.shape), query.stride(), key.stride(),
                 value.stride(), query.dtype, query.device)
    state = _VERIFIED.get(signature)
    if state is False:
        return None

    def refuse(why: str) -> None:
        _VERIFIED[signature] = False
        print_log(f'{name} SDPA with its LSE, query {tuple(query.shape)} {query.dtype}: {why}; '
                  'captured layers of this shape compute their own row statistics',
                  logger='current')
    try:
        out, lse = op(query, key, value)
    except (RuntimeError, TypeError) as error:  # another torch's signature, an unsupported shape
        if state:
            raise
        return refuse(f'failed ({error})')
    batch, heads, n_query = query.shape[:3]
    if lse.numel() != batch * heads * n_query:
        return refuse(f'an LSE of shape {tuple(lse.shape)}')
    lse = lse.reshape(batch, heads, n_query)
    if state is None:
        plain = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
        rows = slice(0, min(n_query, 64))
        logits = query[0, :, rows].double() @ key[0].double().transpose(-1, -2)
        reference = torch.logsumexp(logits / query.shape[-1] ** 0.5, -1)
        same = torch.equal(out, plain)
        error = (lse[0, :, rows].double() - reference).abs().max().item()
        if not same or error > LSE_TOLERANCE:
            return refuse(f'output {"equal to" if same else "other than"} the plain call\'s, LSE '
                          f'off by {error:.1e} (tolerance {LSE_TOLERANCE:.0e})')
        _VERIFIED[signature] = True
    return out, lse
