"""The engine's shared noise (:func:`shared_noise`) and its draw check, without a model."""
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


def test_the_cuda_draw_is_refused_off_cuda_and_unknown_draws_by_name():
    check_noise_draw('cuda_float16')  # the name alone is fine
    check_noise_draw('cpu', torch.device('cpu'))
    with pytest.raises(ValueError, match='needs the engine on a CUDA device'):
        check_noise_draw('cuda_float16', torch.device('cpu'))
    with pytest.raises(ValueError, match='one of'):
        check_noise_draw('gpu')
