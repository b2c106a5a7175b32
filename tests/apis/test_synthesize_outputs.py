"""What synthesize's GPU step hands to the writer for each item of a batch: its own prompt, seed,
class name and labelled share in the record, the sampled image upright in the JPEG and the
generator's label in the PNG (a stand-in engine and generator; no model is loaded)."""
import importlib
import io

import numpy as np
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
    templates = ['a {}', 'the {}']

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

    def generate(self, prompts, seed, height, width, **kwargs):
        """Image 0: red top rows; image 1: all green (an all-unsure label)."""
        images = torch.zeros(len(prompts), 3, height, width, dtype=torch.uint8)
        images[0, 0, :height // 4] = 255
        images[1:, 1] = 255
        return images, None


def test_each_item_of_a_batch_gets_its_own_record_image_and_label(tmp_path, monkeypatch):
    captured = {}
    monkeypatch.setattr(synth_api, 'run_job', lambda items, *a, **kw: captured.update(
        items=items, **kw))
    monkeypatch.setattr(synth_api, 'load_engine', lambda *args, **kwargs: Engine())
    monkeypatch.setattr(synth_api, 'build_generator', lambda cfg, classes: Generator())
    synth_api.synthesize(['cat', 'dog'], tmp_path, HUB_ID, dict(type='SeeDiff'),
                         images_per_class=2, seed=100, seed_per_image='index', size=SIZE)
    items = captured['items']
    batch = [items[1], items[2]]  # cat_00001, dog_00000
    outputs = captured['prepare']()(batch, None)
    assert [o.record for o in outputs] == [
        dict(prompt='the cat', seed=101, class_name='cat', labelled=1.0),
        dict(prompt='a dog', seed=100, class_name='dog', labelled=0.0)]
    assert sorted(outputs[0].files) == [f'{IMAGE_DIR}/cat_00001.jpg', f'{MASK_DIR}/cat_00001.png']
    jpeg = np.asarray(Image.open(io.BytesIO(outputs[0].files[f'{IMAGE_DIR}/cat_00001.jpg']())))
    assert jpeg.shape == (SIZE, SIZE, 3)
    assert jpeg[:SIZE // 4 - 2, :, 0].min() > 200 and jpeg[SIZE // 4 + 2:, :, 0].max() < 50
    png = np.asarray(Image.open(io.BytesIO(outputs[0].files[f'{MASK_DIR}/cat_00001.png']())))
    expected = np.zeros((SIZE, SIZE), np.uint8)
    expected[:SIZE // 4] = 1
    assert np.array_equal(png, expected)
    png = np.asarray(Image.open(io.BytesIO(outputs[1].files[f'{MASK_DIR}/dog_00000.png']())))
    assert (png == 255).all()


def test_a_run_of_separators_is_one_dash_in_an_id():
    """Slugs collapse each run of characters outside [0-9A-Za-z] to one dash."""
    items = synth_api.synth_items(['potted  plant / pot', 'a--b'], 1, seed=0)
    assert [it.id for it in items] == ['potted-plant-pot_00000', 'a-b_00000']


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
