"""The training noiser's schedule keys beyond the betas: a zero-terminal-SNR rescale in the folder's
scheduler config is kept, and a schedule key this diffusers' DDPM scheduler lacks is left out."""
import torch

from mmdiffseg.attention import noise


def test_a_zero_terminal_snr_schedule_is_kept():
    """``rescale_betas_zero_snr=True`` (Lin et al. 2024, Algorithm 1): sqrt(alpha_bar) shifted so
    the last step is pure noise and scaled so the first is unchanged; add_noise(x0=1, eps=0, t)
    is that sqrt(alpha_bar_t)."""
    config = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                  beta_schedule='scaled_linear', rescale_betas_zero_snr=True)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    root = torch.cumprod(1 - betas, 0).sqrt()
    rescaled = (root - root[-1]) * root[0] / (root[0] - root[-1])
    noiser = noise.training_noiser(config)
    x0, eps = torch.ones(3, 1, 1, 1), torch.zeros(3, 1, 1, 1)
    steps = torch.tensor([0, 500, 999])
    got = noiser.add_noise(x0, eps, steps).flatten().double()
    torch.testing.assert_close(got, rescaled[steps], rtol=1e-4, atol=1e-5)
    assert got[-1].abs() < 1e-5  # the unrescaled schedule keeps ~0.068 of the signal


def test_a_schedule_key_the_ddpm_scheduler_lacks_is_left_out(monkeypatch):
    """As with an older diffusers whose DDPM scheduler predates a key: it is not passed (DDPM
    would refuse it), the betas still come from the config."""
    monkeypatch.setattr(noise, 'SCHEDULE_KEYS', noise.SCHEDULE_KEYS + ('zero_snr_offset',))
    config = dict(num_train_timesteps=10, beta_start=0.1, beta_end=0.2, beta_schedule='linear',
                  zero_snr_offset=0.5)
    noiser = noise.training_noiser(config)
    torch.testing.assert_close(noiser.betas.double(),
                               torch.linspace(0.1, 0.2, 10, dtype=torch.float64))
