"""Random-weights Stable Diffusion pipelines built from the real configs and tokenizers.

No weights can be downloaded on the development machines, so tests, smoke runs and cost benchmarks
use pipelines whose components come from the real ``model_index.json`` / ``unet`` / ``vae`` /
``text_encoder`` / ``scheduler`` configs and the real CLIP tokenizer (``../shared/data/sd_configs``),
with random weights. :func:`build_tiny_pipeline_folder` saves them with ``save_pretrained`` so
``DiffusionAttentionEngine.from_pretrained(folder)`` runs exactly as with real weights.

The tiny variant keeps the U-Net's topology (4 blocks, 2 layers per block, 16 transformer blocks,
latent = image / 8) and its head layout (SD 1.x: 8 heads everywhere; SD 2.x: a different head count
per level, like ``attention_head_dim=[5, 10, 20, 20]``), and shrinks channels and the text encoder.
"""
from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Union

import torch

TINY_UNET_CHANNELS = (32, 32, 64, 64)
TINY_UNET_GROUPS = 8
TINY_SD2_HEADS = (1, 2, 4, 4)
TINY_VAE_CHANNELS = (8, 8, 16, 16)
TINY_VAE_GROUPS = 4
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                 projection_dim=32)


def shared_data_dir() -> Path:
    """The workspace's sample data (``sd_configs``, the VOC / ADE20K / Cityscapes samples):
    ``$MMDIFFSEG_SHARED_DATA``, else ``../shared/data`` beside this checkout (where the GPU
    machine's ``.devkit/setup.sh`` lays the carried copy)."""
    default = Path(__file__).resolve().parents[3] / 'shared' / 'data'
    return Path(os.environ.get('MMDIFFSEG_SHARED_DATA', default))


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f'{path} not found: expected a diffusers Stable Diffusion folder '
                                '(model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)')
    return json.loads(path.read_text())


def _unet_config(config: dict, full_size: bool, text_dim: int) -> dict:
    if full_size:
        return config
    config = dict(config, block_out_channels=list(TINY_UNET_CHANNELS),
                  norm_num_groups=TINY_UNET_GROUPS, cross_attention_dim=text_dim)
    if isinstance(config.get('attention_head_dim'), (list, tuple)):
        # SD 2.x: "attention_head_dim" is really the number of heads per level
        config['attention_head_dim'] = list(TINY_SD2_HEADS)
    return config


def _vae_config(config: dict, full_size: bool) -> dict:
    if full_size:
        return config
    return dict(config, block_out_channels=list(TINY_VAE_CHANNELS), norm_num_groups=TINY_VAE_GROUPS,
                layers_per_block=1)


def random_pipeline(sd_config_dir: Union[str, Path], *, full_size: bool = False, seed: int = 0,
                    device: Union[str, torch.device] = 'cpu'):
    """A random-weights Stable Diffusion ``StableDiffusionPipeline`` built in memory.

    Args:
        sd_config_dir: a diffusers SD 1.x / 2.x folder holding at least the configs and the tokenizer,
            e.g. ``../shared/data/sd_configs/stable-diffusion-2-1-base``.
        full_size: keep the real sizes (cost and memory work) instead of the tiny test sizes.
        seed: seed of the random weights (the global torch RNG is left untouched).
        device: where the weights are created (``'cuda'`` initialises a full-size model in
            seconds; the values then come from the CUDA generator).
    """
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
    import diffusers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    src = Path(sd_config_dir)
    _read_json(src / 'model_index.json')
    text_config = CLIPTextConfig.from_pretrained(src / 'text_encoder')
    if not full_size:
        for key, value in TINY_TEXT.items():
            setattr(text_config, key, value)
    scheduler_config = _read_json(src / 'scheduler' / 'scheduler_config.json')
    scheduler_cls = getattr(diffusers, scheduler_config['_class_name'])
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []), device:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel.from_config(
            _unet_config(_read_json(src / 'unet' / 'config.json'), full_size, text_config.hidden_size))
        vae = AutoencoderKL.from_config(_vae_config(_read_json(src / 'vae' / 'config.json'), full_size))
        text_encoder = CLIPTextModel(text_config)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer.from_pretrained(src / 'tokenizer'),
        unet=unet, scheduler=scheduler_cls.from_config(scheduler_config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


def build_tiny_pipeline_folder(sd_config_dir: Union[str, Path], out_dir: Union[str, Path], *,
                               full_size: bool = False, seed: int = 0) -> Path:
    """:func:`random_pipeline` saved as a diffusers folder ``out_dir`` (created); returns
    ``out_dir`` as a :class:`~pathlib.Path`, loadable with ``StableDiffusionPipeline.from_pretrained``.
    """
    out_dir = Path(out_dir)
    pipe = random_pipeline(sd_config_dir, full_size=full_size, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir)
    return out_dir


@functools.lru_cache(maxsize=None)
def _cached_folder(src: str, full_size: bool, seed: int) -> Path:
    # a stable folder name gives a stable engine.model_id (name + config hash) across processes
    name = f'{"random" if full_size else "tiny"}-{Path(src).name}' + (f'-seed{seed}' if seed else '')
    parent = tempfile.mkdtemp(prefix='mmdiffseg-')
    atexit.register(shutil.rmtree, parent, ignore_errors=True)
    return build_tiny_pipeline_folder(src, Path(parent) / name, full_size=full_size, seed=seed)


def cached_tiny_pipeline_folder(sd_config_dir: Union[str, Path], *, full_size: bool = False,
                                seed: int = 0) -> Path:
    """:func:`build_tiny_pipeline_folder` into a temporary folder, once per process and arguments
    (removed when the process exits)."""
    return _cached_folder(str(Path(sd_config_dir).resolve()), bool(full_size), int(seed))


def tiny_engine(sd_config_dir: Union[str, Path], *, full_size: bool = False, seed: int = 0, **kwargs):
    """A :class:`~mmdiffseg.attention.DiffusionAttentionEngine` on the cached tiny pipeline."""
    from .engine import DiffusionAttentionEngine
    folder = cached_tiny_pipeline_folder(sd_config_dir, full_size=full_size, seed=seed)
    return DiffusionAttentionEngine.from_pretrained(folder, **kwargs)
