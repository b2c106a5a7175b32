"""What synthesize hands to run_job: the split file it names, the items in class-major order and
the writer settings (a stand-in job; no model is loaded); no job without classes."""
import importlib

import pytest

from mmdiffseg.apis.io import UserInputError

synth_api = importlib.import_module('mmdiffseg.apis.synthesize')


def run(monkeypatch, tmp_path, **kwargs):
    captured = {}
    monkeypatch.setattr(synth_api, 'run_job', lambda items, *a, **kw: captured.update(
        items=items, args=a, **kw))
    synth_api.synthesize(['cat', 'dog'], tmp_path, 'test-org/not-downloaded',
                         dict(type='SeeDiff'), **kwargs)
    return captured


def test_the_split_names_the_split_file_and_defaults_to_train(monkeypatch, tmp_path):
    """--split extra lists the items in ImageSets/Segmentation/extra.txt (default train.txt)."""
    assert run(monkeypatch, tmp_path)['split_file'] == 'ImageSets/Segmentation/train.txt'
    job = run(monkeypatch, tmp_path, split='extra', batch_size=3, workers=0)
    assert job['split_file'] == 'ImageSets/Segmentation/extra.txt'
    assert (job['batch_size'], job['workers']) == (3, 0)


def test_items_are_class_major_with_their_own_class_name(monkeypatch, tmp_path):
    """Two images of each class: cat 0, cat 1, dog 0, dog 1, each item naming its class."""
    job = run(monkeypatch, tmp_path, images_per_class=2)
    ids = ['cat_00000', 'cat_00001', 'dog_00000', 'dog_00001']
    assert [it.id for it in job['items']] == ids
    assert [(it.payload['name'], it.payload['index']) for it in job['items']] == [
        ('cat', 0), ('cat', 1), ('dog', 0), ('dog', 1)]


def test_each_item_of_a_batch_is_labelled_with_its_own_class(monkeypatch, tmp_path,
                                                             sd_config_dir):
    """A batch of a cat and a dog: the engine and the generator get ['cat'] and ['dog']."""
    import torch
    from transformers import CLIPTokenizer
    seen = {}

    class Generator:
        capture_spec = None
        prompt_templates = ['a {}']

        def config_dict(self):
            return dict(prompt_templates=['a {}'])

        def to(self, device):
            return self

        def generate_kwargs(self, names, start=0):
            return dict(prompts=[f'a {names[0]}'], class_names=[list(names)], steps=1,
                        guidance_scale=1.0)

        def __call__(self, maps, images, class_names):
            seen['generator'] = class_names
            return torch.zeros(len(images), 8, 8, dtype=torch.long)

    class Engine:
        device = torch.device('cpu')
        tokenizer = CLIPTokenizer.from_pretrained(
            sd_config_dir('stable-diffusion-v1-4') / 'tokenizer')

        def generate(self, prompts, class_names, **kwargs):
            seen['engine'] = class_names
            return torch.zeros(len(prompts), 3, 8, 8, dtype=torch.uint8), None

    monkeypatch.setattr(synth_api, 'load_engine', lambda *args, **kwargs: Engine())
    monkeypatch.setattr(synth_api, 'build_generator', lambda cfg, classes: Generator())
    job = run(monkeypatch, tmp_path, size=64)
    job['prepare']()(job['items'], None)
    assert seen['engine'] == seen['generator'] == [['cat'], ['dog']]


def test_no_classes_is_refused_before_any_work(monkeypatch, tmp_path):
    """An empty class list (the API; the tool's --classes always names some) makes no job and
    no folder."""
    monkeypatch.setattr(synth_api, 'run_job', lambda *a, **kw: pytest.fail('a job was run'))
    with pytest.raises(UserInputError) as error:
        synth_api.synthesize([], tmp_path / 'out', 'test-org/not-downloaded', dict(type='SeeDiff'))
    assert str(error.value) == 'no classes to synthesise'
    assert not (tmp_path / 'out').exists()
