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

Any other case (a mask, cuDNN or math backend, half precision on CPU) calls SDPA itself and
returns no LSE: the map code then computes its own row statistics.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

_FLASH = SDPBackend.FLASH_ATTENTION.value
_EFFICIENT = SDPBackend.EFFICIENT_ATTENTION.value


def sdpa_with_lse(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: Optional[torch.Tensor] = None
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """``(output, lse)``: ``output`` equals ``AttnProcessor2_0``'s SDPA call on the same tensors
    bit for bit; ``lse`` is ``(B, H, N)`` float32 ``log sum_j exp(q.k_j / sqrt(d))`` or ``None``."""
    if attn_mask is None:
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
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=0.0,
                                         is_causal=False)
    return out, None
