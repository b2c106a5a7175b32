"""The noise :meth:`~mmdiffseg.attention.DiffusionAttentionEngine.extract` adds to the latents
(iSeg: seeded, one draw shared by every image of a batch)."""
from __future__ import annotations

import inspect
from typing import Mapping, Optional, Union

import torch

from ..transfer import host_to_device

#: the scheduler settings that define the training noise schedule (the betas)
SCHEDULE_KEYS = ('num_train_timesteps', 'beta_start', 'beta_end', 'beta_schedule', 'trained_betas',
                 'rescale_betas_zero_snr')


def training_noiser(config: Mapping):
    """A DDPM scheduler on the betas of the model's scheduler ``config``: its ``add_noise`` is the
    forward process q(x_t | x_0) the U-Net was trained on, which the releases add with their
    DDPM/DDIM/PNDM schedulers. The folder's own scheduler class may add noise otherwise: the
    Karras-sigma ones (Euler, LMS, Heun, KDPM2) leave the signal unscaled, DPM-Solver and UniPC
    index their sigmas backwards before ``set_timesteps``; a fine-tune shipping one of them would
    give other maps at the same timestep."""
    from diffusers import DDPMScheduler
    params = inspect.signature(DDPMScheduler.__init__).parameters
    return DDPMScheduler(**{key: config[key] for key in SCHEDULE_KEYS
                            if key in config and key in params})


#: how a seeded noise is drawn (see :func:`shared_noise`)
NOISE_DRAWS = ('cpu', 'cuda_float16')


def check_noise_draw(draw: str, device: Optional[torch.device] = None) -> None:
    """Refuse an unknown ``draw``, or ``'cuda_float16'`` for an engine off CUDA (``device``
    None: the name only)."""
    if draw not in NOISE_DRAWS:
        raise ValueError(f'noise_draw={draw!r}: one of {NOISE_DRAWS}')
    if draw == 'cuda_float16' and device is not None and torch.device(device).type != 'cuda':
        raise ValueError(
            f"noise_draw='cuda_float16' (the released iSeg's noise, drawn by CUDA's generator) "
            f'needs the engine on a CUDA device, this one is on {device}: run on a GPU (the '
            "tools' --device cuda, init_model(..., device='cuda')), or draw the noise on the "
            "CPU (the generator's noise_draw='cpu', the default; a config's "
            "model.generator.noise_draw)")


def shared_noise(noise: Union[int, torch.Tensor], latents: torch.Tensor,
                 draw: str = 'cpu') -> torch.Tensor:
    """The noise of ``latents`` ``(B, 4, h, w)``: a tensor ``noise`` as it is (``(4, h, w)`` or
    ``(1, 4, h, w)``: one for every sample; ``(B, 4, h, w)``: one per sample), else one noise for
    every sample, seeded with ``noise`` and drawn by a CPU generator in float32 (``draw='cpu'``:
    the same on every device) or, as iSeg's release does (``torch.cuda.manual_seed(seed)``, then
    ``randn_like`` of its float16 ``(1, 4, 64, 64)`` latents), by a CUDA generator in float16
    (``'cuda_float16'``: Philox, the same on every CUDA GPU)."""
    if isinstance(noise, torch.Tensor):
        one = tuple(latents.shape[1:])
        if tuple(noise.shape) not in (one, (1, *one), tuple(latents.shape)):
            per_image = (f' or {tuple(latents.shape)} (one per image)'
                         if latents.shape[0] > 1 else '')   # (at batch 1: the same shape)
            raise ValueError(f'noise shape {tuple(noise.shape)} does not match the latents '
                             f'{tuple(latents.shape)}: pass a noise of shape {one} or '
                             f'{(1, *one)} (one for every image){per_image}')
        return noise.to(latents.device, latents.dtype).expand_as(latents)
    if draw == 'cuda_float16':
        generator = torch.Generator(latents.device).manual_seed(int(noise))
        eps = torch.randn((1, *latents.shape[1:]), generator=generator, device=latents.device,
                          dtype=torch.float16)
        return eps.to(latents.dtype).expand_as(latents)
    eps = torch.randn(latents.shape[1:], generator=torch.Generator().manual_seed(int(noise)))
    return host_to_device(eps, latents.device, latents.dtype).expand_as(latents)
