"""What a cached label is the label of: its image and class names (the key), the model (configs
and weights, however the folder was saved) and the writer's precision (the signature)."""
import json
import shutil

import numpy as np
import pytest
import torch
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from sample_data import shared_path

import mmdiffseg.datasets  # noqa: F401 (registrations)
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.datasets import LabelCache
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.provenance import model_identity
from mmdiffseg.registry import MASK_GENERATORS

init_default_scope('mmseg')
VOC = shared_path('voc2012_val_samples')


@MASK_GENERATORS.register_module(force=True)
class SignatureOnlyGenerator(MaskGenerator):
    """Only its config matters here (cache signatures)."""

    def config_dict(self):
        return dict(classes=self.classes)


def cache_cfg(tmp_path, model='some/hub-model'):
    return dict(cache_dir=str(tmp_path / 'cache'), model=model,
                generator=dict(type='SignatureOnlyGenerator', classes=['background', 'cat']))


def load(tmp_path, names):
    """``LoadPseudoLabel``'s result for voc_val_0 listed with ``names`` in the label file."""
    ann = tmp_path / 'image_labels.json'
    ann.write_text(json.dumps({'voc_val_0': names}))
    pipeline = Compose([dict(type='LoadImageFromFile'),
                        dict(type='LoadImageLevelLabels', classes='voc', ann_file=str(ann)),
                        dict(type='LoadPseudoLabel', cache=cache_cfg(tmp_path))])
    return pipeline(dict(img_path=str(VOC / 'JPEGImages' / 'voc_val_0.png'),
                         reduce_zero_label=False, seg_fields=[]))


def test_a_changed_class_list_is_another_label(tmp_path):
    first = load(tmp_path, ['aeroplane'])
    label = np.ones(first['img'].shape[:2], np.uint8)
    LabelCache(**cache_cfg(tmp_path)).save(first['pseudo_label_key'], label)
    assert load(tmp_path, ['aeroplane'])['pseudo_label_cached'] is True
    for names in (['dog'], ['aeroplane', 'person'], ['person', 'aeroplane'], []):
        again = load(tmp_path, names)
        assert again['pseudo_label_cached'] is False, names
        assert again['pseudo_label_key'] != first['pseudo_label_key']


def test_a_label_key_is_stable_and_takes_the_names_in_their_order():
    """The key of an image and its names is the SHA-1 of the file bytes, a NUL and the JSON list
    of the names, as the caches on disk were filled (another byte layout would leave every cached
    label unfound under the same signature); the names' order is the prompt's, so another order
    is another label."""
    import hashlib
    from mmdiffseg.datasets import label_key
    image = b'\x89PNG image bytes'
    assert label_key(image, ('aeroplane', 'person')) == hashlib.sha1(
        image + b'\0' + b'["aeroplane", "person"]').hexdigest()
    assert label_key(image, ['aeroplane', 'person']) != label_key(image, ['person', 'aeroplane'])


def test_load_pseudo_label_without_image_level_labels_names_the_missing_step(tmp_path):
    pipeline = Compose([dict(type='LoadImageFromFile'),
                        dict(type='LoadPseudoLabel', cache=cache_cfg(tmp_path))])
    with pytest.raises(KeyError, match='needs LoadImageLevelLabels before it'):
        pipeline(dict(img_path=str(VOC / 'JPEGImages' / 'voc_val_0.png'), seg_fields=[]))


def test_a_cache_keyed_by_image_bytes_alone_is_refused(tmp_path):
    """A folder signed before labels were keyed by their class names too."""
    LabelCache(**cache_cfg(tmp_path)).sign()
    signature = tmp_path / 'cache' / 'cache.json'
    old = json.loads(signature.read_text())
    del old['label_key']
    signature.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r'label_key: cache <absent>, this run "sha1\(image'):
        LabelCache(**cache_cfg(tmp_path)).check_signature()


def test_the_first_writer_records_its_precision_and_another_writer_is_refused(tmp_path):
    LabelCache(**cache_cfg(tmp_path), writer_dtype='float16').save('ab' * 20, np.zeros((2, 2)))
    assert json.loads((tmp_path / 'cache' / 'cache.json').read_text())['made_with'] == {
        'dtype': 'float16', 'variant': None}
    assert LabelCache(**cache_cfg(tmp_path)).check_signature()          # a reader: any precision
    assert LabelCache(**cache_cfg(tmp_path), writer_dtype='float16').check_signature()
    with pytest.raises(ValueError, match='made in float16, and this run would add labels made '
                                         'in float32: set the engine precision to float16'):
        LabelCache(**cache_cfg(tmp_path), writer_dtype='float32').check_signature()


@pytest.fixture(scope='module')
def tiny_sd():
    return cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base'))


def test_a_saved_copy_is_the_same_model_and_other_weights_are_not(tmp_path, tiny_sd):
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)
    pipe.save_pretrained(tmp_path / 'saved')      # writes _name_or_path and every default
    config = json.loads((tmp_path / 'saved' / 'unet' / 'config.json').read_text())
    assert '_name_or_path' in config
    assert model_identity(tmp_path / 'saved')['config_hash'] == \
        model_identity(tiny_sd)['config_hash']
    shutil.copytree(tiny_sd, tmp_path / 'copy')
    assert model_identity(tmp_path / 'copy')['config_hash'] == \
        model_identity(tiny_sd)['config_hash']
    with torch.no_grad():   # a fine-tune: same configs, one attention weight changed
        pipe.unet.mid_block.attentions[0].transformer_blocks[0].attn2.to_q.weight[0, 0] += 1e-3
    pipe.save_pretrained(tmp_path / 'tuned')
    assert model_identity(tmp_path / 'tuned')['config_hash'] != \
        model_identity(tiny_sd)['config_hash']
    changed = dict(config, cross_attention_dim=config['cross_attention_dim'] + 1)
    (tmp_path / 'copy' / 'unet' / 'config.json').write_text(json.dumps(changed))
    assert model_identity(tmp_path / 'copy')['config_hash'] != \
        model_identity(tiny_sd)['config_hash']


def test_every_component_and_the_noise_schedule_are_part_of_the_model(tmp_path, tiny_sd):
    """A swapped VAE, a trained text encoder or other betas make other labels (12%, 32-40% and
    3-8% of a tiny model's iSeg pixels): another model for caches and tool folders, where the
    U-Net alone was fingerprinted and their labels mixed."""
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_sd), safety_checker=None)
    base = model_identity(tiny_sd)['config_hash']
    vae, text = (next(module.parameters()).view(-1) for module in (pipe.vae, pipe.text_encoder))
    with torch.no_grad():
        vae[0] += 1e-3
    pipe.save_pretrained(tmp_path / 'vae')
    with torch.no_grad():
        vae[0] -= 1e-3
        text[0] += 1e-3
    pipe.save_pretrained(tmp_path / 'text')
    for name, part, change in (('betas', 'scheduler/scheduler_config.json', dict(beta_end=0.02)),
                               ('latent_scale', 'vae/config.json', dict(scaling_factor=0.2))):
        shutil.copytree(tiny_sd, tmp_path / name)
        config = tmp_path / name / part
        config.write_text(json.dumps(dict(json.loads(config.read_text()), **change)))
    hashes = {name: model_identity(tmp_path / name)['config_hash']
              for name in ('vae', 'text', 'betas', 'latent_scale')}
    assert base not in hashes.values() and len(set(hashes.values())) == 4


def test_a_resaved_resharded_or_resampled_copy_is_the_same_model(tmp_path, tiny_sd):
    """What a save_pretrained copy changes and labels do not: a text-encoder key written out at
    its default, old tensor names renamed, integer buffers dropped, weights split in shards; and
    the sampler class (extract noises with DDPM on the same betas)."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file, save_file
    base = model_identity(tiny_sd)['config_hash']
    copy = tmp_path / 'copy'
    shutil.copytree(tiny_sd, copy)
    for part, edit in (('text_encoder/config.json', lambda c: c.pop('max_position_embeddings')),
                       ('vae/config.json', lambda c: c.pop('act_fn')),  # its default, 'silu'
                       ('scheduler/scheduler_config.json',
                        lambda c: c.update(_class_name='EulerDiscreteScheduler')),
                       ('scheduler/scheduler_config.json',
                        lambda c: c.pop('num_train_timesteps'))):  # DDPM's default, 1000
        config = json.loads((copy / part).read_text())
        edit(config)
        (copy / part).write_text(json.dumps(config))
    vae = copy / 'vae' / 'diffusion_pytorch_model.safetensors'
    tensors = load_file(vae)
    name = sorted(tensors)[0]
    tensors['renamed.' + name] = tensors.pop(name)
    tensors['position_ids'] = torch.arange(77)[None]
    save_file(tensors, vae)
    # variant weights beside the plain ones: a load without the variant reads the plain ones
    save_file({key: value + 1 for key, value in tensors.items()},
              vae.with_name('diffusion_pytorch_model.fp16.safetensors'))
    shutil.rmtree(copy / 'unet')
    UNet2DConditionModel.from_pretrained(tiny_sd / 'unet').save_pretrained(
        copy / 'unet', max_shard_size='200KB')
    assert len(list((copy / 'unet').glob('*.safetensors'))) > 1
    assert model_identity(copy)['config_hash'] == base
