"""DiffusionAttentionEngine: which image sizes a capture spec is offered, arguments refused
before any work, and the image size the maps record."""
import numpy as np
import pytest
import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec

SD1, SD2 = 'stable-diffusion-v1-4', 'stable-diffusion-2-1-base'
SPEC = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4)])


def _image(seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_offered_sizes_are_every_latent_multiple_of_the_unets_downsampling(tiny_engine):
    """The U-Net halves the latent 3 times, so every latent multiple of 8 runs: a 24x24 grid is
    level 0 of latent 24 (192 px), level 1 of 48, level 2 of 96 and the mid block of 192 (1536
    px); a 3x3 grid only the mid block of latent 24 (192 px, not a multiple of 16 latents)."""
    engine = tiny_engine(SD2)
    for resolution, sizes in ((24, r'\[192, 384, 768, 1536\]'), (3, r'\[192\]')):
        with pytest.raises(ValueError, match=rf'image size 64 cannot be used: .* {resolution} '
                           rf'token grids, which this model has at image size\(s\) {sizes} only'):
            engine.check_capture(CaptureRequest('self', resolution), 64)


def test_a_request_no_image_size_serves_raises_its_own_error(tiny_engine):
    """Heads past the model's count fit no image size: the request's error alone, not an
    advice to change the image size (to one of none)."""
    engine = tiny_engine(SD2)
    with pytest.raises(ValueError) as info:
        engine.check_capture(CaptureRequest('cross', 2, heads=(0, 20)), 64)
    message = str(info.value)
    assert message.startswith("CaptureRequest 'cross2': head indices [20] out of range")
    assert 'image size' not in message


def test_a_request_whose_grid_is_there_raises_its_own_error_not_a_size_advice(tiny_engine):
    """Per-layer maps of heads (0, 1) at the 2x2 grid of a 64 px image: one of its layers has
    no such head (SD 2's head count per level), which another image size would serve with
    another layer; the advice to use that size read another layer than meant."""
    engine = tiny_engine(SD2)
    request = CaptureRequest('self', 2, heads=(0, 1), per_layer=True, name='x')
    with pytest.raises(ValueError) as info:
        engine.check_capture(request, 64)
    message = str(info.value)
    assert message.startswith("CaptureRequest 'x': per_layer needs at least one head of layer")
    assert 'image size' not in message


def test_generate_refuses_a_class_name_list_per_prompt_mismatch_before_the_unet(tiny_engine):
    """One list of class names per prompt: a shorter list is refused, not zipped away."""
    engine = tiny_engine(SD1)
    calls = []
    hook = engine.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError, match='class_names has 1 entries for 2 prompts'):
            engine.generate(['a cat', 'a dog'], class_names=[['cat']], steps=1, capture=SPEC,
                            height=64, width=64)
    finally:
        hook.remove()
    assert not calls


@pytest.mark.parametrize('token_enhance', [0.5, 2.0])
def test_any_token_enhance_other_than_1_needs_class_names(tiny_engine, token_enhance):
    """A factor below 1 (damping the class tokens) is as much a no-op without class names as
    one above 1: both refused."""
    engine = tiny_engine(SD2)
    with pytest.raises(ValueError, match=rf'token_enhance={token_enhance} .*pass class_names'):
        engine.extract([_image(0)], prompts='a cat', token_enhance=token_enhance, capture=SPEC,
                       image_size=64)


def test_maps_record_the_image_size_the_unet_saw(tiny_engine):
    """``AttentionMaps.image_size`` is the size the images were resized to (extract) or
    generated at (generate), not SD's default 512."""
    engine = tiny_engine(SD2)
    spec = CaptureSpec([CaptureRequest('self', 8)])
    maps = engine.extract([_image(0, size=48)], capture=spec, image_size=64)
    assert maps.image_size == (64, 64)
    _, maps = engine.generate(['a cat'], steps=1, capture=spec, height=64, width=64)
    assert maps.image_size == (64, 64)


def test_extract_refuses_a_noise_for_another_batch_size(tiny_engine):
    """Two noises for three images: a ValueError naming the shapes that fit, not a broadcast
    error."""
    engine = tiny_engine(SD2)
    with pytest.raises(ValueError, match=r'noise shape \(2, 4, 8, 8\) does not match the latents '
                       r'\(3, 4, 8, 8\): pass a noise of shape \(4, 8, 8\) or \(1, 4, 8, 8\)'):
        engine.extract([_image(0)] * 3, noise=torch.randn(2, 4, 8, 8), capture=SPEC,
                       image_size=64)


@pytest.mark.parametrize('prompts', [[], ()])
def test_generate_refuses_no_prompt_before_the_unet(tiny_engine, prompts):
    """No prompt is no image: refused by name, not an IndexError inside the tokenizer."""
    engine = tiny_engine(SD2)
    calls = []
    hook = engine.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r'^prompts=\[\]: generate needs at least one '
                                             r'prompt .*pass a string or a non-empty list'):
            engine.generate(prompts, steps=1, capture=[CaptureRequest('cross', 8)], height=64,
                            width=64)
    finally:
        hook.remove()
    assert not calls
