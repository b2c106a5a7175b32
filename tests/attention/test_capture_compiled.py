"""Capture in a U-Net compiled with ``torch.compile``: the captured layers trace with the rest
(dynamo's eager backend here: tracing without code generation, seconds on a CPU)."""
import numpy as np
import pytest
import torch
from torch._dynamo.utils import counters

from mmdiffseg.attention import CaptureRequest, CaptureSpec, DiffusionAttentionEngine
from mmdiffseg.attention.capture import CaptureSession, capture_attention
from mmdiffseg.attention.head_maps import default_chunk_bytes
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.attention.unet_layers import unet_attention_layers

SPEC = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4, heads=(0, 1))])


def images(seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(2)]


@pytest.mark.parametrize('how', ['method', 'wrapper'])
@pytest.mark.parametrize('device', [
    'cpu', pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                         reason='needs a CUDA device'))])
def test_a_compiled_unet_captures_in_one_graph_with_eagers_maps(sd_config_dir, device, how):
    """No graph break (the SDPA backend choice, a Python int, is not asked under compile; on
    CUDA the Triton kernels are graph operators, nothing staged, no free memory read), no
    recompile for the next batch's new capture session, and the maps of the eager run within
    float32 rounding (the row statistics come from the map path instead of the SDPA kernel).
    ``unet.compile()`` and the wrapper of ``torch.compile(unet)`` alike."""
    torch.set_num_threads(1)
    folder = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))
    # its own engine: the U-Net is compiled
    engine = DiffusionAttentionEngine.from_pretrained(folder, device=device)
    kwargs = dict(prompts='a photo of a cat', capture=SPEC, image_size=64, noise=3, timestep=100)
    eager = [engine.extract(images(seed), **kwargs) for seed in (0, 1)]
    torch._dynamo.reset()
    counters.clear()
    if how == 'method':
        engine.unet.compile(backend='eager')
    else:   # the wrapper torch.compile(unet) returns: its layers are found through it
        engine.unet = torch.compile(engine.unet, backend='eager')
    compiled = [engine.extract(images(seed), **kwargs) for seed in (0, 1)]
    assert not counters['graph_break'], list(counters['graph_break'])
    assert counters['stats']['unique_graphs'] == 1
    for want, got in zip(eager, compiled):
        for name in ('self8', 'cross4'):
            torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-7)
    torch._dynamo.reset()


def test_a_compiled_unets_session_finds_its_chunk_and_backend_before_the_trace(
        sd_config_dir, monkeypatch):
    """What a traced forward cannot find out is found when a compiled U-Net's session starts: the
    torch path's chunk (from the free memory on CUDA) and the map backend (the Triton kernels are
    graph operators there: ``interpreted_map_kernel.py`` compiles a U-Net with them). Traced, a
    masked layer and a session that found none take the torch path."""
    from diffusers import UNet2DConditionModel
    unet = UNet2DConditionModel.from_config(
        UNet2DConditionModel.load_config(cached_tiny_pipeline_folder(
            sd_config_dir('stable-diffusion-2-1-base')), subfolder='unet'))
    with capture_attention(unet, SPEC, 8, 1) as session:
        assert (session.traced_chunk_bytes, session.traced_backend) == (None, None)
    with capture_attention(torch.compile(unet), SPEC, 8, 1) as session:
        assert session.traced_chunk_bytes == default_chunk_bytes('cpu')
        assert session.traced_backend == 'torch'  # 'auto' on a CPU
    unet.compile()
    with capture_attention(unet, SPEC, 8, 1, chunk_bytes=2 ** 20) as session:
        assert (session.traced_chunk_bytes, session.traced_backend) == (2 ** 20, 'torch')
    monkeypatch.setattr(torch.compiler, 'is_compiling', lambda: True)
    session = CaptureSession(SPEC, unet_attention_layers(unet, 8), 1, None, None, 'triton')
    assert session.backend(torch.device('cpu'), False) == 'torch'
    session.traced_backend = 'triton'
    assert session.backend(torch.device('cpu'), False) == 'triton'
    assert session.backend(torch.device('cpu'), True) == 'torch'


def test_the_engine_option_compiles_its_unet(sd_config_dir, monkeypatch):
    """``compile_unet``: True compiles with torch.compile's defaults, a dict with those options
    (the tools' ``--compile BACKEND``); the default leaves the U-Net eager."""
    from mmdiffseg.attention.unet_layers import compiled
    folder = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))
    options, compile_ = [], torch.nn.Module.compile

    def spy(module, **kwargs):
        options.append(kwargs)
        return compile_(module, **kwargs)
    monkeypatch.setattr(torch.nn.Module, 'compile', spy)
    assert not compiled(DiffusionAttentionEngine.from_pretrained(folder).unet)
    for option, given in ((True, {}), (dict(backend='eager'), dict(backend='eager'))):
        engine = DiffusionAttentionEngine.from_pretrained(folder, compile_unet=option)
        assert compiled(engine.unet) and options[-1] == given
    assert len(options) == 2
