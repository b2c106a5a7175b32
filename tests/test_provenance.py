"""Model provenance by hand-made weights files: variant names and the weights fingerprint."""
import torch
from safetensors.torch import save_file

from mmdiffseg.provenance import _weights_fingerprint, weights_variant


def test_weights_variants_are_named_without_their_shard_numbers():
    assert weights_variant('diffusion_pytorch_model.safetensors') is None
    assert weights_variant('model-00001-of-00002.safetensors') is None
    assert weights_variant('diffusion_pytorch_model.fp16.safetensors') == 'fp16'
    assert weights_variant('model.fp16-00001-of-00002.safetensors') == 'fp16'


def fingerprint(folder, tensors, name='diffusion_pytorch_model.safetensors', metadata=None):
    """The U-Net fingerprint of a folder holding only ``tensors`` in the file ``name``."""
    (folder / 'unet').mkdir(parents=True)
    save_file(tensors, str(folder / 'unet' / name), metadata=metadata)
    return _weights_fingerprint(folder, 'unet')


def test_half_precision_weights_with_another_first_row_are_other_weights(tmp_path):
    for dtype in (torch.float16, torch.bfloat16):
        weights = torch.zeros(2, 3, dtype=dtype)
        tuned = weights.clone()
        tuned[0, 1] = 1
        assert fingerprint(tmp_path / f'a{dtype}', {'w': weights}) != \
            fingerprint(tmp_path / f'b{dtype}', {'w': tuned})


def test_weights_of_another_shape_with_the_same_first_row_are_other_weights(tmp_path):
    assert fingerprint(tmp_path / 'a', {'w': torch.ones(2, 3)}) != \
        fingerprint(tmp_path / 'b', {'w': torch.ones(4, 3)})


def test_a_variant_only_folder_is_fingerprinted_by_its_tensors_not_its_file_bytes(tmp_path):
    """Only ``*.fp16.safetensors`` weights: a copy whose tensors are named otherwise (and whose
    file metadata differs) is the same weights."""
    name = 'diffusion_pytorch_model.fp16.safetensors'
    row = torch.arange(3, dtype=torch.float16)
    assert fingerprint(tmp_path / 'a', {'w': row[None]}, name) == \
        fingerprint(tmp_path / 'b', {'renamed.w': row[None]}, name, metadata={'by': 'a copy'})


def test_pickled_weights_that_differ_in_their_last_mib_are_other_weights(tmp_path):
    """A ``.bin`` file is fingerprinted by its size, first and last MiB (not its tensors)."""
    size = 3 * 2 ** 20
    prints = []
    for last in (0, 1):
        data = bytearray(size)
        data[-1] = last
        (tmp_path / str(last) / 'vae').mkdir(parents=True)
        (tmp_path / str(last) / 'vae' / 'diffusion_pytorch_model.bin').write_bytes(bytes(data))
        prints.append(_weights_fingerprint(tmp_path / str(last), 'vae'))
    assert prints[0] != prints[1]
    assert _weights_fingerprint(tmp_path / '0', 'unet') is None


def test_the_recorded_hash_of_a_folder_is_stable(tmp_path):
    """Label caches record this hash: its recipe (the settings of each config file as sorted JSON,
    then each weights fingerprint, first 8 hex digits of the SHA-1) must not drift. A folder
    with none of the files: every setting null, every fingerprint None."""
    import hashlib
    from mmdiffseg.provenance import model_id_of
    folder = tmp_path / 'bare-sd'
    folder.mkdir()
    expected = hashlib.sha1(b'null\0' * 5 + b'None' * 3).hexdigest()[:8]
    assert model_id_of(folder) == f'bare-sd-{expected}'


def test_a_hub_model_is_hashed_once_its_index_and_unet_config_are_cached(tmp_path, monkeypatch):
    """The pipeline index alone in the Hugging Face cache (an interrupted download) gives no hash:
    the U-Net's config is needed too."""
    import huggingface_hub.constants
    from mmdiffseg.provenance import model_identity
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    repo = tmp_path / 'hub' / 'models--org--sd'
    snapshot = repo / 'snapshots' / 'abc123'
    (snapshot / 'unet').mkdir(parents=True)
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text('abc123')
    (snapshot / 'model_index.json').write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert model_identity('org/sd') == {'id': 'org/sd', 'config_hash': None}
    (snapshot / 'unet' / 'config.json').write_text('{"_class_name": "UNet2DConditionModel"}')
    identity = model_identity('org/sd')
    assert identity['id'] == 'org/sd' and len(identity['config_hash']) == 8


def test_a_local_folder_named_as_a_withdrawn_id_is_not_withdrawn(tmp_path, monkeypatch):
    from mmdiffseg.provenance import withdrawn_model
    hub_id = 'stabilityai/stable-diffusion-2-1-base'
    monkeypatch.chdir(tmp_path)
    assert 'was withdrawn' in withdrawn_model(hub_id, cache_dir=str(tmp_path / 'hub'))
    (tmp_path / hub_id).mkdir(parents=True)
    assert withdrawn_model(hub_id, cache_dir=str(tmp_path / 'hub')) is None


def test_models_compare_by_hash_when_both_are_known_else_by_id():
    """An older record (a plain id) and a hashed one of the same hub id are the same model."""
    from mmdiffseg.provenance import same_model
    hashed = {'id': 'org/sd', 'config_hash': 'abcd1234'}
    assert same_model(hashed, 'org/sd') and same_model({'id': 'org/sd', 'config_hash': None},
                                                       hashed)
    assert not same_model(hashed, 'org/other')
    assert not same_model(hashed, dict(hashed, config_hash='abcd1235'))
    assert same_model(hashed, {'id': 'copy-abcd1234', 'config_hash': 'abcd1234'})


def test_the_sampler_and_safety_checker_classes_leave_the_model_identity(tmp_path):
    """A fine-tune's copy with another sampler in scheduler/, or saved without its safety
    checker, has the same weights and gives the same maps: its hash differed (its resume and
    label cache were refused). A record made before (the hash with every component's class)
    still matches the same folder; another U-Net class does not."""
    import json
    from mmdiffseg.provenance import _settings, model_identity, same_model
    index = {'_class_name': 'StableDiffusionPipeline',
             'unet': ['diffusers', 'UNet2DConditionModel'], 'vae': ['diffusers', 'AutoencoderKL'],
             'text_encoder': ['transformers', 'CLIPTextModel'],
             'tokenizer': ['transformers', 'CLIPTokenizer'],
             'scheduler': ['diffusers', 'PNDMScheduler'],
             'safety_checker': ['stable_diffusion', 'StableDiffusionSafetyChecker'],
             'feature_extractor': ['transformers', 'CLIPImageProcessor']}
    variants = {'hub': index,
                'dpm': dict(index, scheduler=['diffusers', 'DPMSolverMultistepScheduler']),
                'bare': {k: v for k, v in index.items()
                         if k not in ('safety_checker', 'feature_extractor')},
                'other_unet': dict(index, unet=['diffusers', 'UNetSpatioTemporalConditionModel'])}
    identities = {}
    for name, content in variants.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / 'model_index.json').write_text(json.dumps(content))
        identities[name] = model_identity(tmp_path / name)
    assert identities['hub']['config_hash'] == identities['dpm']['config_hash'] == \
        identities['bare']['config_hash'] != identities['other_unet']['config_hash']
    assert same_model(identities['hub'], identities['dpm'])
    assert not same_model(identities['hub'], identities['other_unet'])
    before = {'id': 'hub-old', 'config_hash': identities['hub']['legacy_hash']}
    assert same_model(before, identities['hub']) and same_model(identities['hub'], before)
    assert not same_model(before, identities['dpm'])   # as before: the sampler differed then
    assert 'scheduler' in _settings('model_index.json', json.dumps(index), legacy=True)


def test_an_empty_nested_setting_differs_from_an_absent_one():
    from mmdiffseg.provenance import setting_differences
    found = {'model': 'org/sd', 'generator': {'type': 'ISeg', 'kwargs': {}}}
    assert list(setting_differences(found, {'model': 'org/sd', 'generator': {'type': 'ISeg'}})) \
        == [('generator.kwargs', {}, '<absent>')]
    assert list(setting_differences(found, found)) == []


def test_only_a_clip_text_encoder_takes_clips_defaults_for_absent_keys():
    import json
    from mmdiffseg.provenance import _settings
    clip = _settings('text_encoder/config.json', json.dumps(
        {'model_type': 'clip_text_model', 'hidden_size': 64}))
    other = _settings('text_encoder/config.json', json.dumps(
        {'model_type': 't5', 'hidden_size': 64}))
    assert clip['hidden_size'] == other['hidden_size'] == 64
    assert clip['vocab_size'] == 49408 and other['vocab_size'] is None


def test_a_folder_reached_through_dot_dot_is_named_by_its_own_name(tmp_path):
    from mmdiffseg.provenance import model_id_of
    (tmp_path / 'my-sd' / 'unet').mkdir(parents=True)
    assert model_id_of(tmp_path / 'my-sd' / 'unet' / '..') == model_id_of(tmp_path / 'my-sd')
    assert model_id_of(tmp_path / 'my-sd').startswith('my-sd-')


def test_the_pipeline_index_counts_each_components_class():
    """Of ``model_index.json``: the pipeline class and each present model component's class (not
    its library); absent components and bookkeeping drop out."""
    import json
    from mmdiffseg.provenance import _settings
    index = {'_class_name': 'StableDiffusionPipeline', '_diffusers_version': '0.30.0',
             'unet': ['diffusers', 'UNet2DConditionModel'], 'safety_checker': [None, None],
             'text_encoder': ['transformers', 'CLIPTextModel']}
    assert _settings('model_index.json', json.dumps(index)) == {
        '_class_name': 'StableDiffusionPipeline', 'unet': 'UNet2DConditionModel',
        'text_encoder': 'CLIPTextModel'}


def test_a_component_of_a_class_diffusers_lacks_keeps_all_its_settings():
    """No defaults are known for a custom component class (or none named): every setting but
    the bookkeeping counts."""
    import json
    from mmdiffseg.provenance import _settings
    config = {'_class_name': 'MyUNet', '_diffusers_version': '0.30.0', 'sample_size': 64}
    assert _settings('unet/config.json', json.dumps(config)) == {
        '_class_name': 'MyUNet', 'sample_size': 64}
    assert _settings('vae/config.json', '{"block_out_channels": [4]}') == {
        '_class_name': None, 'block_out_channels': [4]}


def test_a_config_file_that_is_no_json_object_is_hashed_as_its_text():
    """Not JSON, or JSON of another kind than an object: the text itself stands for it."""
    from mmdiffseg.provenance import _settings
    for text in ('not json {', '[1, 2]', '"unet"'):
        assert _settings('unet/config.json', text) == text


def test_the_sampler_of_a_folder_without_a_readable_scheduler_config_is_unknown(tmp_path):
    """No ``scheduler/scheduler_config.json``, or one that is not JSON: None, not an error; a
    readable one gives its class and the settings off the class's defaults."""
    from mmdiffseg.provenance import sampler_settings
    (tmp_path / 'scheduler').mkdir()
    assert sampler_settings(tmp_path) is None
    config = tmp_path / 'scheduler' / 'scheduler_config.json'
    config.write_text('{"_class_name": "DDIMScheduler", ')
    assert sampler_settings(tmp_path) is None
    config.write_text('{"_class_name": "DDIMScheduler", "beta_start": 0.00085, '
                      '"num_train_timesteps": 1000}')   # 1000: DDIMScheduler's default
    assert sampler_settings(tmp_path) == {'_class_name': 'DDIMScheduler', 'beta_start': 0.00085}
