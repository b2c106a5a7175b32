"""Capture planning and session bookkeeping on hand-made layer lists: requests a U-Net cannot
serve are refused with the request, the layers and the fix named; results() refuses a capture
that saw nothing and averages once."""
import pytest
import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec
from mmdiffseg.attention.capture import CaptureSession, capture_attention
from mmdiffseg.attention.unet_layers import AttentionLayer

# two 4x4 self-attention layers of 2 heads (forward order), one 4x4 cross layer
LAYERS = [AttentionLayer('down.attn1', 'self', 4, 2), AttentionLayer('down.attn2', 'cross', 4, 2),
          AttentionLayer('up.attn1', 'self', 4, 2)]


def _session(*requests, steps=None):
    return CaptureSession(CaptureSpec(list(requests)), LAYERS, batch_size=1, steps=steps,
                          map_backend='torch')


def test_a_layer_listed_twice_is_refused():
    with pytest.raises(ValueError, match=r"CaptureRequest 'self4': layer listed twice in "
                                         r"\('up\.attn1', 'up\.attn1'\)"):
        _session(CaptureRequest('self', 4, layers=('up.attn1', 'up.attn1')))


def test_an_empty_head_list_is_refused_with_the_valid_range():
    """``heads=()`` would select nothing (a map never written); the error gives the range."""
    with pytest.raises(ValueError, match=r"CaptureRequest 'self4': head indices \[\] out of range; "
                       r'the 2 selected layer\(s\) have 4 heads in all \(indices 0\.\.3, '
                       r'layer-major in forward order\)$'):
        _session(CaptureRequest('self', 4, heads=()))


def test_a_head_past_the_end_names_the_owners_fix():
    request = CaptureRequest('self', 4, heads=(1, 4), heads_fix='pass self_heads=None')
    with pytest.raises(ValueError, match=r'head indices \[4\] out of range; the 2 selected '
                       r'layer\(s\) have 4 heads in all \(indices 0\.\.3, layer-major in forward '
                       r'order\); fix: pass self_heads=None$'):
        _session(request)


def test_per_layer_needs_a_head_of_every_selected_layer():
    """A per-layer map of a layer none of whose heads is selected would stay zero."""
    with pytest.raises(ValueError, match=r"CaptureRequest 'self4_layers': per_layer needs at "
                       r"least one head of layer 'up\.attn1' \(its heads are 2\.\.3\); "
                       r'selected: \[0, 1\]'):
        _session(CaptureRequest('self', 4, heads=(0, 1), per_layer=True))
    session = _session(CaptureRequest('self', 4, heads=(0, 1)))  # a mean: the layer is skipped
    assert list(session.layer_sinks) == ['down.attn1']


def test_results_refuse_a_capture_without_a_captured_step():
    session = _session(CaptureRequest('self', 4), steps=(5,))
    session.begin_step()
    session.begin_step()
    with pytest.raises(RuntimeError, match=r'no U-Net step was captured \(steps \[5\], 2 '
                                           r'step\(s\) run\)'):
        session.results()


def test_results_refuse_a_request_whose_layers_never_ran():
    session = _session(CaptureRequest('self', 4), CaptureRequest('cross', 4))
    session.begin_step()
    session.buffer(session.layer_sinks['down.attn1'][0], 16, 16, 'cpu').add_(2.0)
    session.end_step()
    with pytest.raises(RuntimeError, match=r"attention of \['cross4'\] was never computed: the "
                                           'U-Net did not run the requested layers'):
        session.results()


def test_results_divide_by_the_captured_steps_once():
    session = _session(CaptureRequest('self', 4))
    sink = session.layer_sinks['down.attn1'][0]
    for _ in range(2):
        session.begin_step()
        session.buffer(sink, 16, 16, 'cpu').add_(3.0)
        session.end_step()
    first = session.results()['self4'].clone()
    assert torch.equal(first, torch.full((1, 16, 16), 3.0))
    assert torch.equal(session.results()['self4'], first)  # read again: not divided again


def test_scratch_is_reallocated_for_another_dtype():
    session = _session(CaptureRequest('self', 4))
    cpu = torch.device('cpu')
    held = session.scratch('logits', 8, torch.float32, cpu)
    assert session.scratch('logits', 4, torch.float32, cpu).data_ptr() == held.data_ptr()
    other = session.scratch('logits', 4, torch.float64, cpu)
    assert other.dtype == torch.float64 and other.shape == (4,)


def test_a_forward_after_the_block_is_no_step_of_the_session(tiny_engine):
    """The session's step hooks leave the U-Net with its processors."""
    unet = tiny_engine('stable-diffusion-2-1-base').unet
    args = (torch.zeros(1, 4, 8, 8), 10)
    with torch.no_grad():
        with capture_attention(unet, CaptureSpec([CaptureRequest('self', 8)]), 8,
                               batch_size=1) as session:
            unet(*args, encoder_hidden_states=torch.zeros(1, 77, 32))
        unet(*args, encoder_hidden_states=torch.zeros(1, 77, 32))
    assert (session.step, session.captured_steps) == (0, 1)


def _rows(heads, seed=0):
    """A layer's captured ``(1, heads, 16, 8)`` query and key and their row LSE."""
    gen = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(1, heads, 16, 8, generator=gen) for _ in range(2))
    return q, k, torch.logsumexp(q @ k.transpose(-1, -2) / 8 ** 0.5, -1)


def test_a_captured_forward_that_raised_inside_the_block_is_not_averaged_in(tiny_engine):
    """A forward that raises midway (caught inside the block) has added some of its layers'
    maps: results() refuses them by step, also when it was the last step (no later step began);
    a raise in an uncaptured step changes no map."""
    unet = tiny_engine('stable-diffusion-2-1-base').unet
    args, text = (torch.zeros(1, 4, 8, 8), 10), torch.zeros(1, 77, 32)
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('self', 4)])
    last = unet.up_blocks[-1]

    def fail_at_the_last_block(module, inputs):
        raise RuntimeError('out of memory')
    with torch.no_grad():
        for raising_step, refused in ((0, True), (1, False), (2, True)):
            with capture_attention(unet, spec, 8, batch_size=1, steps=(0, 2)) as session:
                for step in range(3):
                    hook = (last.register_forward_pre_hook(fail_at_the_last_block)
                            if step == raising_step else None)
                    try:
                        unet(*args, encoder_hidden_states=text)
                    except RuntimeError:
                        assert step == raising_step
                    finally:
                        if hook is not None:
                            hook.remove()
            if refused:
                with pytest.raises(RuntimeError, match=r'the U-Net forward of captured step\(s\) '
                                                       rf'\[{raising_step}\] did not finish'):
                    session.results()
            else:
                assert set(session.results()) == {'self8', 'self4'}


def test_layers_of_unequal_head_weights_are_not_staged(monkeypatch):
    """A mean over layers of 2 and 4 heads weighs their heads 1/4 and 1/8: one staged sum with
    one weight cannot give it, so each layer is added at once."""
    pytest.importorskip('triton')
    from mmdiffseg.attention import deferred_maps
    monkeypatch.setattr(deferred_maps, 'DEFER_MIN_BYTES', 0)
    layers = [AttentionLayer('down.attn1', 'self', 4, 2), AttentionLayer('up.attn1', 'self', 4, 4)]
    session = CaptureSession(CaptureSpec([CaptureRequest('self', 4)]), layers, batch_size=1)
    sinks = [session.layer_sinks[name][0] for name in ('down.attn1', 'up.attn1')]
    assert [sink.weight for sink in sinks] == [1 / 4, 1 / 8]
    session.begin_step()
    assert not session.stage(sinks[0], 'down.attn1', *_rows(2))
    same = CaptureSession(CaptureSpec([CaptureRequest('self', 4)]), LAYERS, batch_size=1)
    same.begin_step()
    assert same.stage(same.layer_sinks['down.attn1'][0], 'down.attn1', *_rows(2))


def test_capture_rows_are_the_batch_or_the_conditional_half():
    session = CaptureSession(CaptureSpec([CaptureRequest('self', 4)]), LAYERS, batch_size=2)
    assert session.capture_rows(2) == slice(0, 2) and session.capture_rows(4) == slice(2, 4)
    with pytest.raises(RuntimeError, match=r'attention capture expected a batch of 2 samples \(or '
                                           r'4 with classifier-free guidance\), got 3$'):
        session.capture_rows(3)
