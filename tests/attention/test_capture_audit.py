"""Capture details the maps alone do not show: the map code is handed the fused kernel's row LSE
of the conditional half (no second pass over Q K^T on CPU float32), and a capture block frees its
scratch memory on exit."""
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from mmdiffseg.attention import CaptureRequest, CaptureSpec, capture
from mmdiffseg.attention.unet_layers import AttentionLayer

SIDE, CHANNELS, HEADS = 4, 16, 2


def test_the_conditional_halfs_kernel_lse_reaches_the_map_code(monkeypatch):
    """A CFG batch ``[uncond, cond]`` in float32 on the CPU: SDPA's flash kernel gives each row's
    log-sum-exp, and the map code gets that of the conditional rows (checked against float64
    logits), not None."""
    torch.manual_seed(0)
    attn = Attention(CHANNELS, heads=HEADS, dim_head=CHANNELS // HEADS).eval()
    hidden = torch.randn(2, SIDE * SIDE, CHANNELS)
    seen = []
    real = capture.add_resolved

    def spy(query, key, lse, *args):
        seen.append(lse)
        return real(query, key, lse, *args)
    monkeypatch.setattr(capture, 'add_resolved', spy)
    layer = AttentionLayer('block.attn1', 'self', SIDE, HEADS)
    session = capture.CaptureSession(CaptureSpec([CaptureRequest('self', SIDE)]), [layer],
                                     batch_size=1, map_backend='torch')
    processor = capture.CaptureProcessor(session, layer, session.layer_sinks['block.attn1'],
                                         AttnProcessor2_0())
    session.begin_step()
    with torch.no_grad():
        processor(attn, hidden)
        split = [t.double().view(2, -1, HEADS, CHANNELS // HEADS).transpose(1, 2)
                 for t in (attn.to_q(hidden), attn.to_k(hidden))]
    session.end_step()
    logits = split[0] @ split[1].transpose(-1, -2) / (CHANNELS // HEADS) ** 0.5
    assert len(seen) == 1 and seen[0] is not None
    torch.testing.assert_close(seen[0].double(), torch.logsumexp(logits[1:], -1), rtol=0,
                               atol=1e-5)


def test_a_capture_block_frees_its_scratch_on_exit(tiny_engine):
    """The torch map path's logit chunks are kept between layers while the block runs, and let
    go when it ends (a session is often kept for its results)."""
    unet = tiny_engine('stable-diffusion-2-1-base').unet
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('self', 4)])
    with torch.no_grad():
        with capture.capture_attention(unet, spec, 8, batch_size=1,
                                       map_backend='torch') as session:
            unet(torch.zeros(1, 4, 8, 8), 10, encoder_hidden_states=torch.zeros(1, 77, 32))
            assert session._scratch
    assert session._scratch == {}
    assert set(session.results()) == {'self8', 'self4'}
