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


def _weights(folder: Path, component: str) -> List[str]:
    """The weight file names of ``folder``'s ``component``, sorted."""
    return sorted(f.name for f in (folder / component).iterdir() if f.suffix in WEIGHT_SUFFIXES)


def holds_every_weight_file(folder: Path) -> bool:
    """Whether every weighted component of ``folder`` has weight files (of some variant): else
    a download was cut short."""
    return all((folder / c).is_dir() and _weights(folder, c) for c in WEIGHTED)


def _variant_problem(weights: Dict[str, List[str]], variant: Optional[str]) -> Optional[str]:
    """The ``variant`` asked for where no component of ``weights`` (file names by component)
    has it but plain weights are there: diffusers then refuses the folder ("no such modeling
    files are available") rather than take them."""
    found = {weights_variant(name) for names in weights.values() for name in names}
    if variant is None or variant in found or None not in found:
        return None
    names = sorted('plain' if v is None else v for v in found)
    return (f"no component ({', '.join(c + '/' for c in weights)}) has variant {variant!r} "
            f'weights (found: {", ".join(names)}): drop the variant {_variant_setting(None)}')


def _variant_setting(variant: Optional[str]) -> str:
    """Where each entry point takes the weights ``variant`` (None: the plain weights)."""
    tools = f'--variant {variant}' if variant else 'leave out --variant'
    return (f'(tools: {tools}; Python: from_pretrained(..., variant={variant!r}); configs: '
            f'model.data_preprocessor.engine_kwargs.variant={variant})')


def _weights_problems(folder: Path, weights: Dict[str, List[str]],
                      variant: Optional[str]) -> List[str]:
    """Components of ``weights`` (file names by component) without weights diffusers would
    load for ``variant``; those holding only another variant's, named together with one fix."""
    problems, only = [], {}
    for component, files in weights.items():
        variants = tuple(sorted({weights_variant(name) for name in files} - {None}))
        plain = [name for name in files if weights_variant(name) is None]
        # where another component has the variant's weights, diffusers takes this one's plain
        if plain or variant in variants:
            continue
        if variant is not None:
            problems.append(f"{component}/ has no weights of variant {variant!r} (found: "
                            f"{files or 'none'})")
        elif variants:
            only.setdefault(variants, []).append((component, files[0]))
        else:
            problems.append(f'{component}/ has no weights (*.safetensors or *.bin)')
    for variants, found in only.items():
        names = ', '.join(component + '/' for component, _ in found)
        problems.append(
            f'{names} {"holds" if len(found) == 1 else "hold"} only {"/".join(variants)}-variant '
            f'weights ({found[0][1]}): load with variant={variants[0]!r} '
            f'{_variant_setting(variants[0])}, or save a plain copy once: python -c "from '
            "diffusers import StableDiffusionPipeline as P; P.from_pretrained("
            f"'{folder}', variant='{variants[0]}').save_pretrained('FOLDER')\" and pass FOLDER")
    return problems


def folder_problems(folder: Path, variant: Optional[str] = None) -> List[str]:
    """What keeps the diffusers ``folder`` (it has a ``model_index.json``) from running in the
    engine: an SDXL or other pipeline, a missing component or tokenizer, weights only of a
    variant not asked for, a variant asked for that no component has, configs that do not fit
    (:func:`config_problems`)."""
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
    weights = {c: _weights(folder, c) for c in WEIGHTED if c not in missing}
    if weights and not any(weights.values()):  # configs alone (a tokenizer + configs download)
        problems.append(
            f'it holds configs but no weights ({", ".join(c + "/" for c in weights)}: no '
            '*.safetensors or *.bin): pass a folder with the weights (a download, or a '
            "pipeline's save_pretrained), or, for random weights of this architecture (a smoke "
            f'run), make one: python tools/build_tiny_sd.py {folder} --out DIR')
    else:
        lacking = _variant_problem(weights, variant)
        problems += [lacking] if lacking else []
        problems += _weights_problems(
            folder, {c: files for c, files in weights.items() if not (lacking and files)},
            variant)
    configs = {c: _json(folder / c / 'config.json') or {} for c in WEIGHTED}
    return problems + config_problems(configs['unet'], configs['vae'], configs['text_encoder'])
