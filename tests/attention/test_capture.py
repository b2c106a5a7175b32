"""Captured maps equal an independent softmax(QK^T / sqrt d) recomputed from the layers' inputs."""
import pytest
import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec, capture_attention, unet_attention_layers
from mmdiffseg.attention.capture import CaptureProcessor

SD1, SD2 = 'stable-diffusion-v1-4', 'stable-diffusion-2-1-base'
SIZE, LATENT = 64, 8  # 64 px input -> 8x8 latent -> resolutions 8, 4, 2, 1
ATOL = 2e-6


def _images(batch, seed=0):
    return torch.randint(0, 256, (batch, 3, SIZE, SIZE), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def _layers(engine, kind, resolution):
    return [l for l in unet_attention_layers(engine.unet, LATENT)
            if l.kind == kind and l.resolution == resolution]


@pytest.mark.parametrize('model', [SD1, SD2])
def test_layer_layout_follows_the_real_configs(tiny_engine, model):
    layers = unet_attention_layers(tiny_engine(model).unet, 64)
    counts = {(k, r): len([l for l in layers if l.kind == k and l.resolution == r])
              for k in ('self', 'cross') for r in (64, 32, 16, 8)}
    assert counts == {(k, r): (1 if r == 8 else 5) for k in ('self', 'cross') for r in (64, 32, 16, 8)}
    heads = {r: {l.heads for l in layers if l.resolution == r} for r in (64, 32, 16, 8)}
    expected = {r: {8} for r in heads} if model == SD1 else {64: {1}, 32: {2}, 16: {4}, 8: {4}}
    assert heads == expected
    assert layers[0].name == 'down_blocks.0.attentions.0.transformer_blocks.0.attn1'
    assert layers[12].name.startswith('mid_block') and layers[-1].name.startswith('up_blocks.3')


@pytest.mark.parametrize('model', [SD1, SD2])
def test_every_resolution_equals_naive_head_and_layer_mean(tiny_engine, record_inputs, model):
    engine = tiny_engine(model)
    spec = CaptureSpec([CaptureRequest(k, r) for k in ('self', 'cross') for r in (8, 4, 2, 1)])
    recorder = record_inputs(engine.unet, [l.name for l in unet_attention_layers(engine.unet, LATENT)])
    maps = engine.extract(_images(2), prompts=['a photo of a cat', 'a dog on grass'], capture=spec,
                          image_size=SIZE)
    for request in spec.requests:
        layers = _layers(engine, request.kind, request.resolution)
        expected = torch.stack([recorder.naive_probs(l.name).mean(1) for l in layers]).mean(0)
        got = maps[request.name]
        n = request.resolution ** 2
        assert got.dtype == torch.float32
        assert got.shape == (2, n, n if request.kind == 'self' else 77)
        torch.testing.assert_close(got.double(), expected, atol=ATOL, rtol=1e-4)
        torch.testing.assert_close(got.sum(-1), torch.ones(2, n), atol=1e-5, rtol=0)
    # the two samples differ: nothing is averaged over the batch
    assert not torch.allclose(maps['self8'][0], maps['self8'][1], atol=1e-3)


def test_head_subsets_layer_selection_and_per_layer(tiny_engine, record_inputs):
    engine = tiny_engine(SD2)
    layers = _layers(engine, 'cross', 2)  # 5 layers x 4 heads (SD2-like layout)
    names = [l.name for l in layers]
    assert [l.heads for l in layers] == [4] * 5
    picked = (names[4], names[0])  # given out of order: heads still concatenate in forward order
    spec = CaptureSpec([
        CaptureRequest('cross', 2),
        CaptureRequest('cross', 2, heads=(0, 5, 6, 19), name='subset'),
        CaptureRequest('cross', 2, layers=picked, heads=(1, 6), name='two_layers'),
        CaptureRequest('cross', 2, layers=picked, per_layer=True),
        CaptureRequest('cross', 2, heads=(0, 5, 10, 11, 15, 16), per_layer=True, name='per_layer_heads'),
    ])
    recorder = record_inputs(engine.unet, names)
    maps = engine.extract(_images(1, seed=3), prompts=['a photo of a potted plant'], capture=spec,
                          image_size=SIZE)
    probs = torch.cat([recorder.naive_probs(n) for n in names], dim=1)  # (1, 20, 4, 77) layer-major

    def close(name, expected):
        torch.testing.assert_close(maps[name].double(), expected, atol=ATOL, rtol=1e-4)

    close('cross2', probs.mean(1))
    close('subset', probs[:, [0, 5, 6, 19]].mean(1))
    close('two_layers', probs[:, [1, 16 + 2]].mean(1))  # down layer head 1, up layer head 2
    close('cross2_layers', torch.stack([probs[:, 0:4].mean(1), probs[:, 16:20].mean(1)], dim=1))
    close('per_layer_heads', torch.stack([probs[:, [0]].mean(1), probs[:, [5]].mean(1),
                                          probs[:, [10, 11]].mean(1), probs[:, [15]].mean(1),
                                          probs[:, [16]].mean(1)], dim=1))


def test_capture_keeps_unet_output_and_restores_processors(tiny_engine):
    engine = tiny_engine(SD2)
    unet = engine.unet
    gen = torch.Generator().manual_seed(0)
    latents, context = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 77, 32, generator=gen)
    before = unet.attn_processors
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 2, heads=(1, 2))])
    with torch.no_grad():
        plain = unet(latents, 300, encoder_hidden_states=context).sample
        with capture_attention(unet, spec, LATENT, batch_size=2) as session:
            installed = unet.attn_processors
            captured = unet(latents, 300, encoder_hidden_states=context).sample
    assert torch.equal(captured, plain)  # the same SDPA call as the uncaptured layers
    for _ in range(2):  # results() averages once, however often it is read
        torch.testing.assert_close(session.results()['self8'].sum(-1), torch.ones(2, 64))
    capturing = sorted(k for k, p in installed.items() if isinstance(p, CaptureProcessor))
    # heads 1, 2 of cross2 both belong to its first layer: the other 4 cross layers stay fused
    wanted = sorted(f'{l.name}.processor' for l in _layers(engine, 'self', 8) + _layers(engine, 'cross', 2)[:1])
    assert capturing == wanted
    assert all(installed[k] is before[k] for k in before if k not in wanted)
    after = unet.attn_processors
    assert all(after[k] is before[k] for k in before)


def test_capture_leaves_a_guidance_batch_output_unchanged(tiny_engine):
    """Captured layers make the uncaptured layers' SDPA call on the whole CFG batch ``[uncond,
    cond]`` (the old explicit path differed by ~1e-6 on the captured half)."""
    unet = tiny_engine(SD2).unet
    gen = torch.Generator().manual_seed(1)
    latents, context = torch.randn(4, 4, 8, 8, generator=gen), torch.randn(4, 77, 32, generator=gen)
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4, heads=(1,))])
    with torch.no_grad():
        plain = unet(latents, 500, encoder_hidden_states=context).sample
        with capture_attention(unet, spec, LATENT, batch_size=2) as session:
            captured = unet(latents, 500, encoder_hidden_states=context).sample
    assert torch.equal(captured, plain)
    assert session.results()['self8'].shape == (2, 64, 64)


def test_sessions_reuse_the_layer_walk_and_follow_a_replaced_module(tiny_engine, monkeypatch):
    """The second session does not walk the U-Net's modules again; a module replaced in between
    (same path, new object) is found, captured and restored, and the old one is left alone."""
    import copy
    unet = tiny_engine(SD2).unet
    spec = CaptureSpec([CaptureRequest('self', 8)])
    name = _layers(tiny_engine(SD2), 'self', 8)[0].name
    with capture_attention(unet, spec, LATENT, batch_size=1):
        pass
    walks = []
    for method in ('named_modules', 'named_children'):  # how torch and diffusers walk modules
        walk = getattr(torch.nn.Module, method)
        monkeypatch.setattr(torch.nn.Module, method, lambda self, *a, _walk=walk, **kw:
                            walks.append(1) or _walk(self, *a, **kw))
    with capture_attention(unet, spec, LATENT, batch_size=1):
        pass
    assert not walks
    old = unet.get_submodule(name)
    new = copy.deepcopy(old)
    parent, child = name.rsplit('.', 1)
    setattr(unet.get_submodule(parent), child, new)
    kept = new.processor
    with capture_attention(unet, spec, LATENT, batch_size=1):
        assert isinstance(new.processor, CaptureProcessor)
        assert not isinstance(old.processor, CaptureProcessor)
    assert walks and new.processor is kept


def test_processors_restored_after_an_error(tiny_engine):
    unet = tiny_engine(SD2).unet
    before = unet.attn_processors
    with pytest.raises(RuntimeError, match='expected a batch of 1'):
        with torch.no_grad(), capture_attention(unet, CaptureSpec([CaptureRequest('self', 8)]),
                                                LATENT, batch_size=1):
            unet(torch.zeros(3, 4, 8, 8), 10, encoder_hidden_states=torch.zeros(3, 77, 32))
    assert all(unet.attn_processors[k] is before[k] for k in before)


def test_generate_averages_conditional_half_over_selected_steps(tiny_engine, record_inputs):
    engine = tiny_engine(SD2)
    layers = _layers(engine, 'cross', 4)
    spec = CaptureSpec([CaptureRequest('cross', 4), CaptureRequest('self', 8, heads=(0,), name='s8')],
                       steps=(0, 2))
    recorder = record_inputs(engine.unet, [l.name for l in layers + _layers(engine, 'self', 8)])
    prompts = ['a photo of a cat', 'a photo of a dog']
    images, maps = engine.generate(prompts, class_names=[['cat'], ['dog']], steps=3, seed=[1, 2],
                                   capture=spec, height=SIZE, width=SIZE)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, SIZE, SIZE)
    assert maps.token_positions == [{'cat': [5]}, {'dog': [5]}] and maps.prompts == prompts
    assert maps.image_size == (SIZE, SIZE)
    calls = recorder.calls[layers[0].name]
    # PNDM (the configs' scheduler) runs its first timestep twice: 4 U-Net calls for 3 steps
    assert len(calls) == len(engine.scheduler.timesteps) == 4
    assert calls[0][0].shape[0] == 4  # CFG batch [uncond, cond]

    def expected(names, heads=slice(None)):
        per_step = [torch.stack([recorder.naive_probs(n, step)[2:, heads].mean(1) for n in names]).mean(0)
                    for step in (0, 2)]
        return torch.stack(per_step).mean(0)

    torch.testing.assert_close(maps['cross4'].double(), expected([l.name for l in layers]),
                               atol=ATOL, rtol=1e-4)
    self_layers = [l.name for l in _layers(engine, 'self', 8)]
    # head 0 of the concatenation = head 0 of the first layer only (1 head per 64-px layer)
    torch.testing.assert_close(maps['s8'].double(), expected(self_layers[:1], [0]), atol=ATOL, rtol=1e-4)

    again, maps_again = engine.generate(prompts, steps=3, seed=[1, 2], capture=spec,
                                        height=SIZE, width=SIZE)
    assert torch.equal(again, images) and torch.equal(maps_again['cross4'], maps['cross4'])
    other, _ = engine.generate(prompts, steps=3, seed=[7, 2], capture=spec, height=SIZE, width=SIZE)
    assert not torch.equal(other[0], images[0]) and torch.equal(other[1], images[1])


def test_generate_without_guidance_captures_the_whole_batch(tiny_engine, record_inputs):
    engine = tiny_engine(SD2)
    name = _layers(engine, 'self', 1)[0].name  # mid block
    recorder = record_inputs(engine.unet, [name])
    _, maps = engine.generate(['a cat'], steps=2, guidance_scale=1.0, seed=0,
                              capture=CaptureSpec([CaptureRequest('self', 1)]), height=SIZE, width=SIZE)
    assert recorder.calls[name][0][0].shape[0] == 1
    assert torch.allclose(maps['self1'], torch.ones(1, 1, 1))  # a 1x1 grid attends to itself


def test_half_precision_logits_beyond_float16_range_give_float32_maps(sd_config_dir, record_inputs):
    """q.k above 65504 overflows float16 logits (the old explicit path gave NaN maps unless
    ``upcast_attention``); the maps are now built from float32 logits, like the fused SDPA output,
    so ``upcast_attention`` changes nothing and the maps stay exact."""
    from mmdiffseg.attention import DiffusionAttentionEngine
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    engine = DiffusionAttentionEngine.from_pretrained(cached_tiny_pipeline_folder(sd_config_dir(SD2)),
                                                      dtype=torch.float16)
    name = _layers(engine, 'self', 8)[0].name
    attn = engine.unet.get_submodule(name)
    with torch.no_grad():
        attn.to_q.weight.mul_(3e3)  # q.k overflows float16 (> 65504)
        attn.to_k.weight.mul_(3e3)
    spec = CaptureSpec([CaptureRequest('self', 8, layers=(name,))])
    recorder = record_inputs(engine.unet, [name])
    maps = engine.extract(_images(1), capture=spec, image_size=SIZE)
    maps.check_finite()
    expected = recorder.naive_probs(name).mean(1)
    assert expected.max() > 0.99  # logits this large make rows nearly one-hot
    torch.testing.assert_close(maps['self8'].double(), expected, atol=2e-3, rtol=0)
    torch.testing.assert_close(maps['self8'].sum(-1), torch.ones(1, 64), atol=1e-5, rtol=0)
    attn.upcast_attention = True
    assert torch.equal(engine.extract(_images(1), capture=spec, image_size=SIZE)['self8'], maps['self8'])


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_low_precision_models_give_float32_maps_close_to_float32(tiny_engine, dtype):
    spec = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 2)])
    ref = tiny_engine(SD2).extract(_images(1), prompts=['a cat'], capture=spec, image_size=SIZE)
    maps = tiny_engine(SD2, dtype).extract(_images(1), prompts=['a cat'], capture=spec, image_size=SIZE)
    maps.check_finite()
    for name in spec.names:
        assert maps[name].dtype == torch.float32
        torch.testing.assert_close(maps[name].sum(-1), torch.ones(maps[name].shape[:2]), atol=1e-5, rtol=0)
        torch.testing.assert_close(maps[name], ref[name], atol=2e-3, rtol=0)


def test_full_resolution_input_gives_64_to_8_maps(tiny_engine):
    import numpy as np
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (300, 400, 3), dtype=np.uint8),
              rng.integers(0, 256, (512, 512, 3), dtype=np.uint8)]
    spec = CaptureSpec([CaptureRequest('self', 64, layers=('up_blocks.3.attentions.1.transformer_blocks.0.attn1',)),
                        CaptureRequest('self', 8), CaptureRequest('cross', 16)])
    maps = tiny_engine(SD2).extract(images, capture=spec)
    assert maps['self64'].shape == (2, 4096, 4096) and maps['self8'].shape == (2, 64, 64)
    assert maps['cross16'].shape == (2, 256, 77) and maps.image_size == (512, 512)
    torch.testing.assert_close(maps['self64'].sum(-1), torch.ones(2, 4096), atol=1e-5, rtol=0)


def test_latent_of_another_size_than_declared_is_refused(tiny_engine):
    unet = tiny_engine(SD2).unet
    with pytest.raises(RuntimeError, match=r'256 query tokens, expected 8x8'):
        with torch.no_grad(), capture_attention(unet, CaptureSpec([CaptureRequest('self', 8)]),
                                                LATENT, batch_size=1):
            unet(torch.zeros(1, 4, 16, 16), 10, encoder_hidden_states=torch.zeros(1, 77, 32))


def test_a_layer_of_no_plain_attention_or_already_captured_is_refused(tiny_engine):
    """A captured step runs plain SDPA in place of the layer's processor: an IP-Adapter's or an
    attention edit's would change the output (it did, silently), and an inner session took the
    outer one's layers over (its maps came out short). Both are refused naming the layer and the
    fix, before anything on the U-Net changes (no hook left); diffusers' classic, sliced and
    fused-QKV processors are plain attention, their maps those of the default processor."""
    from diffusers.models.attention_processor import (AttnProcessor, AttnProcessor2_0,
                                                      SlicedAttnProcessor)

    class Halved(AttnProcessor2_0):
        def __call__(self, attn, hidden_states, *args, **kwargs):
            return 0.5 * super().__call__(attn, hidden_states, *args, **kwargs)

    unet = tiny_engine(SD2).unet
    spec = CaptureSpec([CaptureRequest('self', 8)])
    first, second = [layer.name for layer in _layers(tiny_engine(SD2), 'self', 8)][:2]
    edited = unet.get_submodule(second)
    kept = edited.processor
    hooks = (len(unet._forward_pre_hooks), len(unet._forward_hooks))
    try:
        edited.set_processor(Halved())
        with pytest.raises(ValueError, match=rf'^{second} runs \S*Halved, not plain attention: .*'
                                             r'\(unet.set_default_attn_processor\(\)\)$'):
            with capture_attention(unet, spec, LATENT, batch_size=1):
                pass
        assert not isinstance(unet.get_submodule(first).processor, CaptureProcessor)
        assert (len(unet._forward_pre_hooks), len(unet._forward_hooks)) == hooks
        latents = torch.randn(1, 4, LATENT, LATENT)
        context = torch.randn(1, 77, unet.config.cross_attention_dim)
        maps = {}
        for name, variant in (('default', lambda: edited.set_processor(kept)),
                              ('sliced', lambda: edited.set_processor(SlicedAttnProcessor(1))),
                              ('fused', unet.fuse_qkv_projections)):
            variant()
            with torch.no_grad(), capture_attention(unet, spec, LATENT, batch_size=1) as session:
                unet(latents, 10, encoder_hidden_states=context)
            maps[name] = session.results()['self8']
            if name == 'fused':
                unet.unfuse_qkv_projections()
        torch.testing.assert_close(maps['sliced'], maps['default'], atol=1e-6, rtol=0)
        torch.testing.assert_close(maps['fused'], maps['default'], atol=1e-6, rtol=0)
        edited.set_processor(AttnProcessor())
        with capture_attention(unet, spec, LATENT, batch_size=1):
            with pytest.raises(ValueError, match=rf'^{first} is captured by another '
                                                 r'capture_attention session already; capture '
                                                 r'once, with merge_specs\(\[outer, inner\]\)$'):
                inner = CaptureSpec([CaptureRequest('self', 8, layers=[first])])
                with capture_attention(unet, inner, LATENT, batch_size=1):
                    pass
            assert isinstance(unet.get_submodule(first).processor, CaptureProcessor)
    finally:
        edited.set_processor(kept)
