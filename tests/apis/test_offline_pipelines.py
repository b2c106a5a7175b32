"""What the offline tools' pipelines hand to the job runner (ids, seeds, label sets, headers) and
the input checks they make before any work; the job itself is not run (no model is loaded)."""
import importlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from mmdiffseg.apis.folders import MASK_DIR, OVERLAY_DIR, palette_for
from mmdiffseg.apis.io import UserInputError, WorkItem
from mmdiffseg.apis.image_inputs import images_from_folder, path_items
from mmdiffseg.apis.pseudo_label import label_outputs
from mmdiffseg.apis.segment import overlay_jpeg, read_image_pair, stack_image_pairs
from mmdiffseg.apis.synthesize import seediff_resolutions, synth_items
from mmdiffseg.datasets.transforms import read_label_map

synth_api = importlib.import_module('mmdiffseg.apis.synthesize')  # the package exports the
pseudo_api = importlib.import_module('mmdiffseg.apis.pseudo_label')
segment_api = importlib.import_module('mmdiffseg.apis.segment')  # functions under these names
HUB_ID = 'test-org/not-downloaded'  # a hub id: checked and recorded, never loaded here


@pytest.fixture
def job_args(monkeypatch):
    """The arguments the pipelines pass to ``run_job``, captured instead of running the job."""
    captured = {}

    def capture(items, read, _unused, out_dir, header, **kwargs):
        captured.update(items=items, header=header, out_dir=out_dir, **kwargs)
        return 'not run'
    monkeypatch.setattr(synth_api, 'run_job', capture)
    monkeypatch.setattr(segment_api, 'run_job', capture)
    return captured


def test_a_folder_hint_names_only_sub_folders_that_hold_images(tmp_path):
    (tmp_path / 'empty').mkdir()
    (tmp_path / 'aachen').mkdir()
    Image.new('RGB', (4, 4)).save(tmp_path / 'aachen' / 'a.png')
    with pytest.raises(UserInputError, match=r"its sub-folders \['aachen'\] hold images"):
        images_from_folder(tmp_path)
    with pytest.raises(UserInputError, match=r'no images in \S+empty$'):
        images_from_folder(tmp_path / 'empty')


def test_seediff_grids_are_a_quarter_half_and_all_of_the_latent():
    assert seediff_resolutions(512) == [16, 32, 64]
    assert seediff_resolutions(576) == [18, 36, 72]
    for size in (544, 520, 0, -64):
        with pytest.raises(UserInputError, match=f'--size {size}: .*of 64 and at least 64'):
            seediff_resolutions(size)


def test_synth_ids_are_lowercase_slugs_and_each_image_of_a_class_has_its_own_seed():
    items = synth_items(['TV/Monitor', '+++'], 3, seed=5)
    assert [it.id for it in items] == [
        'tv-monitor_00000', 'tv-monitor_00001', 'tv-monitor_00002',
        'class_00000', 'class_00001', 'class_00002']
    assert items[0].payload['name'] == 'TV/Monitor'
    assert len({it.payload['seed'] for it in items}) == 6
    with pytest.raises(UserInputError, match='--images-per-class must be at least 1, got 0'):
        synth_items(['cat'], 0, seed=5)
    with pytest.raises(UserInputError, match="'tv monitor' and 'TV-Monitor' would both be"):
        synth_items(['tv monitor', 'TV-Monitor'], 1, seed=5)


def test_index_seeds_stay_within_what_torch_generators_take():
    """--seed-per-image index seeds --seed .. --seed + n - 1, all in ``SEED_RANGE``, which is
    torch's own: its ends are taken, one past either is refused (hash seeds are 31 bits)."""
    low, high = synth_api.SEED_RANGE
    for seed, past in ((low, low - 1), (high, high + 1)):
        torch.Generator().manual_seed(seed)
        with pytest.raises(ValueError, match='Overflow'):
            torch.Generator().manual_seed(past)
    assert [it.payload['seed'] for it in synth_items(['cat'], 3, high - 2, 'index')] == [
        high - 2, high - 1, high]
    assert synth_items(['cat'], 1, low, 'index')[0].payload['seed'] == low
    for seed, count in ((high - 1, 3), (low - 1, 1), (2 ** 70, 1)):
        with pytest.raises(UserInputError, match=rf'^--seed {seed}: .*pass a --seed from {low} '
                                                 rf'to {high - count + 1}$'):
            synth_items(['cat'], count, seed, 'index')
    assert synth_items(['cat'], 2, 2 ** 70)[1].payload['seed'] < 2 ** 31


def test_synthesize_masks_index_background_then_the_classes(tmp_path, job_args):
    assert synth_api.synthesize(['cat', 'dog'], tmp_path, HUB_ID, dict(type='SeeDiff'),
                                images_per_class=2, seed=3) == 'not run'
    header = job_args['header']
    assert header['tool'] == 'synthesize' and header['classes'] == ['background', 'cat', 'dog']
    assert header['seed'] == 3 and header['size'] == 512 and 'seed_per_image' not in header
    assert [it.id for it in job_args['items']] == ['cat_00000', 'cat_00001', 'dog_00000',
                                                   'dog_00001']
    assert job_args['split_file'].endswith('train.txt')


def test_synthesize_records_index_seeds_and_scales_seediff_grids_with_the_size(tmp_path,
                                                                               job_args):
    synth_api.synthesize(['cat'], tmp_path, HUB_ID, dict(type='SeeDiff'), size=576,
                         seed=200000, seed_per_image='index')
    header = job_args['header']
    assert header['seed_per_image'] == 'index' and header['size'] == 576
    assert sorted(header['generator']['self_layers']) == [18, 36, 72]
    assert job_args['items'][0].payload['seed'] == 200000


def test_synthesize_refuses_no_templates_and_a_generator_that_cannot(tmp_path, job_args):
    with pytest.raises(UserInputError, match='have no "{}" for the class name'):
        synth_api.synthesize(['cat'], tmp_path, HUB_ID, dict(type='SeeDiff'), prompts=[])
    with pytest.raises(UserInputError, match=r'ISeg \(gen_cfg\) cannot synthesise: .*with SeeDiff'):
        synth_api.synthesize(['cat'], tmp_path, HUB_ID, dict(type='ISeg'))
    assert not job_args


def test_path_items_refuse_a_folder_without_images_naming_sub_folders_with_some(tmp_path):
    """As pseudo_label's image folders, without pseudo_label's --dataset-config advice (a
    folder of COCO samples in sub-folders said only 'no image file or folder of images')."""
    with pytest.raises(UserInputError) as error:
        path_items(tmp_path)
    assert str(error.value) == f'no images in {tmp_path}'
    (tmp_path / 'val2017').mkdir()
    Image.new('RGB', (4, 4)).save(tmp_path / 'val2017' / 'a.png')
    with pytest.raises(UserInputError) as error:
        path_items(tmp_path)
    assert str(error.value) == (f"no images in {tmp_path}; its sub-folders ['val2017'] hold "
                                "images (Cityscapes' cities): give one of them")
    with pytest.raises(UserInputError) as error:
        path_items(tmp_path / 'photo.jpg')
    assert str(error.value) == f'{tmp_path / "photo.jpg"}: no such image file or folder of images'
    assert [it.id for it in path_items(tmp_path / 'val2017')] == ['a']
    assert [it.id for it in path_items(tmp_path / 'val2017' / 'a.png')] == ['a']


def test_segment_puts_background_first_once(tmp_path, job_args):
    image = tmp_path / 'in' / 'a.png'
    image.parent.mkdir()
    Image.new('RGB', (4, 4)).save(image)
    segment_api.segment(path_items(image), tmp_path / 'out', HUB_ID, dict(type='ISeg'),
                        ['cat', 'background', 'dog'])
    header = job_args['header']
    assert header['tool'] == 'segment' and header['classes'] == ['background', 'cat', 'dog']
    assert job_args['split_file'].endswith('segment.txt')


def test_label_outputs_record_each_items_own_classes_path_and_labelled_share(tmp_path):
    items = [WorkItem(i, dict(image=str(tmp_path / 'in' / f'{i}.png'))) for i in ('a', 'b')]
    labels = [np.array([[0, 1], [255, 255]], np.uint8), np.full((2, 2), 255, np.uint8)]
    palette = palette_for(['background', 'cat', 'dog'])
    outputs = label_outputs(items, labels, [['cat'], ['dog']], palette, tmp_path / 'out')
    assert [o.record for o in outputs] == [
        dict(image='../in/a.png', classes=['cat'], labelled=0.5),
        dict(image='../in/b.png', classes=['dog'], labelled=0.0)]
    assert [list(o.files) for o in outputs] == [[f'{MASK_DIR}/a.png'], [f'{MASK_DIR}/b.png']]
    path = tmp_path / 'a.png'
    path.write_bytes(outputs[0].files[f'{MASK_DIR}/a.png']())
    np.testing.assert_array_equal(read_label_map(str(path)), labels[0])
    unnamed = label_outputs(items[:1], labels[:1], None, palette, tmp_path / 'out')
    assert unnamed[0].record['classes'] is None


@pytest.fixture
def one_image(tmp_path):
    image = tmp_path / 'in' / 'a.png'
    image.parent.mkdir()
    Image.new('RGB', (4, 4)).save(image)
    return images_from_folder(image.parent)


def test_pseudo_label_items_carry_names_as_the_label_set_spells_them(tmp_path, one_image,
                                                                     monkeypatch):
    captured = {}
    monkeypatch.setattr(pseudo_api, 'run_job',
                        lambda items, *args, **kwargs: captured.update(items=items, **kwargs))
    classes = ['background', 'bed ', 'cat']
    pseudo_api.pseudo_label(one_image, tmp_path / 'out', HUB_ID, dict(type='ISeg'), classes,
                            {'a': ['bed', 'cat']}, split='val')
    assert captured['items'][0].inputs['classes'] == ['bed ', 'cat']
    assert captured['split_file'].endswith('val.txt')


def test_pseudo_label_refuses_labels_without_classes_or_keyed_by_file_name(tmp_path, one_image):
    out = tmp_path / 'out'
    with pytest.raises(UserInputError, match='image-level labels need --classes'):
        pseudo_api.pseudo_label(one_image, out, HUB_ID, dict(type='DiffSeg'), None, {'a': []})
    with pytest.raises(UserInputError, match=r"1 image\(s\) have no image-level labels, e.g. "
                       r"\['a'\]; the labels are keyed by file names \(e.g. 'a.png'\): key them "
                       r"by the image name without its extension \('a'\)"):
        pseudo_api.pseudo_label(one_image, out, HUB_ID, dict(type='ISeg'), ['background', 'cat'],
                                {'a.png': ['cat']})
    with pytest.raises(UserInputError, match=r"the labels are keyed by file paths \(e.g. "
                       r"'photos/a'\): key them by the image name alone, without its folder or "
                       r"extension \('a'\)$"):
        pseudo_api.pseudo_label(one_image, out, HUB_ID, dict(type='ISeg'), ['background', 'cat'],
                                {'photos/a': ['cat']})
    with pytest.raises(UserInputError, match=r"1 image\(s\) have no image-level labels, e.g. "
                       r"\['a'\]; give each an entry in the labels \(--labels FILE: \"<image "
                       r"name>\": \[\"<class>\", ...\], \[\] for background only\), or leave "
                       r"those images out$"):
        pseudo_api.pseudo_label(one_image, out, HUB_ID, dict(type='ISeg'), ['background', 'cat'],
                                {'b': ['cat'], 'c': ['cat']})
    with pytest.raises(UserInputError, match=r"hold 1 unknown class name\(s\): .*'cta'.*"
                       r"the classes: \['background', 'cat'\]"):
        pseudo_api.pseudo_label(one_image, out, HUB_ID, dict(type='ISeg'), ['background', 'cat'],
                                {'a': ['cta']})
    assert not out.exists()


def test_segment_asks_each_image_for_the_names_without_background(tmp_path, job_args,
                                                                  monkeypatch):
    """The batch work ``segment`` hands to the job: the class names looked for (the label set
    less background) and a mask and an overlay per image, at the image's own size."""
    seen = []

    def label_images(engine, generator, images, names, sizes):
        seen.append(names)
        return [np.ones(hw, np.uint8) for hw in sizes]
    monkeypatch.setattr(segment_api, 'load_engine',
                        lambda *args, **kwargs: SimpleNamespace(device=torch.device('cpu')))
    monkeypatch.setattr(pseudo_api, 'label_images', label_images)  # under labels_or_failures
    Image.new('RGB', (3, 2)).save(tmp_path / 'a.png')
    items = path_items(tmp_path)
    segment_api.segment(items, tmp_path / 'out', HUB_ID, dict(type='ISeg'), ['cat', 'dog'])
    compute = job_args['prepare']()
    rgb = torch.zeros(2, 3, 3, dtype=torch.uint8)
    outputs = compute(items, (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), [(2, 3)], [rgb]))
    assert seen == [[['cat', 'dog']]]
    assert list(outputs[0].files) == [f'{MASK_DIR}/a.png', f'{OVERLAY_DIR}/a.jpg']
    assert outputs[0].record == dict(image='../a.png', labelled=1.0)
    overlay = outputs[0].files[f'{OVERLAY_DIR}/a.jpg']()  # drawn with the class names
    labels = np.ones((2, 3), np.uint8)
    assert overlay == overlay_jpeg(('background', 'cat', 'dog'), rgb.numpy(), labels)
    assert overlay != overlay_jpeg(None, rgb.numpy(), labels)


def test_segment_reads_each_image_at_the_work_size_and_keeps_its_own(tmp_path):
    Image.new('RGB', (5, 2), (10, 20, 30)).save(tmp_path / 'a.png')
    loaded = [read_image_pair(item, size=8) for item in path_items(tmp_path)]
    images, sizes, rgbs = stack_image_pairs(loaded)
    assert images.shape == (1, 3, 8, 8) and images[0, :, 0, 0].tolist() == [10, 20, 30]
    assert sizes == [(2, 5)] and rgbs[0].shape == (2, 5, 3)


class Sampled(Exception):
    """Stops the stand-in engine once a batch's sampling arguments are recorded."""


def test_synthesize_cycles_templates_by_image_index_and_seeds_each_image(
        tmp_path, job_args, monkeypatch, sd_config_dir):
    from transformers import CLIPTokenizer
    calls = []

    class Engine:
        device = torch.device('cpu')
        tokenizer = CLIPTokenizer.from_pretrained(  # the templates' check after the load
            sd_config_dir('stable-diffusion-v1-4') / 'tokenizer')

        def generate(self, prompts, **kwargs):
            calls.append(dict(kwargs, prompts=prompts))
            raise Sampled
    monkeypatch.setattr(synth_api, 'load_engine', lambda *args, **kwargs: Engine())
    synth_api.synthesize(['cat'], tmp_path, HUB_ID, dict(type='SeeDiff'), images_per_class=3,
                         prompts=['a {}', 'the {}'], seed=9, seed_per_image='index', size=576)
    compute = job_args['prepare']()
    with pytest.raises(Sampled):
        compute(job_args['items'][1:], None)
    assert calls[0]['prompts'] == ['the cat', 'a cat']
    assert calls[0]['class_names'] == [['cat'], ['cat']] and calls[0]['seed'] == [10, 11]
    assert calls[0]['height'] == calls[0]['width'] == 576
