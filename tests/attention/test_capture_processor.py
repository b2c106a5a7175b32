"""The capture processor on attention modules configured unlike SD's (4-D input, spatial and group
norms, normalised queries / keys / context, residual, output rescale, an attention mask): its
output is ``AttnProcessor2_0``'s, and its maps are the softmax of the module's own normalised
queries and keys (masked keys get no probability)."""
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from mmdiffseg.attention import CaptureRequest, CaptureSpec
from mmdiffseg.attention.capture import CaptureProcessor, CaptureSession
from mmdiffseg.attention.unet_layers import AttentionLayer

SIDE, CHANNELS, HEADS, HEAD_DIM, TOKENS = 4, 32, 2, 8, 5


def _module(kind):
    torch.manual_seed(0)
    cross = kind == 'cross'
    return Attention(CHANNELS, cross_attention_dim=12 if cross else None, heads=HEADS,
                     dim_head=HEAD_DIM, norm_num_groups=4, spatial_norm_dim=None if cross else 3,
                     qk_norm='layer_norm', cross_attention_norm='layer_norm' if cross else None,
                     residual_connection=True, rescale_output_factor=2.0).eval()


def _expected_maps(attn, hidden, context, mask, temb):
    """Head-mean softmax of the module's normalised Q and K, computed step by step."""
    if attn.spatial_norm is not None:
        hidden = attn.spatial_norm(hidden, temb)
    tokens = hidden.flatten(2).transpose(1, 2)
    tokens = attn.group_norm(tokens.transpose(1, 2)).transpose(1, 2)
    ctx = tokens if context is None else attn.norm_encoder_hidden_states(context)

    def split(x):
        return x.view(x.shape[0], -1, HEADS, HEAD_DIM).transpose(1, 2)

    q, k = attn.norm_q(split(attn.to_q(tokens))), attn.norm_k(split(attn.to_k(ctx)))
    logits = q.double() @ k.double().transpose(-1, -2) * attn.scale
    if mask is not None:
        logits = logits + mask[:, None, None, :].double()
    return torch.softmax(logits, dim=-1).mean(dim=1).float()


@pytest.mark.parametrize('kind', ['self', 'cross'])
def test_other_module_layouts_keep_the_output_and_give_their_softmax(kind):
    attn = _module(kind)
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(2, CHANNELS, SIDE, SIDE, generator=gen)
    temb = torch.randn(2, 3, 2, 2, generator=gen)
    context = torch.randn(2, TOKENS, 12, generator=gen) if kind == 'cross' else None
    mask = None
    if kind == 'cross':  # additive, as diffusers takes it: the last two tokens of image 1 masked
        mask = torch.zeros(2, TOKENS)
        mask[1, -2:] = -10000.0
    layer = AttentionLayer('block.attn', kind, SIDE, HEADS)
    session = CaptureSession(CaptureSpec([CaptureRequest(kind, SIDE, name='maps')]), [layer],
                             batch_size=2, map_backend='torch')
    processor = CaptureProcessor(session, layer, session.layer_sinks['block.attn'],
                                 AttnProcessor2_0())
    with torch.no_grad():
        plain = AttnProcessor2_0()(attn, hidden, context, mask, temb)
        session.begin_step()
        captured = processor(attn, hidden, context, mask, temb)
        session.end_step()
        want = _expected_maps(attn, hidden, context, mask, temb)
    assert captured.shape == hidden.shape
    torch.testing.assert_close(captured, plain, rtol=0, atol=1e-6)
    maps = session.results()['maps']
    assert maps.shape == (2, SIDE * SIDE, TOKENS if kind == 'cross' else SIDE * SIDE)
    torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-6)
    if kind == 'cross':
        assert maps[1, :, -2:].max() < 1e-30 and maps[0, :, -2:].min() > 1e-3


def test_a_guidance_batch_takes_the_conditional_rows_of_the_mask():
    """``[uncond, cond]`` with a mask per row: the captured map is the conditional row's, masked
    by its own mask row, not the unconditional one's."""
    attn = _module('cross')
    gen = torch.Generator().manual_seed(2)
    hidden = torch.randn(2, CHANNELS, SIDE, SIDE, generator=gen)
    context = torch.randn(2, TOKENS, 12, generator=gen)
    mask = torch.zeros(2, TOKENS)
    mask[0, :1] = -10000.0   # unconditional row: first token masked
    mask[1, -2:] = -10000.0  # conditional row: last two tokens masked
    layer = AttentionLayer('block.attn', 'cross', SIDE, HEADS)
    session = CaptureSession(CaptureSpec([CaptureRequest('cross', SIDE, name='maps')]), [layer],
                             batch_size=1, map_backend='torch')
    processor = CaptureProcessor(session, layer, session.layer_sinks['block.attn'],
                                 AttnProcessor2_0())
    with torch.no_grad():
        session.begin_step()
        processor(attn, hidden, context, mask, None)
        session.end_step()
        want = _expected_maps(attn, hidden, context, mask, None)[1:]
    maps = session.results()['maps']
    torch.testing.assert_close(maps, want, rtol=1e-5, atol=1e-6)
    assert maps[0, :, -2:].max() < 1e-30 and maps[0, :, 0].min() > 1e-3
