"""The transformer attention layers of a diffusers U-Net, in forward order, with their token grids.

Layer resolutions follow the U-Net layout (ALGORITHMS.md 0): ``down_blocks.i`` -> latent / 2**i,
``mid_block`` -> the lowest resolution, ``up_blocks.j`` mirrored. The module list is found once
per U-Net and kept (:func:`attention_modules`): every capture session needs it.
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import torch

_LAYER_NAME = re.compile(
    r'^(?:(?P<group>down_blocks|up_blocks)\.(?P<block>\d+)|mid_block)\.attentions\.(?P<attn>\d+)'
    r'\.transformer_blocks\.(?P<tblock>\d+)\.(?P<which>attn1|attn2)$')
_GROUP_RANK = {'down_blocks': 0, None: 1, 'up_blocks': 2}


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module of the U-Net: its name, kind, token-grid side and head count."""

    name: str
    kind: str
    resolution: int
    heads: int


#: per U-Net, its transformer attention modules in forward order: ``(sort key, name, module)``
_ATTENTION_MODULES: 'weakref.WeakKeyDictionary' = weakref.WeakKeyDictionary()


def attention_modules(unet) -> List[Tuple[tuple, str, torch.nn.Module]]:
    """The U-Net's transformer attention modules in forward order. Walking a full-size U-Net's
    ~1000 modules (and diffusers' ``attn_processors`` / ``set_attn_processor``) took ~15 ms of CPU
    per capture session, which a GPU waits for at every batch; the list is kept per U-Net and
    found again when one of its modules is no longer where it was. A U-Net wrapped by
    ``torch.compile(unet)`` is read through the wrapper (its modules keep their names)."""
    unet = bare_module(unet)
    cached = _ATTENTION_MODULES.get(unet)
    if cached is not None and all(_submodule(unet, name) is module for _, name, module in cached):
        return cached
    found = []
    for name, module in unet.named_modules():
        match = _LAYER_NAME.match(name)
        if match is None or not hasattr(module, 'set_processor'):
            continue
        sort_key = (_GROUP_RANK[match['group']], int(match['block'] or 0), int(match['attn']),
                    int(match['tblock']), match['which'])
        found.append((sort_key, name, module))
    found.sort(key=lambda item: item[0])
    _ATTENTION_MODULES[unet] = found
    return found


def bare_module(module: torch.nn.Module) -> torch.nn.Module:
    """``module``, or the module that ``torch.compile(module)`` wrapped."""
    return getattr(module, '_orig_mod', module)


def compiled(module: torch.nn.Module) -> bool:
    """Whether ``module`` runs traced: wrapped by ``torch.compile`` or after ``module.compile()``."""
    return module is not bare_module(module) or \
        getattr(module, '_compiled_call_impl', None) is not None


def _submodule(root: torch.nn.Module, name: str) -> Optional[torch.nn.Module]:
    """``root.get_submodule(name)`` or None, through the ``_modules`` dicts: ~20x faster than its
    ``getattr`` chain on a diffusers model (``benchmarks/results/capture_setup.md``)."""
    for part in name.split('.'):
        root = root._modules.get(part)
        if root is None:
            return None
    return root


def unet_attention_layers(unet, latent_size: int) -> List[AttentionLayer]:
    """The U-Net's transformer attention layers in forward order, for a square latent of side
    ``latent_size``.

    Raises:
        ValueError: ``latent_size`` is not divisible by the U-Net's total downsampling.
    """
    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    factor = 2 ** (n_down - 1)
    if latent_size % factor:
        raise ValueError(f'latent size {latent_size} is not divisible by {factor} (the U-Net halves '
                         f'it {n_down - 1} times): use an image size that is a multiple of '
                         f'{factor * 8}')
    layers = []
    for (rank, block, _, _, which), name, module in attention_modules(unet):
        level = (block, n_down - 1, n_up - 1 - block)[rank]
        layers.append(AttentionLayer(name, 'self' if which == 'attn1' else 'cross',
                                     latent_size // 2 ** level, module.heads))
    return layers


def check_capture_on_config(sd_folder: Union[str, Path], capture, image_size: int = 512) -> None:
    """:meth:`DiffusionAttentionEngine.check_capture` against the full-size U-Net of a diffusers
    folder's ``unet/config.json`` (weights need not be there), built on the ``meta`` device
    (layers and head counts, no weights, no memory: milliseconds).

    Raises:
        ValueError: as the engine's check, naming the request and what the U-Net offers.
        OSError: the config cannot be read, or diffusers builds no U-Net from it (its own
            ``ValueError``s too: they are no fault of the capture).
    """
    from diffusers import UNet2DConditionModel

    from .capture import CaptureSession
    from .maps import as_capture_spec
    config = Path(sd_folder) / 'unet'
    try:
        with torch.device('meta'):
            unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config))
    except (ValueError, TypeError, KeyError) as err:
        raise OSError(f'{config / "config.json"}: diffusers builds no U-Net from it '
                      f'({type(err).__name__}: {err})') from err
    CaptureSession(as_capture_spec(capture), unet_attention_layers(unet, image_size // 8),
                   batch_size=1)


#: diffusers' processors of plain attention (softmax(QK^T/sqrt(d)) V: whole, in head slices,
#: or from fused QKV weights, whose to_q / to_k / to_v stay), which a captured step's SDPA call
#: reproduces; any other (an IP-Adapter's, an attention edit's) computes something else
PLAIN_PROCESSORS = ('AttnProcessor', 'AttnProcessor2_0', 'XFormersAttnProcessor',
                    'SlicedAttnProcessor', 'FusedAttnProcessor2_0')


def replaceable_processor(name: str, processor) -> None:
    """Raise a ``ValueError`` naming the fix for a processor a capture must not replace: another
    session's (an inner session leaves the outer one's maps short) or one of no plain attention."""
    from .capture import CaptureProcessor  # (it imports this module)
    from diffusers.models import attention_processor
    if isinstance(processor, CaptureProcessor):
        raise ValueError(f'{name} is captured by another capture_attention session already; '
                         'capture once, with merge_specs([outer, inner])')
    # the classes themselves: a user's subclass or namesake may compute something else
    if not any(type(processor) is getattr(attention_processor, plain, None)
               for plain in PLAIN_PROCESSORS):
        kind = type(processor).__name__
        if not type(processor).__module__.startswith('diffusers.'):
            kind = f'{type(processor).__module__}.{kind}'
        raise ValueError(f'{name} runs {kind}, not plain attention: a captured step would run '
                         'plain SDPA there (another U-Net output, maps of another computation); '
                         'capture a U-Net with its default processors '
                         '(unet.set_default_attn_processor())')
