"""The engine's shared noise (:func:`shared_noise`) and its draw check, without a model."""
import re

import pytest
import torch

from mmdiffseg.attention.noise import check_noise_draw, shared_noise


def test_a_seed_draws_one_cpu_noise_for_every_sample():
    latents = torch.zeros(3, 4, 8, 8, dtype=torch.float64)
    eps = shared_noise(7, latents)
    expected = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(7))
    assert eps.shape == latents.shape and eps.dtype == torch.float64
    for sample in eps:
        assert torch.equal(sample, expected.double())


def test_a_noise_tensor_is_shared_and_its_shape_checked():
    latents = torch.zeros(2, 4, 8, 8)
    noise = torch.randn(1, 4, 8, 8)
    assert torch.equal(shared_noise(noise, latents), noise.expand(2, 4, 8, 8))
    half = shared_noise(noise, latents.half())
    assert half.dtype == torch.float16 and torch.equal(half, noise.half().expand(2, 4, 8, 8))
    for bad in (torch.randn(1, 3, 8, 8), torch.randn(4, 8, 9)):
        with pytest.raises(ValueError, match='noise shape .* does not match the latents'):
            shared_noise(bad, latents)
    with pytest.raises(ValueError, match=r'pass a noise of shape \(4, 8, 8\) or \(1, 4, 8, 8\) '
                                         r'\(one for every image\)$'):   # (batch 1: said once)
        shared_noise(torch.randn(2, 4, 8, 8), latents[:1])


def test_the_cuda_draw_is_refused_off_cuda_and_unknown_draws_by_name():
    check_noise_draw('cuda_float16')  # the name alone is fine
    check_noise_draw('cpu', torch.device('cpu'))
    with pytest.raises(ValueError, match='needs the engine on a CUDA device'):
        check_noise_draw('cuda_float16', torch.device('cpu'))
    with pytest.raises(ValueError, match='one of'):
        check_noise_draw('gpu')


def test_the_training_noiser_takes_the_models_betas_and_skips_foreign_keys():
    """SD's scaled-linear betas (``linspace(sqrt b0, sqrt b1, T) ** 2``) from the folder's
    scheduler config, whatever scheduler class it names; keys DDPM lacks are left out."""
    from mmdiffseg.attention.noise import training_noiser
    config = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule='scaled_linear', use_karras_sigmas=True, _class_name='Euler')
    noiser = training_noiser(config)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(noiser.betas.double(), betas, rtol=1e-5, atol=1e-9)
    x0, eps = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    noised = noiser.add_noise(x0, eps, torch.tensor([100]))
    expected = torch.prod(1 - betas[:101]).sqrt()
    assert noised.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_noise_tensor_for_another_batch_is_refused_naming_the_shapes_that_fit():
    """A batch of 3 takes a noise of (4, 8, 8), (1, 4, 8, 8) or (3, 4, 8, 8) (one per sample,
    used as it is); another leading size or an extra dimension is refused, not broadcast."""
    latents = torch.zeros(3, 4, 8, 8)
    per_sample = torch.randn(3, 4, 8, 8)
    assert torch.equal(shared_noise(per_sample, latents), per_sample)
    assert torch.equal(shared_noise(per_sample[0], latents), per_sample[0].expand(3, 4, 8, 8))
    for bad in (torch.randn(2, 4, 8, 8), torch.randn(1, 1, 4, 8, 8), torch.randn(3, 3, 4, 8, 8)):
        with pytest.raises(ValueError, match=rf'^noise shape {re.escape(str(tuple(bad.shape)))} '
                           r'does not match the latents \(3, 4, 8, 8\): pass a noise of shape '
                           r'\(4, 8, 8\) or \(1, 4, 8, 8\) \(one for every image\) or '
                           r'\(3, 4, 8, 8\) \(one per image\)$'):
            shared_noise(bad, latents)
