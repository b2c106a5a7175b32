"""What synthesize's GPU step hands to the writer for each item of a batch: its own prompt, seed,
class name and labelled share in the record, the sampled image upright in the JPEG and the
generator's label in the PNG (a stand-in engine and generator; no model is loaded)."""
import importlib
import io

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiffseg.apis.folders import IMAGE_DIR, MASK_DIR

synth_api = importlib.import_module('mmdiffseg.apis.synthesize')
HUB_ID = 'test-org/not-downloaded'
SIZE = 64


class Generator:
    """SeeDiff's interface: prompts cycled by image index; the label is 1 where the image is red,
    255 where it is green, else 0."""

    capture_spec = None
    templates = prompt_templates = ['a {}', 'the {}']

    def config_dict(self):
        return dict(prompt_templates=self.templates)

    def to(self, device):
        return self

    def generate_kwargs(self, names, start=0):
        prompt = self.templates[start % len(self.templates)].format(names[0])
        return dict(prompts=[prompt], class_names=[list(names)], steps=2, guidance_scale=7.5)

    def __call__(self, maps, images, class_names):
        red = (images[:, 0] > 128) & (images[:, 1] < 128)
        green = (images[:, 1] > 128) & (images[:, 0] < 128)
        return torch.where(green, 255, red.long())


class Engine:
    device = torch.device('cpu')
    tokenizer = None  # the prompts' check after the load: a real tokenizer (sd_config_dir)

    def generate(self, prompts, seed, height, width, **kwargs):
        """Image 0: red top rows; image 1: all green (an all-unsure label)."""
        images = torch.zeros(len(prompts), 3, height, width, dtype=torch.uint8)
        images[0, 0, :height // 4] = 255
        images[1:, 1] = 255
        return images, None


def test_each_item_of_a_batch_gets_its_own_record_image_and_label(
        tmp_path, monkeypatch, sd_config_dir):
    """Each record holds the share of the mask's pixels of its own class (``class_share``)."""
    captured = {}
    monkeypatch.setattr(synth_api, 'run_job', lambda items, *a, **kw: captured.update(
        items=items, **kw))
    monkeypatch.setattr(Engine, 'tokenizer', tokenizer(sd_config_dir))
    monkeypatch.setattr(synth_api, 'load_engine', lambda *args, **kwargs: Engine())
    monkeypatch.setattr(synth_api, 'build_generator', lambda cfg, classes: Generator())
    synth_api.synthesize(['cat', 'dog'], tmp_path, HUB_ID, dict(type='SeeDiff'),
                         images_per_class=2, seed=100, seed_per_image='index', size=SIZE)
    items = captured['items']
    batch = [items[1], items[2]]  # cat_00001, dog_00000
    outputs = captured['prepare']()(batch, None)
    assert [o.record for o in outputs] == [
        dict(prompt='the cat', seed=101, class_name='cat', labelled=1.0, class_share=0.25),
        dict(prompt='a dog', seed=100, class_name='dog', labelled=0.0, class_share=0.0)]
    assert sorted(outputs[0].files) == [f'{IMAGE_DIR}/cat_00001.jpg', f'{MASK_DIR}/cat_00001.png']
    jpeg = np.asarray(Image.open(io.BytesIO(outputs[0].files[f'{IMAGE_DIR}/cat_00001.jpg']())))
    assert jpeg.shape == (SIZE, SIZE, 3)
    assert jpeg[:SIZE // 4 - 2, :, 0].min() > 200 and jpeg[SIZE // 4 + 2:, :, 0].max() < 50
    png = np.asarray(Image.open(io.BytesIO(outputs[0].files[f'{MASK_DIR}/cat_00001.png']())))
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[:SIZE // 4] = 1
    assert np.array_equal(png, expected)
    # each class in its own colour (the label set's, background first): a shifted palette drew
    # every class in the next one's
    from mmdiffseg.apis.folders import palette_for
    mask = Image.open(io.BytesIO(outputs[0].files[f'{MASK_DIR}/cat_00001.png']()))
    assert mask.getpalette()[:9] == sum(palette_for(['background', 'cat', 'dog']), [])
    png = np.asarray(Image.open(io.BytesIO(outputs[1].files[f'{MASK_DIR}/dog_00000.png']())))
    assert (png == 255).all()


def test_a_run_of_separators_is_one_dash_in_an_id_and_letters_of_any_script_are_kept():
    """Slugs collapse each run of characters other than letters and digits to one dash; letters
    of any script are kept (every name outside A-Z was 'class': two were refused as the same)."""
    items = synth_api.synth_items(['potted  plant / pot', 'a--b', 'traffic_light'], 1, seed=0)
    assert [it.id for it in items] == ['potted-plant-pot_00000', 'a-b_00000',
                                       'traffic-light_00000']
    items = synth_api.synth_items(['猫', '犬', 'café', 'Straße'], 1, seed=0)
    assert [it.id for it in items] == ['猫_00000', '犬_00000', 'café_00000', 'straße_00000']


def tokenizer(sd_config_dir, name='stable-diffusion-v1-4'):
    from transformers import CLIPTokenizer
    return CLIPTokenizer.from_pretrained(sd_config_dir(name) / 'tokenizer')


def test_a_template_that_changes_the_class_word_is_refused_before_the_model_loads(
        tmp_path, monkeypatch, sd_config_dir):
    """'two {}s' makes 'cats', one token that is not 'cat': refused naming the template, with
    the model's own tokenizer before the load where its files are here, else right after the
    load (it crashed at the first batch, leaving a folder the corrected command was refused
    into); nothing is written either way."""
    from mmdiffseg.apis.io import UserInputError
    monkeypatch.setattr(synth_api, 'check_model', lambda model, variant: model)
    monkeypatch.setattr(synth_api, 'run_job', lambda items, *a, prepare, **kw: prepare())
    monkeypatch.setattr(synth_api, 'load_engine', lambda *a, **kw: pytest.fail('loaded'))
    model = str(sd_config_dir('stable-diffusion-v1-4'))
    fix = (r"prompt template 'a photo of two \{\}s': class '(cat|dog)' .* does not occur in "
           r"prompt 'a photo of two (cats|dogs)'")
    with pytest.raises(UserInputError, match=fix):
        synth_api.synthesize(['dog', 'cat'], tmp_path / 'out', model, dict(type='SeeDiff'),
                             prompts=['a photo of a {}', 'a photo of two {}s'])
    monkeypatch.setattr(Engine, 'tokenizer', tokenizer(sd_config_dir))
    monkeypatch.setattr(synth_api, 'load_engine', lambda *a, **kw: Engine())
    with pytest.raises(UserInputError, match=fix):
        synth_api.synthesize(['cat'], tmp_path / 'out', HUB_ID, dict(type='SeeDiff'),
                             prompts=['a photo of two {}s'])
    assert not (tmp_path / 'out').exists()
    synth_api.synthesize(['cat'], tmp_path / 'out', model, dict(type='SeeDiff'),
                         prompts=['a photo of one {}'])


def test_seediff_grids_scale_below_the_released_size_and_a_configs_own_grids_are_kept(
        tmp_path, monkeypatch):
    """Any size other than 512 scales SeeDiff's grids (448 px: latent 56 -> 14, 28, 56); grids
    the config sets are kept at any size."""
    headers = []
    monkeypatch.setattr(synth_api, 'run_job', lambda items, r, c, out, header, **kw:
                        headers.append(header))
    synth_api.synthesize(['cat'], tmp_path, HUB_ID, dict(type='SeeDiff'), size=448)
    synth_api.synthesize(['cat'], tmp_path, HUB_ID,
                         dict(type='SeeDiff', resolutions=[16, 32, 64]), size=576)
    assert synth_api.seediff_resolutions(448) == [14, 28, 56]
    assert sorted(headers[0]['generator']['self_layers']) == [14, 28, 56]
    assert sorted(headers[1]['generator']['self_layers']) == [16, 32, 64]


def test_a_presets_classes_index_the_masks_and_background_is_no_class_to_synthesise(
        tmp_path, monkeypatch):
    """The VOC preset run for cat and dog writes masks in VOC's 21-class order (dog = 12), as its
    header says; without a preset the masks index background + the names. A string is one class
    name (and one template), not its letters; "background" asked for is refused with the fix."""
    from mmengine.config import Config

    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.datasets.class_names import DATASET_CLASSES
    runs = []
    monkeypatch.setattr(synth_api, 'run_job', lambda items, r, c, out, header, **kw:
                        runs.append((header, [it.id for it in items])))
    preset = Config.fromfile('configs/seediff/seediff_voc20_synth.py').generator.to_dict()
    synth_api.synthesize(['cat', 'dog'], tmp_path / 'a', HUB_ID, preset)
    assert runs[-1][0]['classes'] == list(DATASET_CLASSES['voc'])
    assert runs[-1][0]['classes'].index('dog') == 12
    synth_api.synthesize(['cat', 'horse'], tmp_path / 'b', HUB_ID, dict(type='SeeDiff'))
    assert runs[-1][0]['classes'] == ['background', 'cat', 'horse']
    logged = []
    monkeypatch.setattr(synth_api, 'print_log', lambda msg, **kw: logged.append(msg))
    synth_api.synthesize(['cat', 'tiger'], tmp_path / 'e', HUB_ID, preset)  # tiger: no VOC class
    assert runs[-1][0]['classes'] == ['background', 'cat', 'tiger']
    assert logged == ["['tiger'] are not classes of the generator config, so the masks index "
                      "background + the classes (['background', 'cat', 'tiger']), not its "
                      'classes; --label-set sets the indices']
    synth_api.synthesize('dog', tmp_path / 'c', HUB_ID, dict(type='SeeDiff'),
                         prompts='a photo of a {}')
    assert runs[-1][0]['classes'] == ['background', 'dog'] and runs[-1][1] == ['dog_00000']
    assert runs[-1][0]['generator']['prompt_templates'] == ['a photo of a {}']
    for names in (['background', 'cat'], ['Background']):
        with pytest.raises(UserInputError, match=r'holds "background": it is not a class to '
                                                 r'synthesise .* leave it out'):
            synth_api.synthesize(names, tmp_path / 'd', HUB_ID, dict(type='SeeDiff'))
    assert len(runs) == 4 and not (tmp_path / 'd').exists()
