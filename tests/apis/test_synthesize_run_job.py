"""What synthesize hands to run_job: the split file it names, the items in class-major order and
the writer settings (a stand-in job; no model is loaded)."""
import importlib

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
    assert [it.id for it in job['items']] == ['cat_00000', 'cat_00001', 'dog_00000',
                                               'dog_00001']
    assert [(it.payload['name'], it.payload['index']) for it in job['items']] == [
        ('cat', 0), ('cat', 1), ('dog', 0), ('dog', 1)]
