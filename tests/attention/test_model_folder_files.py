"""folder_problems and config_problems on hand-made folders of empty files and configs: what
diffusers loads or leaves to its own error passes; each thing missing is named once."""
import json

import pytest

from mmdiffseg.attention.model_check import config_problems, folder_problems

UNET = dict(in_channels=4, cross_attention_dim=32)
WEIGHTS = {'unet': 'diffusion_pytorch_model.safetensors',
           'vae': 'diffusion_pytorch_model.safetensors', 'text_encoder': 'model.safetensors'}
ALL = 'a Stable Diffusion folder has unet, vae, text_encoder, tokenizer, scheduler'


def _folder(root, weights=None, tokenizer=('tokenizer.json',), skip=()):
    """A diffusers folder of configs and empty weight / tokenizer files."""
    (root / 'model_index.json').write_text(json.dumps({'_class_name': 'StableDiffusionPipeline'}))
    configs = dict(unet=UNET, vae=dict(latent_channels=4), text_encoder=dict(hidden_size=32))
    for component in ('unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'):
        if component in skip:
            continue
        (root / component).mkdir()
        if component in configs:
            (root / component / 'config.json').write_text(json.dumps(configs[component]))
        names = tokenizer if component == 'tokenizer' else (weights or WEIGHTS).get(component, ())
        for name in [names] if isinstance(names, str) else names:
            (root / component / name).write_bytes(b'')
    return root


def test_a_complete_folder_has_no_problem(tmp_path):
    assert folder_problems(_folder(tmp_path)) == []


def test_bin_weights_and_a_vocab_json_tokenizer_are_read(tmp_path):
    """``.bin`` weights and a slow tokenizer's ``vocab.json`` (+ ``merges.txt``) load too."""
    weights = dict(WEIGHTS, unet='diffusion_pytorch_model.bin')
    folder = _folder(tmp_path, weights, tokenizer=('vocab.json', 'merges.txt'))
    assert folder_problems(folder) == []


@pytest.mark.parametrize('component', ['vae', 'tokenizer', 'scheduler'])
def test_a_missing_component_is_named_once(tmp_path, component):
    assert folder_problems(_folder(tmp_path, skip=(component,))) == [
        f'it has no {component}/ ({ALL})']


def test_a_component_without_weights(tmp_path):
    weights = dict(WEIGHTS, vae=('config.txt',))
    assert folder_problems(_folder(tmp_path, weights)) == [
        'vae/ has no weights (*.safetensors or *.bin)']


def test_variant_only_weights_name_their_variant_in_every_fix(tmp_path):
    weights = dict(WEIGHTS, text_encoder=('model.bf16.safetensors', 'README.md'))
    [problem] = folder_problems(_folder(tmp_path, weights))
    assert problem.startswith("text_encoder/ holds only bf16-variant weights "
                              "(model.bf16.safetensors): load with variant='bf16' "
                              "(tools: --variant bf16; Python: from_pretrained(..., "
                              "variant='bf16'); configs: "
                              'model.data_preprocessor.engine_kwargs.variant=bf16)')
    assert folder_problems(tmp_path, variant='bf16') == []
    # a variant no component has: diffusers refuses the folder, named once
    assert folder_problems(tmp_path, variant='fp16') == [
        "no component (unet/, vae/, text_encoder/) has variant 'fp16' weights (found: bf16, "
        'plain): drop the variant (tools: leave out --variant; Python: from_pretrained(..., '
        'variant=None); configs: model.data_preprocessor.engine_kwargs.variant=None)']
    # one component has it: diffusers takes the others' plain weights, where they have them
    (tmp_path / 'unet' / 'diffusion_pytorch_model.fp16.safetensors').write_bytes(b'')
    assert folder_problems(tmp_path, variant='fp16') == [
        "text_encoder/ has no weights of variant 'fp16' (found: ['model.bf16.safetensors'])"]
    (tmp_path / 'text_encoder' / 'model.safetensors').write_bytes(b'')
    assert folder_problems(tmp_path, variant='fp16') == []


def test_broken_configs_are_left_to_diffusers_error(tmp_path):
    """Unreadable JSON is not this check's to report (diffusers names the file): no crash."""
    folder = _folder(tmp_path)
    (folder / 'model_index.json').write_text('{')
    (folder / 'unet' / 'config.json').write_text('not json')
    assert folder_problems(folder) == []


def test_configs_without_a_field_or_with_per_block_widths_pass():
    """A missing ``latent_channels`` / ``in_channels`` is not a mismatch; a per-block list of
    cross-attention widths is not compared with the text width."""
    assert config_problems({'in_channels': 4}, {}, {}) == []
    assert config_problems({}, {'latent_channels': 4}, {}) == []
    assert config_problems({'cross_attention_dim': [32, 32, 32, 32]}, {},
                           {'hidden_size': 32}) == []
    assert config_problems({'addition_embed_type': None, 'in_channels': 4},
                           {'latent_channels': 4}, {}) == []
    [problem] = config_problems({'cross_attention_dim': 64}, {}, {'hidden_size': 32})
    assert problem == ('the U-Net cross-attends to 64-wide text but the text encoder makes '
                       '32-wide embeddings: the two come from different models')


def test_an_xl_pipeline_class_is_refused_without_a_second_text_encoder(tmp_path):
    folder = _folder(tmp_path)
    index = {'_class_name': 'StableDiffusionXLPipeline'}
    (folder / 'model_index.json').write_text(json.dumps(index))
    [problem] = folder_problems(folder)
    assert problem.startswith('it is an SDXL model (StableDiffusionXLPipeline: two text encoders)')


def test_a_folder_of_configs_without_any_weights_names_how_to_make_some(tmp_path):
    """The workspace's sd_configs folders (configs + tokenizer, no weights) passed as the model:
    one problem naming the two ways out, not three bare 'has no weights'."""
    folder = _folder(tmp_path, weights={'unet': (), 'vae': (), 'text_encoder': ()})
    assert folder_problems(folder) == [
        'it holds configs but no weights (unet/, vae/, text_encoder/: no *.safetensors or *.bin): '
        "pass a folder with the weights (a download, or a pipeline's save_pretrained), or, for "
        'random weights of this architecture (a smoke run), make one: python '
        f'tools/build_tiny_sd.py {folder} --out DIR']
