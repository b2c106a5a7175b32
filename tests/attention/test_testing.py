"""Tiny random-weights pipelines: real configs and tokenizers, shrunk, saved as diffusers folders."""
import json

import pytest
import torch

from mmdiffseg.attention.testing import build_tiny_pipeline_folder, cached_tiny_pipeline_folder


@pytest.mark.parametrize('name, heads', [('stable-diffusion-v1-4', 8),
                                         ('stable-diffusion-2-1-base', [1, 2, 4, 4])])
def test_tiny_folder_keeps_topology_and_head_layout(sd_config_dir, name, heads):
    folder = cached_tiny_pipeline_folder(sd_config_dir(name))
    assert cached_tiny_pipeline_folder(sd_config_dir(name)) == folder  # built once per process
    for part in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        assert (folder / part).is_dir()
    index = json.loads((folder / 'model_index.json').read_text())
    assert index['_class_name'] == 'StableDiffusionPipeline' and index['safety_checker'] == [None, None]
    unet = json.loads((folder / 'unet' / 'config.json').read_text())
    real = json.loads((sd_config_dir(name) / 'unet' / 'config.json').read_text())
    assert unet['attention_head_dim'] == heads
    for key in ('down_block_types', 'up_block_types', 'layers_per_block', 'use_linear_projection'):
        assert unet[key] == real[key]
    assert unet['cross_attention_dim'] == json.loads(
        (folder / 'text_encoder' / 'config.json').read_text())['hidden_size'] == 32


def test_same_seed_same_weights(sd_config_dir, tmp_path):
    from diffusers import AutoencoderKL
    src = sd_config_dir('stable-diffusion-v1-4')
    state = torch.get_rng_state()
    a = build_tiny_pipeline_folder(src, tmp_path / 'a', seed=3)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left alone
    cached = cached_tiny_pipeline_folder(src, seed=3)
    wa = AutoencoderKL.from_pretrained(a / 'vae').encoder.conv_in.weight
    wb = AutoencoderKL.from_pretrained(cached / 'vae').encoder.conv_in.weight
    torch.testing.assert_close(wa, wb)


def test_missing_config_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match='model_index.json'):
        build_tiny_pipeline_folder(tmp_path / 'nothing', tmp_path / 'out')
