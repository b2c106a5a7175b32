"""segment's items, header and batch work: a single image's id is its name without the suffix, the
header records the work size (a folder made at another size is not resumed), and each image of a
batch gets its own labelled share and its own picture under its overlay."""
import importlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiffseg.apis.folders import MASK_DIR, OVERLAY_DIR
from mmdiffseg.apis.image_inputs import path_items
from mmdiffseg.apis.segment import overlay_jpeg, read_image_pair, stack_image_pairs

segment_api = importlib.import_module('mmdiffseg.apis.segment')
HUB_ID = 'test-org/not-downloaded'  # a hub id: checked and recorded, never loaded here


def _capture_job(monkeypatch):
    captured = {}

    def capture(items, read, _unused, out_dir, header, **kwargs):
        captured.update(items=items, header=header, **kwargs)
    monkeypatch.setattr(segment_api, 'run_job', capture)
    return captured


def test_one_image_is_one_item_named_by_its_stem(tmp_path):
    """As in a folder, the id (the output names) drops the suffix: photo.jpg -> photo.png."""
    Image.new('RGB', (4, 4)).save(tmp_path / 'photo.jpg')
    items = path_items(tmp_path / 'photo.jpg')
    assert [it.id for it in items] == ['photo'] == [it.id for it in path_items(tmp_path)]
    assert items[0].payload == dict(image=str(tmp_path / 'photo.jpg'))


def test_the_header_records_the_work_size(tmp_path, monkeypatch):
    job = _capture_job(monkeypatch)
    Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
    headers = []
    for size in (256, 512):
        segment_api.segment(path_items(tmp_path), tmp_path / 'out', HUB_ID,
                            dict(type='ISeg'), ['cat'], work_size=size)
        headers.append(job['header'])
    assert [h['work_size'] for h in headers] == [256, 512]


def test_each_image_of_a_batch_gets_its_own_share_and_overlay_picture(tmp_path, monkeypatch):
    job = _capture_job(monkeypatch)
    labels = [np.array([[1, 255, 255]], np.uint8), np.array([[255, 255], [255, 1]], np.uint8)]
    monkeypatch.setattr(segment_api, 'load_engine',
                        lambda *args, **kwargs: SimpleNamespace(device=torch.device('cpu')))
    monkeypatch.setattr(segment_api, 'labels_or_failures', lambda *args: labels)
    Image.new('RGB', (3, 1), (200, 0, 0)).save(tmp_path / 'a.png')
    Image.new('RGB', (2, 2), (0, 0, 200)).save(tmp_path / 'b.png')
    items = path_items(tmp_path)
    segment_api.segment(items, tmp_path / 'out', HUB_ID, dict(type='ISeg'), ['cat'])
    loaded = stack_image_pairs([read_image_pair(it, size=8) for it in items])
    assert loaded[1] == [(1, 3), (2, 2)] and [r.shape[:2] for r in loaded[2]] == [(1, 3), (2, 2)]
    outputs = job['prepare']()(items, loaded)
    assert [o.record['labelled'] for o in outputs] == [0.3333, 0.25]
    for it, out, rgb, lab in zip(items, outputs, loaded[2], labels):
        assert list(out.files) == [f'{MASK_DIR}/{it.id}.png', f'{OVERLAY_DIR}/{it.id}.jpg']
        assert out.files[f'{OVERLAY_DIR}/{it.id}.jpg']() == overlay_jpeg(
            ('background', 'cat'), rgb.numpy(), lab)


def test_the_offline_jobs_take_paths_from_python(tmp_path, monkeypatch):
    """`segment` and `pseudo_label` as exported take an image file or folder, a list of them, or
    work items (paths failed inside with "'str' object has no attribute 'payload'"); arrays are
    refused, pointing at the engine."""
    import pytest
    from mmdiffseg.apis import UserInputError, pseudo_label
    pseudo_api = importlib.import_module('mmdiffseg.apis.pseudo_label')
    job = _capture_job(monkeypatch)
    for name in ('a', 'b'):
        Image.new('RGB', (4, 4)).save(tmp_path / f'{name}.png')
    for images in (str(tmp_path), tmp_path / 'a.png', [tmp_path / 'a.png', str(tmp_path / 'b.png')],
                   path_items(tmp_path)):
        segment_api.segment(images, tmp_path / 'out', HUB_ID, dict(type='DiffSeg'), None)
        expected = ['a'] if images == tmp_path / 'a.png' else ['a', 'b']
        assert [it.id for it in job['items']] == expected
    monkeypatch.setattr(pseudo_api, 'run_job', lambda items, *a, **kw: job.update(items=items))
    pseudo_label(str(tmp_path), tmp_path / 'out', HUB_ID, dict(type='DiffSeg'), None, None)
    assert [it.id for it in job['items']] == ['a', 'b']
    with pytest.raises(UserInputError, match=r'images: expected an image file or folder path, a '
                                             r'list of paths, or WorkItems .*got a list of '
                                             r'ndarray; images in memory \(arrays, tensors, '
                                             r'PIL images\) go to the engine'):
        segment_api.segment([np.zeros((4, 4, 3), np.uint8)], tmp_path / 'out', HUB_ID,
                            dict(type='DiffSeg'), None)
    # a single PIL image: "'PngImageFile' object is not iterable"
    with pytest.raises(UserInputError, match=r'WorkItems .*got a PngImageFile; images in memory'):
        segment_api.segment(Image.open(tmp_path / 'a.png'), tmp_path / 'out', HUB_ID,
                            dict(type='DiffSeg'), None)
    segment_api.segment(tmp_path.glob('*.png'), tmp_path / 'out', HUB_ID, dict(type='DiffSeg'),
                        None)   # any iterable of paths
    assert sorted(it.id for it in job['items']) == ['a', 'b']
    segment_api.segment(np.array([str(tmp_path / 'a.png')]), tmp_path / 'out', HUB_ID,
                        dict(type='DiffSeg'), None)   # an array of paths
    assert [it.id for it in job['items']] == ['a']
    with pytest.raises(UserInputError, match=r'WorkItems .*got a ndarray; images in memory'):
        segment_api.segment(np.zeros((4, 4, 3), np.uint8), tmp_path / 'out', HUB_ID,
                            dict(type='DiffSeg'), None)
    # work items and paths mixed: "'str' object has no attribute 'payload'" inside the job
    with pytest.raises(UserInputError, match=r'got a list of WorkItem, str; '):
        segment_api.segment([path_items(tmp_path)[0], str(tmp_path / 'b.png')], tmp_path / 'out',
                            HUB_ID, dict(type='DiffSeg'), None)


def test_a_loaded_engine_or_a_built_generator_is_refused_naming_what_the_jobs_take(tmp_path):
    """A notebook's engine as ``model``: a TypeError from os.fspath; a built generator as
    ``gen_cfg``: 'has no type', which misled."""
    import pytest

    from mmdiffseg.apis import UserInputError
    from mmdiffseg.attention import DiffusionAttentionEngine
    from mmdiffseg.generators import DiffSeg
    Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
    engine = object.__new__(DiffusionAttentionEngine)
    with pytest.raises(UserInputError, match=r'^model: a hub id or a diffusers folder \(the jobs '
                                             r'load the model in each process\), got a '
                                             r'DiffusionAttentionEngine$'):
        segment_api.segment(str(tmp_path), tmp_path / 'out', engine, dict(type='DiffSeg'), None)
    with pytest.raises(UserInputError, match=r"is a built DiffSeg; give its config \(the jobs "
                                             r"build it in each process\): dict\(type='DiffSeg'"):
        segment_api.segment(str(tmp_path), tmp_path / 'out', HUB_ID, DiffSeg(), None)
    assert not (tmp_path / 'out').exists()


def test_classes_that_do_not_fit_the_prompt_are_refused_before_any_work(tmp_path, monkeypatch):
    """Every image's prompt names all the classes: ADE20K's 150 in one iSeg prompt put most past
    the text encoder's 77 tokens, which stopped the run after the model load with a traceback
    and left an --out folder that refused the corrected rerun."""
    from sample_data import shared_path

    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
    from mmdiffseg.datasets import DATASET_CLASSES
    job = _capture_job(monkeypatch)
    model = str(cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base')))
    Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
    names = [c for c in DATASET_CLASSES['ade20k']]
    with pytest.raises(UserInputError, match=r"^class '.*' lies beyond the first 77 tokens .*; "
                                             r'name fewer classes .* \(segment.py prompts every '
                                             r'image with all the classes given: --classes; '
                                             r'nothing was written\)$'):
        segment_api.segment(path_items(tmp_path), tmp_path / 'out', model,
                            dict(type='ISeg', cross_heads=None, self_heads=None), names)
    assert not job and not (tmp_path / 'out').exists()
    segment_api.segment(path_items(tmp_path), tmp_path / 'out', model,
                        dict(type='ISeg', cross_heads=None, self_heads=None), names[:20])
    assert job['header']['classes'][1:] == names[:20]


def test_class_lists_given_as_strings_are_read_as_the_tools_read_them(tmp_path, monkeypatch):
    """segment(..., 'cat,dog') labelled the classes 'c', 'a', 't', ',', 'd', 'o', 'g' (the
    string's characters) without a word; pseudo_label(classes='voc') made ['v', 'o', 'c'];
    synthesize(label_set='voc') too. A string is a class set's name or names with a comma, as
    --classes; anything else is refused before any work."""
    from mmdiffseg.apis import pseudo_label, synthesize
    from mmdiffseg.apis.io import UserInputError
    pseudo_api = importlib.import_module('mmdiffseg.apis.pseudo_label')
    synthesize_api = importlib.import_module('mmdiffseg.apis.synthesize')
    job = _capture_job(monkeypatch)
    for module in (pseudo_api, synthesize_api):
        monkeypatch.setattr(module, 'run_job', lambda items, read, _, out, header, **kw:
                            job.update(header=header))
    Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
    items = path_items(tmp_path)
    segment_api.segment(items, tmp_path / 'out', HUB_ID, dict(type='ISeg'), 'cat,dog')
    assert job['header']['classes'] == ['background', 'cat', 'dog']
    pseudo_label(items, tmp_path / 'out2', HUB_ID, dict(type='ISeg'), 'voc', {'a': ['cat']})
    assert job['header']['classes'][:3] == ['background', 'aeroplane', 'bicycle']
    synthesize(['dog'], tmp_path / 'out3', HUB_ID, dict(type='SeeDiff'), label_set='voc')
    assert job['header']['classes'][12] == 'dog'
    with pytest.raises(UserInputError, match=r"^names 'cat' is not a class set; .*needs a comma "
                                             r'\(one class: names "cat,"\)'):
        segment_api.segment(items, tmp_path / 'out4', HUB_ID, dict(type='ISeg'), 'cat')


def test_a_generator_of_classes_without_names_is_refused_before_any_work(tmp_path, monkeypatch):
    """ISeg without names (segment) or image-level labels (pseudo_label) stopped in the first
    batch, after the model load, leaving a folder whose rerun with names was refused."""
    from mmdiffseg.apis import pseudo_label
    from mmdiffseg.apis.io import UserInputError
    job = _capture_job(monkeypatch)
    Image.new('RGB', (4, 4)).save(tmp_path / 'a.png')
    items = path_items(tmp_path)
    with pytest.raises(UserInputError, match=r"^ISeg labels classes and needs names \(the classes "
                                             r"to find, .*dict\(type='DiffSeg'\) without classes"):
        segment_api.segment(items, tmp_path / 'out', HUB_ID, dict(type='ISeg'), None)
    with pytest.raises(UserInputError, match=r'^ISeg labels classes and needs image_labels'):
        pseudo_label(items, tmp_path / 'out2', HUB_ID, dict(type='ISeg'), 'voc', None)
    assert not job and not (tmp_path / 'out').exists() and not (tmp_path / 'out2').exists()
    segment_api.segment(items, tmp_path / 'out', HUB_ID, dict(type='DiffSeg'), None)
    assert job['header']['classes'] is None
