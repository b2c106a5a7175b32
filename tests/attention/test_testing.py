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


def test_the_seed_alone_fixes_the_weights(sd_config_dir):
    """The weights depend on ``seed`` only, not on the global RNG's state at the call."""
    from mmdiffseg.attention.testing import random_pipeline
    src = sd_config_dir('stable-diffusion-v1-4')
    weights = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        weights.append(random_pipeline(src, seed=3).unet.conv_in.weight)
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=0)


def test_cached_folders_of_different_seeds_have_different_names(sd_config_dir):
    """The folder name enters the engine's model id: two seeds (different weights) must not
    share it."""
    src = sd_config_dir('stable-diffusion-v1-4')
    assert cached_tiny_pipeline_folder(src).name == 'tiny-stable-diffusion-v1-4'
    assert cached_tiny_pipeline_folder(src, seed=3).name == 'tiny-stable-diffusion-v1-4-seed3'


def test_tiny_engine_passes_its_options_on(sd_config_dir):
    """``tiny_engine(..., dtype=...)`` builds the engine in that dtype (tests of half-precision
    paths rely on it)."""
    from mmdiffseg.attention.testing import tiny_engine
    engine = tiny_engine(sd_config_dir('stable-diffusion-2-1-base'), dtype=torch.float16)
    assert engine.unet.dtype == torch.float16


def test_missing_config_folder_lists_the_expected_parts(tmp_path):
    with pytest.raises(FileNotFoundError, match=r'\(model_index\.json, unet/, vae/, '
                                                r'text_encoder/, tokenizer/, scheduler/\)'):
        build_tiny_pipeline_folder(tmp_path / 'nothing', tmp_path / 'out')


def test_full_size_keeps_the_real_configs(sd_config_dir):
    """``full_size=True`` (cost and memory work) builds the model of the real configs, unshrunk
    (on the meta device here: the configs without the weights' memory)."""
    from mmdiffseg.attention.testing import random_pipeline
    src = sd_config_dir('stable-diffusion-2-1-base')
    pipe = random_pipeline(src, full_size=True, device='meta')

    def real(part, name='config.json'):
        return json.loads((src / part / name).read_text())
    unet, vae = real('unet'), real('vae')
    for key in ('block_out_channels', 'attention_head_dim', 'cross_attention_dim',
                'norm_num_groups'):
        assert pipe.unet.config[key] == unet[key], key
    for key in ('block_out_channels', 'norm_num_groups', 'layers_per_block'):
        assert pipe.vae.config[key] == vae[key], key
    assert pipe.text_encoder.config.hidden_size == real('text_encoder')['hidden_size']
    assert pipe.unet.device.type == 'meta'
