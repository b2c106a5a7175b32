"""Whether a diffusers folder is a Stable Diffusion 1.x / 2.x text-to-image model the engine can
read, from its configs and file names alone (before any weight loads, and in pre-flight).

diffusers' ``StableDiffusionPipeline`` loads an inpainting or an SDXL folder, a folder without a
tokenizer (transformers 5 builds an empty one) or one whose U-Net cannot take its text encoder's
width without complaint; each then failed at the first U-Net call, mid-run, with a shape error.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from ..provenance import WEIGHTED, weights_variant

__all__ = ['config_problems', 'folder_problems']

#: the components every Stable Diffusion folder has
COMPONENTS = ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler')
WEIGHT_SUFFIXES = ('.safetensors', '.bin')
SUPPORTED = 'Stable Diffusion 1.x and 2.x text-to-image models (StableDiffusionPipeline folders)'


def config_problems(unet: Dict, vae: Dict, text_encoder: Dict) -> List[str]:
    """What in the U-Net, VAE and text-encoder configs the engine cannot run."""
    problems = []
    if unet.get('addition_embed_type'):
        problems.append(f"the U-Net takes added embeddings (addition_embed_type="
                        f"{unet['addition_embed_type']!r}, as SDXL's); mmdiffseg reads {SUPPORTED}")
    channels, latents = unet.get('in_channels'), vae.get('latent_channels')
    if channels is not None and latents is not None and channels != latents:
        problems.append(f'the U-Net takes {channels} input channels where the VAE makes {latents} '
                        '(an inpainting or depth-conditioned model); mmdiffseg reads '
                        f'{SUPPORTED}, whose U-Net takes the latents alone')
    width, text = unet.get('cross_attention_dim'), text_encoder.get('hidden_size')
    if isinstance(width, int) and isinstance(text, int) and width != text:
        problems.append(f'the U-Net cross-attends to {width}-wide text but the text encoder makes '
                        f'{text}-wide embeddings: the two come from different models')
    return problems


def _json(path: Path) -> Optional[Dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # missing or broken: diffusers' own error names the file


def _weights_problem(folder: Path, component: str, variant: Optional[str]) -> Optional[str]:
    files = sorted(f.name for f in (folder / component).iterdir() if f.suffix in WEIGHT_SUFFIXES)
    variants = sorted({weights_variant(name) for name in files} - {None})
    plain = [name for name in files if weights_variant(name) is None]
    if plain or variant in variants:  # diffusers takes the plain weights where the variant's lack
        return None
    if variant is not None:
        return f"{component}/ has no weights of variant {variant!r} (found: {files or 'none'})"
    if variants:
        return (f'{component}/ holds only {"/".join(variants)}-variant weights ({files[0]}): '
                f'load with variant={variants[0]!r} (tools: --variant {variants[0]}; Python: '
                f'from_pretrained(..., variant={variants[0]!r}); configs: '
                f'model.data_preprocessor.engine_kwargs.variant={variants[0]}), or save a plain '
                f"copy once: python -c \"from diffusers import "
                f"StableDiffusionPipeline as P; P.from_pretrained('{folder}', variant="
                f"'{variants[0]}').save_pretrained('FOLDER')\" and pass FOLDER")
    return f'{component}/ has no weights (*.safetensors or *.bin)'


def folder_problems(folder: Path, variant: Optional[str] = None) -> List[str]:
    """What keeps the diffusers ``folder`` (it has a ``model_index.json``) from running in the
    engine: an SDXL or other pipeline, a missing component or tokenizer, weights only of a
    variant not asked for, configs that do not fit (:func:`config_problems`)."""
    folder = Path(folder)
    index = _json(folder / 'model_index.json') or {}
    kind = index.get('_class_name', '?')
    if 'text_encoder_2' in index or 'XL' in kind:
        return [f'it is an SDXL model ({kind}: two text encoders); mmdiffseg reads {SUPPORTED}']
    missing = [c for c in COMPONENTS if not (folder / c).is_dir()]
    problems = [f'it has no {c}/ (a Stable Diffusion folder has {", ".join(COMPONENTS)})'
                for c in missing]
    tokenizer = folder / 'tokenizer'
    if tokenizer.is_dir() and not any((tokenizer / name).is_file()
                                      for name in ('vocab.json', 'tokenizer.json')):
        problems.append('its tokenizer/ has no vocab.json or tokenizer.json')
    problems += [problem for c in WEIGHTED if c not in missing
                 for problem in [_weights_problem(folder, c, variant)] if problem]
    configs = {c: _json(folder / c / 'config.json') or {} for c in WEIGHTED}
    return problems + config_problems(configs['unet'], configs['vae'], configs['text_encoder'])
