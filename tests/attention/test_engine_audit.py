"""DiffusionAttentionEngine: the VAE factor of the image size, the model's own latent scaling
factor, and what reaches the U-Net."""
import copy

import numpy as np
import pytest
import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec, DiffusionAttentionEngine

SD1, SD2 = 'stable-diffusion-v1-4', 'stable-diffusion-2-1-base'
SPEC = CaptureSpec([CaptureRequest('self', 8)])


def _image(seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_an_image_size_off_the_vae_factor_is_refused_naming_it(tiny_engine):
    """68 px is 8.5 latents: refused by the VAE factor before anything runs."""
    engine = tiny_engine(SD2)
    with pytest.raises(ValueError, match=r'^image size 68 is not a multiple of the VAE factor 8$'):
        engine.extract([_image(0)], capture=SPEC, image_size=68)
    with pytest.raises(ValueError, match=r'^image size 68 is not a multiple of the VAE factor 8$'):
        engine.generate(['a cat'], steps=1, capture=SPEC, height=68, width=68)


def test_latents_are_scaled_by_the_models_own_scaling_factor(tiny_engine):
    """A VAE whose config names another scaling factor than SD's 0.18215: its latents are
    scaled by it."""
    engine = tiny_engine(SD2)
    vae = copy.deepcopy(engine.vae)
    vae.register_to_config(scaling_factor=0.5)
    other = DiffusionAttentionEngine(vae, engine.unet, engine.text_encoder, engine.tokenizer,
                                     engine.scheduler, model_id='tiny')
    seen = []
    hook = engine.unet.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    image = torch.from_numpy(_image(3)).permute(2, 0, 1)[None]
    try:
        other.extract(image, capture=SPEC, image_size=64)
    finally:
        hook.remove()
    with torch.no_grad():
        mean = vae.encode(image.float() / 127.5 - 1).latent_dist.mean
    torch.testing.assert_close(seen[0], mean * 0.5)


def test_generate_refuses_a_grid_the_size_lacks_before_the_unet_runs(tiny_engine):
    engine = tiny_engine(SD1)
    calls = []
    hook = engine.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        with pytest.raises(ValueError, match=r'image size 64 cannot be used: .*64 token grids'):
            engine.generate(['a cat'], steps=1, capture=CaptureRequest('self', 64), height=64,
                            width=64)
    finally:
        hook.remove()
    assert not calls


def test_diffusers_safety_checker_options_load_and_a_pipeline_object_is_sent_to_from_pipeline(
        sd_config_dir):
    """``safety_checker=None`` / ``requires_safety_checker=False``, the usual diffusers loading
    options, were a "got multiple values" TypeError (the engine passes them itself); a loaded
    pipeline given to ``from_pretrained`` was pathlib's TypeError."""
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    folder = cached_tiny_pipeline_folder(sd_config_dir(SD2))
    engine = DiffusionAttentionEngine.from_pretrained(folder, safety_checker=None,
                                                      requires_safety_checker=False)
    with pytest.raises(TypeError, match=r'^from_pretrained takes a hub id or a diffusers folder, '
                       r'not a StableDiffusionPipeline; .*DiffusionAttentionEngine\.from_pipeline'
                       r'\(pipe, model_id\)$'):
        from diffusers import StableDiffusionPipeline
        DiffusionAttentionEngine.from_pretrained(StableDiffusionPipeline(
            engine.vae, engine.text_encoder, engine.tokenizer, engine.unet, engine.scheduler,
            None, None, requires_safety_checker=False))


def test_generate_refuses_a_seed_of_none_naming_how_to_draw_one(tiny_engine):
    """diffusers' "no generator" convention was int(None)'s TypeError."""
    with pytest.raises(ValueError, match=r'^seed=None: generate takes an int seed .*'
                       r'seed=random\.randrange\(2\*\*31\)$'):
        tiny_engine(SD2).generate(['a cat'], steps=1, capture=SPEC, seed=None)


def test_fractional_timestep_seed_and_noise_are_refused_not_truncated(tiny_engine):
    """300.7 ran at timestep 300 and seed 1.5 as seed 1 (int() truncates): the labels of
    another setting than the one written down. Whole floats (from configs) stay accepted."""
    engine = tiny_engine(SD2)
    image = torch.rand(1, 3, 64, 64) * 255
    with pytest.raises(ValueError, match=r'timestep must be a whole number .*got 300\.7'):
        engine.extract(image, timestep=300.7, noise=0, capture=SPEC, image_size=64)
    with pytest.raises(ValueError, match=r'noise \(a seed\) must be a whole number .*got 1\.5'):
        engine.extract(image, timestep=300, noise=1.5, capture=SPEC, image_size=64)
    with pytest.raises(ValueError, match=r'seed must be a whole number .*got 1\.5'):
        engine.generate(['a cat'], steps=1, capture=SPEC, seed=1.5)
    with pytest.raises(ValueError, match=r'seed\[1\] must be a whole number .*got 2\.5'):
        engine.generate(['a cat', 'a dog'], steps=1, capture=SPEC, seed=[1, 2.5])
    whole = engine.extract(image, timestep=300.0, noise=7.0, capture=SPEC, image_size=64)
    exact = engine.extract(image, timestep=300, noise=7, capture=SPEC, image_size=64)
    for name in exact.maps:
        torch.testing.assert_close(whole[name], exact[name], rtol=0, atol=0)


def test_named_layers_of_another_size_get_the_sizes_that_have_them(tiny_engine):
    """SeeDiff's 16/32/64 layers are named at 512: at 1024 every grid exists, at other levels,
    and the refusal was the bare 'unknown layer(s)' without the sizes that serve the spec."""
    from mmdiffseg.generators import SeeDiff
    engine = tiny_engine(SD2)
    spec = SeeDiff(['background', 'cat'], resolutions=[16, 32, 64]).capture_spec
    with pytest.raises(ValueError, match=r'^image size 1024 cannot be used: the capture spec '
                                         r'reads attention at 16/32/64 token grids, which this '
                                         r'model has at image size\(s\) \[512\] only.* At 1024: '
                                         r"CaptureRequest 'seediff_self16': unknown layer"):
        engine.check_capture(spec, 1024)
    engine.check_capture(spec, 512)
