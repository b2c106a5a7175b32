"""A single-file checkpoint (original Stable Diffusion layout) given as the model: every entry
point names it and gives the conversion into a diffusers folder, and that conversion, run as the
message writes it (offline, ``config`` = the tiny model's configs), gives the same weights."""
import os
import re
import subprocess
import sys

import pytest
import torch

from mmdiffseg import preflight
from mmdiffseg.apis.builders import check_model
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.attention import DiffusionAttentionEngine
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder

#: diffusers ResNet block names -> the original layout's
RESNET = (('norm1', 'in_layers.0'), ('conv1', 'in_layers.2'), ('time_emb_proj', 'emb_layers.1'),
          ('norm2', 'out_layers.0'), ('conv2', 'out_layers.3'), ('conv_shortcut', 'skip_connection'))
UNET_TOP = {'time_embedding.linear_1': 'time_embed.0', 'time_embedding.linear_2': 'time_embed.2',
            'conv_in': 'input_blocks.0.0', 'conv_norm_out': 'out.0', 'conv_out': 'out.2'}
VAE_ATTENTION = {'group_norm': 'norm', 'to_q': 'q', 'to_k': 'k', 'to_v': 'v', 'to_out.0': 'proj_out'}


def _resnet(rest):
    for new, old in RESNET:
        if rest.startswith(new + '.'):
            return old + rest[len(new):]
    return rest


def original_unet_key(key, config):
    """The original (LDM) name of a diffusers U-Net weight: input/middle/output blocks numbered
    ``1 + level * (layers + 1) + layer`` (input) and ``level * (layers + 1) + layer`` (output)."""
    per_level = config.layers_per_block + 1
    for new, old in UNET_TOP.items():
        if key.startswith(new + '.'):
            return old + key[len(new):]
    if m := re.fullmatch(r'(down|up)_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)', key):
        side, level, kind, layer, rest = m[1], int(m[2]), m[3], int(m[4]), m[5]
        index = (1 if side == 'down' else 0) + level * per_level + layer
        block = 'input_blocks' if side == 'down' else 'output_blocks'
        return f'{block}.{index}.0.{_resnet(rest)}' if kind == 'resnets' else \
            f'{block}.{index}.1.{rest}'
    if m := re.fullmatch(r'down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)', key):
        return f'input_blocks.{(int(m[1]) + 1) * per_level}.0.op.{m[2]}'
    if m := re.fullmatch(r'up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)', key):
        level = int(m[1])
        after = 2 if 'CrossAttn' in config.up_block_types[level] else 1
        return f'output_blocks.{level * per_level + per_level - 1}.{after}.conv.{m[2]}'
    m = re.fullmatch(r'mid_block\.(resnets|attentions)\.(\d+)\.(.*)', key)
    if m is None:
        raise KeyError(f'no original name for U-Net weight {key}')
    if m[1] == 'attentions':
        return f'middle_block.1.{m[3]}'
    return f'middle_block.{2 * int(m[2])}.{_resnet(m[3])}'


def original_vae_item(key, value, levels):
    """The original name (and shape: 1x1 convolutions in its mid attention) of a VAE weight;
    the decoder's levels count from the bottom there."""
    key = key.replace('conv_norm_out', 'norm_out').replace('conv_shortcut', 'nin_shortcut')
    if m := re.fullmatch(r'(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets\.(\d+)|\w+\.0)\.(.*)',
                         key):
        part, side, level = m[1], m[2], int(m[3])
        level = level if side == 'down' else levels - 1 - level
        what = f'block.{m[5]}' if m[5] is not None else f'{side}sample'
        return f'{part}.{side}.{level}.{what}.{m[6]}', value
    if m := re.fullmatch(r'(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)', key):
        return f'{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}', value
    if m := re.fullmatch(r'(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)', key):
        return (f'{m[1]}.mid.attn_1.{VAE_ATTENTION[m[2]]}.{m[3]}',
                value[:, :, None, None] if value.dim() == 2 else value)
    return key, value


def write_original_checkpoint(folder, path):
    """The diffusers SD 1.x pipeline ``folder`` as one safetensors file in the original layout."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None,
                                                   requires_safety_checker=False)
    weights = {f'model.diffusion_model.{original_unet_key(k, pipe.unet.config)}': v
               for k, v in pipe.unet.state_dict().items()}
    levels = len(pipe.vae.config.block_out_channels)
    for key, value in pipe.vae.state_dict().items():
        key, value = original_vae_item(key, value, levels)
        weights[f'first_stage_model.{key}'] = value
    for key, value in pipe.text_encoder.state_dict().items():  # transformers 5.6+: no text_model.
        key = key if key.startswith('text_model.') else f'text_model.{key}'
        weights[f'cond_stage_model.transformer.{key}'] = value
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return pipe


def test_a_single_file_checkpoint_is_named_with_its_conversion(sd_config_dir, tmp_path):
    folder = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-v1-4'))
    checkpoint = tmp_path / 'repo' / 'sd-tiny.safetensors'
    checkpoint.parent.mkdir()
    pipe = write_original_checkpoint(folder, checkpoint)
    for given in (str(checkpoint), str(checkpoint.parent)):  # the file, or its repository folder
        with pytest.raises(OSError) as loaded:
            DiffusionAttentionEngine.from_pretrained(given)
        with pytest.raises(UserInputError) as checked:
            check_model(given)
        [missing] = preflight.check_sd_model(given, ['model.labeler.model'])
        for message in (str(loaded.value), str(checked.value), f'{missing.what} {missing.fix}'):
            assert f'{checkpoint} is a single-file checkpoint' in message
            assert 'does not exist' not in message and 'hf download' not in message
        assert missing.fix.endswith('(--cfg-options model.labeler.model=FOLDER)')

    # the conversion as the message writes it, offline, with the model's configs as BASE
    command = re.search(r'python -c "(.*?)"', str(loaded.value))[1]
    out = tmp_path / 'converted'
    command = command.replace("'BASE'", repr(str(folder))).replace("'FOLDER'", repr(str(out)))
    subprocess.run([sys.executable, '-c', command], check=True, capture_output=True,
                   env=dict(os.environ, HF_HUB_OFFLINE='1'))
    engine = DiffusionAttentionEngine.from_pretrained(out)
    for name in ('unet', 'vae', 'text_encoder'):
        expected, found = getattr(pipe, name).state_dict(), getattr(engine, name).state_dict()
        assert expected.keys() == found.keys(), name
        assert all(torch.equal(expected[k], found[k]) for k in expected), name
