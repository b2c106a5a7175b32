"""``sdpa_with_lse`` on a GPU, at Stable Diffusion's layer shapes: the output is the plain SDPA
call's bit for bit whichever backend SDPA picks, and the fused op's LSE is used wherever that
backend returns one (flash, memory-efficient, and cuDNN once its check passed). Skipped without
CUDA; a GPU session runs it in ``benchmarks/gpu_suite.sh``."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmdiffseg.attention.sdpa_lse import LSE_TOLERANCE, sdpa_with_lse

#: ``torch.ops.aten._fused_sdp_choice``'s answer when no fused kernel serves the call
MATH = 0

if not torch.cuda.is_available():
    pytest.skip('needs a CUDA device', allow_module_level=True)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize('heads,n_query,n_key,head_dim', [
    (8, 4096, 4096, 40), (8, 4096, 77, 40), (8, 1024, 1024, 80), (8, 256, 77, 160),
    (5, 4096, 4096, 64), (10, 1024, 77, 64)])
def test_output_is_the_plain_call_and_the_lse_is_used(dtype, heads, n_query, n_key, head_dim):
    gen = torch.Generator().manual_seed(0)
    q, k, v = [torch.randn(4, n, heads, head_dim, generator=gen).to('cuda', dtype).transpose(1, 2)
               for n in (n_query, n_key, n_key)]
    backend = torch.ops.aten._fused_sdp_choice(q, k, v)
    for _ in range(2):  # the first call of a cuDNN signature is the checked one
        out, lse = sdpa_with_lse(q, k, v)
        assert torch.equal(out, F.scaled_dot_product_attention(q, k, v)), backend
    if backend == MATH:  # no fused kernel for this dtype here (bfloat16 before sm_80)
        assert lse is None
        return
    assert lse is not None, f'no LSE from SDPA backend {backend} (1 flash, 2 efficient, 3 cudnn)'
    logits = q[1, :, :256].double() @ k[1].double().transpose(-1, -2) / math.sqrt(head_dim)
    error = (lse[1, :, :256].double() - torch.logsumexp(logits, -1)).abs().max().item()
    assert error <= LSE_TOLERANCE, (backend, error)
