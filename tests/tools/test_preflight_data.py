"""Pre-flight data checks (mmdiffseg.preflight_data) called directly: the fix named for each
kind of missing data path, and a ``data_root`` one folder off."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmdiffseg.datasets.transforms import LoadImageLevelLabels
from mmdiffseg.preflight_data import (COCOSTUFF_FIX, ELSEWHERE, PSEUDO_FIX, SYNTHETIC_FIX,
                                      check_dataset, check_image_level_labels,
                                      check_listed_files, data_fix, unknown_names)


def test_generated_folders_are_made_where_the_dataset_reads_them():
    """Synthetic data is written to the data root (else beside the path); pseudo labels to the
    folder holding ``SegmentationClass``."""
    synthetic = dict(type='SyntheticVOCDataset', data_root='data/synth')
    assert data_fix(synthetic, Path('data/synth/img/train'), 'img_path') == \
        SYNTHETIC_FIX.format(out='data/synth') + ELSEWHERE
    assert data_fix(dict(type='SyntheticVOCDataset'), Path('a/b/img'), 'img_path') == \
        SYNTHETIC_FIX.format(out='a/b') + ELSEWHERE
    pseudo = dict(type='PseudoLabelDataset', data_root='r')
    assert data_fix(pseudo, Path('out/SegmentationClass'), 'seg_map_path') == \
        PSEUDO_FIX.format(out='out') + ELSEWHERE
    assert data_fix(pseudo, Path('out/labels'), 'seg_map_path') == \
        PSEUDO_FIX.format(out='out/labels') + ELSEWHERE


def test_coco_stuff_is_named_by_its_dataset_type_outside_its_folder():
    """A COCO-Stuff dataset whose root has another name still gets the COCO-Stuff downloads."""
    dataset = dict(type='COCOStuffDataset', data_root='/data/coco')
    assert data_fix(dataset, Path('/data/coco/images'), 'img_path') == \
        COCOSTUFF_FIX.format(root='/data/coco') + ELSEWHERE


def test_an_absolute_split_file_is_not_blamed_on_the_data_root(tmp_path):
    """A data root holding ``VOC2012/`` looks one folder off only for paths inside it: an
    absolute split file that is missing is named as such."""
    (tmp_path / 'VOC2012').mkdir()
    split = tmp_path / 'elsewhere' / 'train.txt'
    dataset = dict(type='PascalVOCDataset', data_root=str(tmp_path), ann_file=str(split))
    (item,) = check_dataset(dataset, 'train_dataloader.dataset')
    assert item.what == f'PascalVOCDataset split file {split} not found'
    dataset['ann_file'] = 'train.txt'
    (item,) = check_dataset(dataset, 'train_dataloader.dataset')
    assert item.what == (f'PascalVOCDataset data root {tmp_path} looks one folder off: it holds '
                         'VOC2012/ but not train.txt')
    assert item.fix == f'--cfg-options train_dataloader.dataset.data_root={tmp_path}/VOC2012'


def test_a_data_root_that_is_a_file_is_named_as_missing(tmp_path):
    """A file in the data root's place is no data root: named with the fix, nothing under it
    looked for."""
    (tmp_path / 'voc').write_text('')
    dataset = dict(type='PascalVOCDataset', data_root=str(tmp_path / 'voc'), ann_file='a.txt')
    (item,) = check_dataset(dataset, 'train_dataloader.dataset')
    assert item.what == f'PascalVOCDataset data root {tmp_path}/voc does not exist'
    assert item.fix == data_fix(dataset, tmp_path / 'voc', 'data_root')


def test_a_split_file_must_be_a_file_and_an_image_folder_a_folder(tmp_path):
    """A folder where the split file should be, and a file where the image folder should be,
    are each named as missing."""
    (tmp_path / 'split').mkdir()
    (tmp_path / 'JPEGImages').write_text('')
    dataset = dict(type='PascalVOCDataset', data_root=str(tmp_path), ann_file='split',
                   data_prefix=dict(img_path='JPEGImages'))
    found = [m.what for m in check_dataset(dataset, 'train_dataloader.dataset')]
    assert found == [f'PascalVOCDataset split file {tmp_path}/split not found',
                     f'PascalVOCDataset folder {tmp_path}/JPEGImages not found']


def test_a_stock_dataset_that_cannot_list_its_split_is_named_with_the_fix(tmp_path):
    """PascalVOCDataset without a split file (``ann_file=''``: check_dataset has no path to
    look for) stops the run with mmseg's bare AssertionError: named with the split file to
    give, or the dataset for a folder without one; another listing error with its text."""
    dataset = dict(type='PascalVOCDataset', data_root=str(tmp_path), ann_file='',
                   data_prefix=dict(img_path='.'))
    assert check_dataset(dataset, 'train_dataloader.dataset') == []
    (item,) = check_listed_files(dataset, 'train_dataloader.dataset')
    assert item.what == ('PascalVOCDataset cannot list its images: it needs a split file '
                         "(ann_file), and train_dataloader.dataset.ann_file is ''")
    assert item.fix.startswith('set train_dataloader.dataset.ann_file to a file listing the '
                               'image names')
    (tmp_path / 'split.txt').write_bytes(b'\xff\xfe names')
    (item,) = check_listed_files(dict(dataset, type='BaseSegDataset', ann_file='split.txt'), 'd')
    assert item.what.startswith('BaseSegDataset cannot list its images: UnicodeDecodeError: ')


def test_unknown_class_names_are_listed_five_at_most_with_their_edits():
    """Up to five unknown names, each with its images (three at most) and the nearest class
    (case ignored as a second try) or ``drop``; the rest counted."""
    labels = {'i1': ['PERSON', 'qqqq'], 'i2': ['qqqq'], 'i3': ['qqqq', 'cat'], 'i4': ['u1'],
              'i5': ['u2'], 'i6': ['u3'], 'i7': ['u4']}
    count, listed, edits = unknown_names(labels, ['cat', 'dog', 'person'])
    assert count == 6
    assert listed == ("'PERSON' (1 image(s), e.g. 'i1') (did you mean 'person'?); "
                      "'qqqq' (3 image(s), e.g. 'i1', 'i2', 'i3'); 'u1' (1 image(s), e.g. 'i4'); "
                      "'u2' (1 image(s), e.g. 'i5'); 'u3' (1 image(s), e.g. 'i6'); and 1 more")
    assert edits == "'PERSON' -> 'person', drop 'qqqq', drop 'u1', drop 'u2', drop 'u3', ..."
    assert unknown_names({'i1': ['cat']}, ['cat']) is None
    # ADE20K's 'bed ' (mmseg's spelling) written 'bed': read as it, as LoadImageLevelLabels and
    # pseudo_label.py read it (the pre-flight refused a file that trains)
    assert unknown_names({'i1': ['bed', 'wall']}, ['wall', 'bed ']) is None


def test_another_datasets_names_are_fixed_to_this_ones_and_background_is_not_a_look_alike():
    """VOC's names in a COCO label file map to COCO's (tvmonitor -> tv, sofa -> couch,
    aeroplane -> airplane), not dropped or a look-alike; 'background', no class of Context 59,
    is dropped with why, not turned into 'ground' (a real class)."""
    from mmdiffseg.generators.class_names import COCO_OBJECT_CLASSES, CONTEXT59_CLASSES
    _, listed, edits = unknown_names({'i1': ['tvmonitor', 'sofa', 'aeroplane']},
                                     COCO_OBJECT_CLASSES)
    assert edits == "'tvmonitor' -> 'tv', 'sofa' -> 'couch', 'aeroplane' -> 'airplane'"
    _, _, edits = unknown_names({'i1': ['Background']}, COCO_OBJECT_CLASSES)
    assert edits == "'Background' -> 'background'"    # a class of this set: its spelling
    _, _, edits = unknown_names({'i1': ['background', 'tv', 'diningtable']}, CONTEXT59_CLASSES)
    assert edits == ("drop 'background' (no class here: pixels of no listed class are its own), "
                     "'tv' -> 'tvmonitor', 'diningtable' -> 'table'")


def test_an_image_of_32_bit_samples_is_named_with_the_folder_the_split_lists(tmp_path):
    """A float TIFF (Pillow reads it, OpenCV does not) in a split listed by its image folder (no
    split file): named with that folder, and the fix names no split file."""
    (tmp_path / 'img').mkdir()
    image = tmp_path / 'img' / 'a.tif'
    Image.fromarray(np.zeros((2, 3), np.float32)).save(image)
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.tif',
                   data_prefix=dict(img_path='img'), pipeline=[])
    (item,) = check_listed_files(dataset, 'd')
    assert item.what.startswith(f"BaseSegDataset: 1 of the 1 images of the split ({tmp_path}/img) "
                                f"are no image OpenCV reads (e.g. '{image}': 32-bit samples (F)")
    assert item.what.endswith('convert it to 8 or 16 bits per sample)')
    assert item.fix == 'replace them with the images, or remove them' and item.where == ['d']
    for index in range(1, 53):   # many: each named (one per rerun of the check otherwise)
        (tmp_path / 'img' / f'b{index:02d}.tif').write_bytes(b'not an image')
    (item,) = check_listed_files(dataset, 'd')
    assert item.what.startswith('BaseSegDataset: 53 of the 53 images')
    assert item.what.endswith('; they are a.tif, b01.tif, b02.tif, ' + ''.join(
        f'b{i:02d}.tif, ' for i in range(3, 49)) + 'b49.tif and 3 more')


def test_an_unknown_class_set_is_named_before_its_label_file_is_read(tmp_path):
    """A class-set name that is none ('nosuch', 'VOC') is reported under the step's classes,
    naming the sets, whether the label file is there, missing or left to the ground truth (the
    transform would refuse it only when the run builds the dataset, after the model)."""
    labels = tmp_path / 'labels.json'
    labels.write_text('{"a": ["dog"]}')
    step = dict(type='LoadImageLevelLabels', ann_file=str(labels), classes='nosuch')
    for given in (step, dict(step, ann_file=str(tmp_path / 'gone.json')),
                  dict(step, ann_file=None), dict(step, classes='VOC')):
        (item,) = check_image_level_labels(given, 'p.1')
        assert item.what == f"p.1.classes {given['classes']!r} is no class set"
        assert item.where == ['p.1.classes']
        assert item.fix.startswith('set p.1.classes to one of voc, cityscapes, ade20k, ')
    with pytest.raises(KeyError, match="unknown class set 'nosuch'"):
        LoadImageLevelLabels('nosuch', str(labels))
    (item,) = check_image_level_labels(dict(step, classes=['cat']), 'p.1')
    assert "'dog' (1 image(s), e.g. 'a')" in item.what


def test_an_empty_split_is_named_before_the_run_starts(tmp_path):
    """An empty split file, or an image folder with no image of the suffix, lists no images:
    named with its path (mmengine would stop at the first batch, on an empty concatenation)."""
    (tmp_path / 'img').mkdir()
    (tmp_path / 'ann').mkdir()
    (tmp_path / 'train.txt').write_text('')
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.jpg',
                   data_prefix=dict(img_path='img', seg_map_path='ann'), pipeline=[])
    (item,) = check_listed_files(dict(dataset, ann_file='train.txt'), 'd')
    assert item.what == f'BaseSegDataset: the split file {tmp_path}/train.txt lists no images'
    assert item.fix.startswith('write the names of its images in it') and item.where == ['d']
    (item,) = check_listed_files(dataset, 'd')
    assert item.what.startswith(f'BaseSegDataset: the image folder {tmp_path}/img holds no '
                                'images')
    assert item.fix.endswith('or set d.img_suffix to their suffix')
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / 'img' / 'a.jpg')
    assert check_listed_files(dataset, 'd') == []


def test_two_images_of_one_name_in_sub_folders_are_named_against_image_level_labels(tmp_path):
    """A class-folder layout (``dog/001.jpg``, ``cat/001.jpg``; mmseg's folder listing walks
    sub-folders) under a label file keyed by name without suffix: both images would take the
    one entry's classes (the cat trained as a dog), so the split is refused naming both."""
    for folder in ('dog', 'cat'):
        (tmp_path / 'img' / folder).mkdir(parents=True)
        Image.new('RGB', (4, 3)).save(tmp_path / 'img' / folder / '001.jpg')
    Image.new('RGB', (4, 3)).save(tmp_path / 'img' / '002.jpg')
    labels = tmp_path / 'labels.json'
    labels.write_text('{"001": ["dog"], "002": ["cat"]}')
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.jpg',
                   data_prefix=dict(img_path='img'), pipeline=[])
    step = dict(type='LoadImageLevelLabels', ann_file=str(labels), classes='voc')
    (item,) = check_image_level_labels(step, 'p.1', dataset)
    pair = sorted(item.what.split('(e.g. ')[1].split(')')[0].split(' and '))
    assert pair == [f'{tmp_path}/img/cat/001.jpg', f'{tmp_path}/img/dog/001.jpg']
    assert item.what.startswith(f'image-level labels {labels} are looked up by file name '
                                'without suffix, but 1 name(s) of the split belong to several')
    assert item.where == ['p.1']
    (tmp_path / 'img' / 'cat' / '001.jpg').rename(tmp_path / 'img' / 'cat' / '003.jpg')
    labels.write_text('{"001": ["dog"], "002": ["cat"], "003": ["cat"]}')
    assert check_image_level_labels(step, 'p.1', dataset) == []


def test_images_cut_short_are_named_and_whole_ones_with_data_after_their_end_pass(tmp_path):
    """A JPEG or PNG cut short stops training's LoadImageFromFile (OpenCV 5 decodes none),
    so the split's check names it; one not ending as its format ends is decoded to be sure, so
    a whole JPEG with bytes after its end (as some cameras write) passes."""
    from mmdiffseg.preflight_images import unreadable_images
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8))
    paths = {}
    for name, suffix, extra in (('whole', 'jpg', b''), ('tail', 'jpg', b'camera data'),
                                ('cut', 'jpg', None), ('whole_png', 'png', b''),
                                ('cut_png', 'png', None)):
        path = paths[name] = tmp_path / f'{name}.{suffix}'
        rgb.save(path)
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 2] if extra is None else data + extra)
    assert unreadable_images(str(p) for p in paths.values()) == [
        (str(paths['cut']), 'a JPEG cut short, which OpenCV cannot decode'),
        (str(paths['cut_png']), 'a PNG cut short, which OpenCV cannot decode')]
    (tmp_path / 'img').mkdir()
    for path in paths.values():
        path.rename(tmp_path / 'img' / path.name)
    dataset = dict(type='BaseSegDataset', data_root=str(tmp_path), img_suffix='.jpg',
                   data_prefix=dict(img_path='img'), pipeline=[])
    (item,) = check_listed_files(dataset, 'd')
    assert item.what == (f'BaseSegDataset: 1 of the 3 images of the split ({tmp_path}/img) are '
                         f"no image OpenCV reads (e.g. '{tmp_path}/img/cut.jpg': a JPEG cut "
                         'short, which OpenCV cannot decode)')
