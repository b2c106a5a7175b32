"""Folders StableDiffusionPipeline loads but the engine cannot run (inpainting, SDXL, no tokenizer,
variant-only weights, a text encoder of another width) are refused before any weight loads, by
the engine, the tools and pre-flight, naming what is wrong and the fix."""
import json
import shutil

import pytest

from mmdiffseg.attention import DiffusionAttentionEngine
from mmdiffseg.attention.model_check import folder_problems
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder


def _edit(path, **changes):
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _fp16_only(folder):
    for weights in folder.glob('*/*.safetensors'):
        weights.rename(weights.with_name(weights.stem + '.fp16.safetensors'))


VARIANTS = {
    'inpainting': (lambda f: _edit(f / 'unet' / 'config.json', in_channels=9),
                   'the U-Net takes 9 input channels where the VAE makes 4 (an inpainting'),
    'sdxl': (lambda f: _edit(f / 'model_index.json', _class_name='StableDiffusionXLPipeline',
                             text_encoder_2=['transformers', 'CLIPTextModelWithProjection']),
             'it is an SDXL model (StableDiffusionXLPipeline: two text encoders)'),
    'second_text_encoder': (lambda f: _edit(f / 'model_index.json',
                                            text_encoder_2=['transformers', 'CLIPTextModel']),
                            'it is an SDXL model (StableDiffusionPipeline: two text encoders)'),
    'added_embeddings': (lambda f: _edit(f / 'unet' / 'config.json',
                                         addition_embed_type='text_time'),
                         "addition_embed_type='text_time'"),
    'text_width': (lambda f: _edit(f / 'unet' / 'config.json', cross_attention_dim=64),
                   'cross-attends to 64-wide text but the text encoder makes 32-wide'),
    'no_tokenizer': (lambda f: shutil.rmtree(f / 'tokenizer'), 'it has no tokenizer/'),
    'empty_tokenizer': (lambda f: [(f / 'tokenizer' / name).unlink(missing_ok=True)
                                   for name in ('vocab.json', 'tokenizer.json')],
                        'its tokenizer/ has no vocab.json or tokenizer.json'),  # 4.x saves both
    'fp16_only': (_fp16_only, "unet/, vae/, text_encoder/ hold only fp16-variant weights ("
                              "diffusion_pytorch_model."
                              "fp16.safetensors): load with variant='fp16'"),
}


@pytest.fixture
def variant(tmp_path, sd_config_dir):
    def make(name):
        folder = tmp_path / name
        shutil.copytree(cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-v1-4')), folder)
        VARIANTS[name][0](folder)
        return folder
    return make


@pytest.mark.parametrize('name', sorted(VARIANTS))
def test_the_engine_refuses_a_folder_it_cannot_run_before_loading(variant, name):
    folder = variant(name)
    assert any(VARIANTS[name][1] in problem for problem in folder_problems(folder))
    with pytest.raises(OSError, match=f'cannot read the Stable Diffusion folder .*{name}: '):
        DiffusionAttentionEngine.from_pretrained(folder)


def test_variant_weights_load_when_asked_for(variant):
    folder = variant('fp16_only')
    assert folder_problems(folder, variant='fp16') == []
    assert "no weights of variant 'bf16'" in folder_problems(folder, variant='bf16')[0]
    engine = DiffusionAttentionEngine.from_pretrained(folder, variant='fp16')
    assert engine.unet.config.in_channels == 4
    from mmdiffseg import preflight
    assert preflight.check_sd_model(str(folder), ['model.sd_model'], variant='fp16') == []
    for weights in (folder / 'vae').glob('*.fp16.safetensors'):  # diffusers falls back to plain
        weights.rename(weights.with_name(weights.name.replace('.fp16', '')))
    assert folder_problems(folder, variant='fp16') == []


def test_the_tools_and_preflight_name_the_problem(variant, sd_config_dir):
    from mmdiffseg import preflight
    from mmdiffseg.apis.builders import check_model
    from mmdiffseg.apis.io import UserInputError
    folder = variant('inpainting')
    with pytest.raises(UserInputError, match='takes 9 input channels'):
        check_model(str(folder))
    [missing] = preflight.check_sd_model(str(folder), ['model.sd_model'])
    assert 'takes 9 input channels' in missing.what and 'model.sd_model=' in missing.fix
    assert folder_problems(cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))) == []


def test_a_hub_id_the_engine_cannot_run_is_refused_once_loaded(
        tmp_path, sd_config_dir, monkeypatch):
    """A hub id's configs are known only once diffusers has loaded it: an inpainting model (a
    U-Net of 9 input channels, its own weights) from the local Hugging Face cache is refused
    then, naming the id and what is wrong."""
    import huggingface_hub.constants
    import torch
    from diffusers import UNet2DConditionModel
    snapshot = tmp_path / 'models--org--inpainting' / 'snapshots' / ('0' * 40)
    shutil.copytree(cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-v1-4')), snapshot)
    config = UNet2DConditionModel.load_config(snapshot / 'unet')
    with torch.random.fork_rng():
        UNet2DConditionModel.from_config(dict(config, in_channels=9)).save_pretrained(
            snapshot / 'unet')
    (snapshot.parents[1] / 'refs').mkdir()
    (snapshot.parents[1] / 'refs' / 'main').write_text('0' * 40)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(OSError, match=r"^cannot read Stable Diffusion model 'org/inpainting': the "
                                      r'U-Net takes 9 input channels where the VAE makes 4 '):
        DiffusionAttentionEngine.from_pretrained('org/inpainting', cache_dir=str(tmp_path))


def test_weights_that_do_not_fit_their_edited_config_are_named_as_the_folders_problem(
        tmp_path, sd_config_dir, monkeypatch):
    """A U-Net config edited after saving (use_linear_projection flipped): diffusers' RuntimeError
    ('size mismatch') escaped the tools' handling (a traceback, exit status 1, where bad input is
    a line and 2); so did a sampler's missing package (an ImportError)."""
    import json as json_module
    folder = tmp_path / 'edited'
    shutil.copytree(cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-v1-4')), folder)
    config = json_module.loads((folder / 'unet' / 'config.json').read_text())
    _edit(folder / 'unet' / 'config.json',
          use_linear_projection=not config.get('use_linear_projection', False))
    with pytest.raises(OSError, match=f'(?s)^cannot load the Stable Diffusion folder {folder}: '
                                      '.*size mismatch'):
        DiffusionAttentionEngine.from_pretrained(folder)
    from diffusers import StableDiffusionPipeline

    def needs_torchsde(*args, **kwargs):
        raise ImportError('DPMSolverSDEScheduler requires the torchsde library')
    monkeypatch.setattr(StableDiffusionPipeline, 'from_pretrained', needs_torchsde)
    with pytest.raises(OSError, match=f'^cannot load the Stable Diffusion folder {folder}: '
                                      'DPMSolverSDEScheduler requires the torchsde library'):
        DiffusionAttentionEngine.from_pretrained(folder)


def test_an_engine_on_a_loaded_pipeline_it_cannot_run_is_refused(sd_config_dir):
    """from_pipeline skipped the checks from_pretrained runs: an inpainting pipeline built an
    engine whose first extract failed deep in the U-Net ('expected input ... to have 9
    channels'), an SDXL one inside diffusers' added embeddings."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    pipe = StableDiffusionPipeline.from_pretrained(
        cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-v1-4')))
    with torch.random.fork_rng():
        pipe.unet = UNet2DConditionModel.from_config(dict(pipe.unet.config, in_channels=9))
    with pytest.raises(ValueError, match=r'^cannot build the engine on this '
                                         r'StableDiffusionPipeline: the U-Net takes 9 input '
                                         r'channels where the VAE makes 4 \(an inpainting'):
        DiffusionAttentionEngine.from_pipeline(pipe, 'inpainting')


@pytest.mark.parametrize('broken', ['empty', 'index_not_json'])
def test_a_folder_diffusers_cannot_load_is_named_with_its_error(tmp_path, sd_config_dir, broken):
    """An empty folder, or a model folder whose model_index.json is not JSON, is named as the
    folder (not sent to the Hub's explanations) with diffusers' words on what is wrong."""
    if broken == 'index_not_json':
        tmp_path = tmp_path / 'model'
        shutil.copytree(cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-v1-4')),
                        tmp_path)
        (tmp_path / 'model_index.json').write_text('{')
    with pytest.raises(OSError, match=f'^cannot load the Stable Diffusion folder {tmp_path}: .*'
                                      'model_index.json') as error:
        DiffusionAttentionEngine.from_pretrained(tmp_path)
    assert error.value.__cause__ is not None and 'Hub' not in str(error.value)
