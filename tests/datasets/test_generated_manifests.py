"""The manifest header of a generated label folder: a pretty-printed ``manifest.json``, segment
ids, class order, and a header without classes (the stock label map then still applies)."""
import json
import shlex
from pathlib import Path

import numpy as np
import pytest
from mmseg.registry import DATASETS
from PIL import Image
from test_generated_datasets import LOAD, VOC_NAMES, make_synthetic, write_manifest

from mmdiffseg.datasets.generated import read_manifest_header


def one_value_labels(value):
    return lambda name: Image.fromarray(np.full((4, 4), value, np.uint8))


def test_a_pretty_printed_manifest_json_is_read_whole(tmp_path):
    header = dict(tool='pseudo_label', classes=['background', 'cat'])
    (tmp_path / 'manifest.json').write_text(json.dumps(header, indent=2))
    assert read_manifest_header(tmp_path) == header
    (tmp_path / 'manifest.json').write_text('{"classes": [')
    with pytest.raises(ValueError, match='manifest.json: the manifest header is not JSON'):
        read_manifest_header(tmp_path)


def test_segment_ids_and_classes_in_another_order_are_refused(tmp_path):
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    cfg = dict(type='SyntheticDataset', data_root=str(root), pipeline=LOAD,
               metainfo=dict(classes=classes))
    assert len(DATASETS.build(cfg)) == len(VOC_NAMES)
    (root / 'manifest.jsonl').write_text(json.dumps(dict(tool='segment', classes=None)) + '\n')
    with pytest.raises(ValueError, match='are unlabelled segment ids'):
        DATASETS.build(cfg)
    (root / 'manifest.jsonl').write_text(json.dumps(dict(classes=classes[::-1])) + '\n')
    with pytest.raises(ValueError, match=r"index the classes \['cat', 'background'\], but this "
                                         r"dataset has \['background', 'cat'\]"):
        DATASETS.build(cfg)


@pytest.mark.parametrize('dataset, label_set, synthesize', [
    ('SyntheticADE20KDataset', 'ade20k', '--classes ade20k'),
    ('SyntheticVOCDataset', 'voc', '--classes voc'),
    ('SyntheticCityscapesDataset', 'cityscapes_human_vehicle', '--classes cityscapes'),
    (dict(type='SyntheticDataset', metainfo=dict(classes=['background', 'traffic light'])),
     '"background,traffic light,"', '--classes "traffic light,"'),
    (dict(type='SyntheticDataset', metainfo=dict(classes=['wall', 'sky'])),
     '"wall,sky,"', '--classes "wall,sky," --label-set "wall,sky,"')])
def test_other_classes_name_the_options_that_make_this_datasets(tmp_path, dataset, label_set,
                                                                  synthesize):
    """The fix names each tool's options that make labels of the dataset's classes, as the
    tools take them (synthesize.py's class sets and its background, added as class 0)."""
    root = make_synthetic(tmp_path, classes=['background', 'bed', 'car'],
                          labels=one_value_labels(1))
    dataset = dataset if isinstance(dataset, dict) else dict(type=dataset)
    with pytest.raises(ValueError) as error:
        DATASETS.build(dict(dataset, data_root=str(root), pipeline=LOAD))
    assert str(error.value).endswith(
        f'(pseudo_label.py --classes {label_set}; synthesize.py {synthesize}; masks of a subset '
        f'of them: synthesize.py --classes "A,B," --label-set {label_set})')
    from mmdiffseg.apis.cli import resolve_class_arg
    from mmdiffseg.datasets.class_names import SYNTH_CLASS_SETS, synthesis_label_set
    words = shlex.split(synthesize)
    names = resolve_class_arg(words[1], sets=SYNTH_CLASS_SETS)
    made = (resolve_class_arg(words[3], '--label-set') if len(words) > 2 else
            synthesis_label_set(words[1]) if words[1] in SYNTH_CLASS_SETS else
            ['background', *names])                  # as tools/synthesize.py takes them
    assert made == list(DATASETS.get(dataset['type']).METAINFO['classes'] if 'metainfo' not in
                        dataset else dataset['metainfo']['classes'])


def test_a_header_without_classes_keeps_the_stock_label_map(tmp_path):
    """VOC-indexed labels (cat = 8) under a manifest that records no classes, read by a VOC
    dataset narrowed to (background, cat): mmseg's label map still takes 8 to 1."""
    root = make_synthetic(tmp_path, labels=one_value_labels(8))
    (root / 'manifest.jsonl').write_text(json.dumps(dict(tool='synthesize')) + '\n')
    ds = DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD,
                             metainfo=dict(classes=['background', 'cat'])))
    assert ds.label_map[8] == 1 and ds.get_data_info(0)['label_map'] == ds.label_map
    assert np.unique(ds[0]['gt_seg_map']).tolist() == [1]


def test_check_files_sets_how_many_label_files_are_read_at_start_up(tmp_path):
    """A bad value in the second label file: found when two files are checked, not with one."""
    def labels(name):
        return Image.fromarray(np.full((4, 4), 7 if name == VOC_NAMES[1] else 1, np.uint8))
    root = make_synthetic(tmp_path, classes=['background', 'cat'], labels=labels)
    cfg = dict(type='SyntheticDataset', data_root=str(root), pipeline=LOAD,
               metainfo=dict(classes=['background', 'cat']))
    assert len(DATASETS.build(dict(cfg, check_files=1))) == len(VOC_NAMES)
    with pytest.raises(ValueError, match=rf'{VOC_NAMES[1]}.png holds values \[7\] outside'):
        DATASETS.build(dict(cfg, check_files=2))


def test_the_start_up_check_reads_values_with_reduce_zero_label(tmp_path):
    """Files written with reduce_zero_label hold class k as k + 1: the last class (file value 2
    of two classes) loads, and file value 3 is the one outside the classes."""
    classes = ['cat', 'dog']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(2))
    (root / 'manifest.jsonl').write_text(
        json.dumps(dict(classes=classes, reduce_zero_label=True)) + '\n')
    cfg = dict(type='SyntheticDataset', data_root=str(root), pipeline=LOAD,
               metainfo=dict(classes=classes), reduce_zero_label=True)
    assert np.unique(DATASETS.build(cfg)[0]['gt_seg_map']).tolist() == [1]
    one_value_labels(3)(None).save(root / 'SegmentationClass' / f'{VOC_NAMES[0]}.png')
    with pytest.raises(ValueError, match=r'holds values \[2\] outside the 2 classes'):
        DATASETS.build(cfg)


def folder_dataset(root, classes) -> dict:
    """A PseudoLabelDataset of the images in ``root/JPEGImages`` and the labels beside them."""
    return dict(type='PseudoLabelDataset', data_root=str(root), pipeline=LOAD,
                metainfo=dict(classes=classes),
                data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))


def image_paths(dataset) -> list:
    return [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]


def test_pseudo_labels_of_a_whole_folder_skip_hidden_files_and_blank_list_lines(tmp_path):
    """Without ann_file (data_root joined to '' is a folder, not a list) every image of the
    folder is read, but not hidden files such as macOS's '._' copies; a list with a blank line
    reads the names it gives."""
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    (root / 'JPEGImages' / f'._{VOC_NAMES[0]}.jpg').write_bytes(b'\0\0')
    cfg = folder_dataset(root, classes)
    ds = DATASETS.build(cfg)
    assert image_paths(ds) == [
        str(root / 'JPEGImages' / f'{name}.jpg') for name in sorted(VOC_NAMES)]
    (root / 'list.txt').write_text(f'{VOC_NAMES[2]}\n\n{VOC_NAMES[0]}\n')
    ds = DATASETS.build(dict(cfg, ann_file='list.txt'))
    assert image_paths(ds) == [
        str(root / 'JPEGImages' / f'{name}.jpg') for name in (VOC_NAMES[2], VOC_NAMES[0])]


def test_a_tools_output_folder_inside_the_image_folder_is_not_read_as_images(tmp_path):
    """``tools/pseudo_label.py IMAGES --out IMAGES/labels`` (or segment.py's overlays there): the
    dataset walked into it and refused the images as 'two images are named x' (an image and its
    own label), naming the wrong fix (rename or move one)."""
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    out = root / 'JPEGImages' / 'labels'
    (out / 'SegmentationClass').mkdir(parents=True)
    for name in VOC_NAMES:
        one_value_labels(1)(name).save(out / 'SegmentationClass' / f'{name}.png')
    (out / 'manifest.jsonl').write_text(json.dumps(dict(tool='pseudo_label', manifest='mmdiffseg',
                                                        version=1)) + '\n')
    cfg = folder_dataset(root, classes)
    ds = DATASETS.build(cfg)
    assert image_paths(ds) == [
        str(root / 'JPEGImages' / f'{name}.jpg') for name in sorted(VOC_NAMES)]
    # another program's manifest beside images (an export's): those images are read
    extra = root / 'JPEGImages' / 'export'
    extra.mkdir()
    (root / 'JPEGImages' / f'{VOC_NAMES[0]}.jpg').rename(extra / f'{VOC_NAMES[0]}.jpg')
    (extra / 'manifest.json').write_text(json.dumps(dict(exported_by='a labelling tool')))
    ds = DATASETS.build(cfg)
    assert str(extra / f'{VOC_NAMES[0]}.jpg') in image_paths(ds)


def test_only_the_tools_output_folder_itself_is_skipped(tmp_path):
    """Beside a tool's output 'vis/', a folder 'vis2/' and an image 'visit.jpg' (names that begin
    with it) are images; so is a folder whose manifest.json is not JSON (another program's)."""
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    images = root / 'JPEGImages'
    (images / 'vis').mkdir()
    (images / 'vis' / 'manifest.jsonl').write_text(json.dumps(dict(
        tool='segment', manifest='mmdiffseg', version=1)) + '\n')
    (images / 'vis' / 'overlay.jpg').write_bytes((images / f'{VOC_NAMES[0]}.jpg').read_bytes())
    moved = {'visit.jpg': VOC_NAMES[0], f'vis2/{VOC_NAMES[1]}.jpg': VOC_NAMES[1],
             f'photos/{VOC_NAMES[2]}.jpg': VOC_NAMES[2]}
    for rel, name in moved.items():
        (images / rel).parent.mkdir(exist_ok=True)
        (images / f'{name}.jpg').rename(images / rel)
    (root / 'SegmentationClass' / f'{VOC_NAMES[0]}.png').rename(
        root / 'SegmentationClass' / 'visit.png')
    (images / 'photos' / 'manifest.json').write_text('')
    found = {Path(p).relative_to(images).as_posix()
             for p in image_paths(DATASETS.build(folder_dataset(root, classes)))}
    assert set(moved) <= found and 'vis/overlay.jpg' not in found


def test_linked_folders_are_read_and_a_link_to_a_parent_does_not_loop(tmp_path):
    """A link inside the image folder to a parent folder made the recursive listing walk the
    tree again and again until "Too many levels of symbolic links" (OSError); a linked folder
    of images elsewhere is read, and a broken link is left out. A folder reached by two names
    is listed under both (a split file may name either)."""
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    images = root / 'JPEGImages'
    elsewhere = tmp_path / 'more_images'
    elsewhere.mkdir()
    (images / f'{VOC_NAMES[0]}.jpg').rename(elsewhere / f'{VOC_NAMES[0]}.jpg')
    (images / 'more').symlink_to(elsewhere, target_is_directory=True)
    (images / 'more' / 'back').symlink_to(images, target_is_directory=True)
    (images / 'gone.jpg').symlink_to(tmp_path / 'missing.jpg')
    ds = DATASETS.build(folder_dataset(root, classes))
    assert image_paths(ds) == sorted(
        [str(images / 'more' / f'{VOC_NAMES[0]}.jpg')]
        + [str(images / f'{name}.jpg') for name in VOC_NAMES[1:]])
    from mmdiffseg.datasets.file_listing import files_below
    (tmp_path / 'cycle' / 'a').mkdir(parents=True)   # two links that lead into each other
    (tmp_path / 'cycle' / 'c').mkdir()
    (tmp_path / 'cycle' / 'a' / 'x.png').write_bytes(b'')
    (tmp_path / 'cycle' / 'a' / 'to_c').symlink_to(tmp_path / 'cycle' / 'c')
    (tmp_path / 'cycle' / 'c' / 'to_a').symlink_to(tmp_path / 'cycle' / 'a')
    (tmp_path / 'cycle' / 'alias').symlink_to(tmp_path / 'cycle' / 'a')
    assert files_below(str(tmp_path / 'cycle')) == ['a/x.png', 'alias/x.png', 'c/to_a/x.png']


def test_two_images_of_one_name_are_refused_unless_a_suffix_picks_one(tmp_path):
    """x.jpg and x.png beside each other would share the label x.png (the tools refuse such a
    folder too): refused naming both files and the label, whether a list names x or not; with
    img_suffix='.jpg' the JPEGs alone are read."""
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    (root / 'JPEGImages' / f'{VOC_NAMES[1]}.png').write_bytes(
        (root / 'JPEGImages' / f'{VOC_NAMES[1]}.jpg').read_bytes())
    cfg = folder_dataset(root, classes)
    for extra in (dict(), dict(ann_file='ImageSets/Segmentation/train.txt')):
        with pytest.raises(ValueError) as refused:
            DATASETS.build(dict(cfg, **extra))
        message = str(refused.value)
        assert message.startswith(f"PseudoLabelDataset: two images are named '{VOC_NAMES[1]}': ")
        for path in (root / 'JPEGImages' / f'{VOC_NAMES[1]}.jpg',
                     root / 'JPEGImages' / f'{VOC_NAMES[1]}.png',
                     root / 'SegmentationClass' / f'{VOC_NAMES[1]}.png'):
            assert str(path) in message
        assert 'rename or move one, or set img_suffix' in message
    ds = DATASETS.build(dict(cfg, img_suffix='.jpg'))
    assert [Path(ds.get_data_info(i)['img_path']).name for i in range(len(ds))] == [
        f'{name}.jpg' for name in sorted(VOC_NAMES)]


def test_synthetic_datasets_read_the_train_list_by_default(tmp_path):
    """The synthesize tool's layout: the images of ImageSets/Segmentation/train.txt, in its
    order, not every image of the folder."""
    root = make_synthetic(tmp_path)
    (root / 'ImageSets/Segmentation/train.txt').write_text(f'{VOC_NAMES[2]}\n{VOC_NAMES[1]}\n')
    ds = DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD))
    assert image_paths(ds) == [
        str(root / 'JPEGImages' / f'{name}.jpg') for name in (VOC_NAMES[2], VOC_NAMES[1])]


def test_a_data_prefix_without_the_label_folder_is_named(tmp_path):
    root = make_synthetic(tmp_path, classes=['background', 'cat'], labels=one_value_labels(1))
    with pytest.raises(ValueError, match=r'PseudoLabelDataset: data_prefix needs seg_map_path'):
        DATASETS.build(dict(type='PseudoLabelDataset', data_root=str(root), pipeline=LOAD,
                            metainfo=dict(classes=['background', 'cat']),
                            data_prefix=dict(img_path='JPEGImages')))


def test_images_in_sub_folders_take_their_own_labels_or_are_refused(tmp_path):
    """A flat label folder holds one ``<file name>.png`` per image: ``a/x.jpg`` and ``b/x.jpg``
    would share one (b's image trained on a's label), so they are refused with any
    ``img_suffix``; images of distinct names in sub-folders are found by the split lines the
    tools write (the file name without extension) with ``img_suffix=None`` too."""
    classes = ['background', 'cat']
    root = make_synthetic(tmp_path, classes=classes, labels=one_value_labels(1))
    images = root / 'JPEGImages'
    for name, folder in zip(VOC_NAMES, ('city1', 'city2', 'city2')):
        (images / folder).mkdir(exist_ok=True)
        (images / f'{name}.jpg').rename(images / folder / f'{name}.jpg')
    cfg = dict(type='PseudoLabelDataset', data_root=str(root), pipeline=LOAD,
               metainfo=dict(classes=classes), ann_file='ImageSets/Segmentation/train.txt',
               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    for suffix in (None, '.jpg'):
        ds = DATASETS.build(dict(cfg, img_suffix=suffix))
        assert [Path(ds.get_data_info(i)['img_path']).relative_to(images).as_posix()
                for i in range(len(ds))] == [
            f'{folder}/{name}.jpg' for name, folder in zip(VOC_NAMES, ('city1', 'city2', 'city2'))]
    (images / 'city1' / f'{VOC_NAMES[1]}.jpg').write_bytes(
        (images / 'city2' / f'{VOC_NAMES[1]}.jpg').read_bytes())
    for suffix in (None, '.jpg'):
        for extra in (dict(), dict(ann_file=None)):
            with pytest.raises(ValueError) as refused:
                DATASETS.build(dict(cfg, img_suffix=suffix, **extra))
            assert str(refused.value) == (
                f"PseudoLabelDataset: two images are named '{VOC_NAMES[1]}': "
                f'{images}/city1/{VOC_NAMES[1]}.jpg and {images}/city2/{VOC_NAMES[1]}.jpg, but '
                f'one label file {root}/SegmentationClass/{VOC_NAMES[1]}.png would stand for '
                'both; rename or move one')


def test_an_image_folder_that_is_not_there_is_named(tmp_path):
    """With or without a split file and image suffix: the folder is named (os.scandir's bare
    FileNotFoundError before), or the listed images it would hold."""
    cfg = dict(type='PseudoLabelDataset', data_root=str(tmp_path), pipeline=LOAD,
               metainfo=dict(classes=['background', 'cat']),
               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    for suffix in (None, '.jpg'):
        with pytest.raises(FileNotFoundError) as refused:
            DATASETS.build(dict(cfg, img_suffix=suffix))
        assert str(refused.value) == (f'PseudoLabelDataset: image folder {tmp_path}/JPEGImages '
                                      'not found')
    (tmp_path / 'train.txt').write_text('a\n')
    with pytest.raises(FileNotFoundError) as refused:
        DATASETS.build(dict(cfg, img_suffix='.jpg', ann_file='train.txt'))
    assert str(refused.value) == (f"PseudoLabelDataset: 1 listed image(s) do not exist, e.g. "
                                  f"['{tmp_path}/JPEGImages/a.jpg']")


def test_a_folder_whose_tool_run_has_not_ended_says_so_and_the_preflight_names_the_fix(tmp_path):
    """A tool writes the split file when its run ends: a folder with its manifest but without it
    (an interrupted synthesize.py) is named as unfinished, with the command to resume, not as a
    wrong data_prefix."""
    from mmdiffseg.datasets.generated import UnfinishedJobFolder
    from mmdiffseg.preflight_data import check_listed_files
    root = make_synthetic(tmp_path)
    (root / 'ImageSets/Segmentation/train.txt').unlink()
    config = dict(type='SyntheticVOCDataset', data_root=str(root), pipeline=LOAD)
    with pytest.raises(UnfinishedJobFolder, match=r'train.txt not found, but .* holds the '
                                                  r'manifest of a tools/.*\.py run: that run has '
                                                  r'not finished .* rerun its command'):
        DATASETS.build(config)
    problems = check_listed_files(config, 'train_dataloader.dataset')
    assert len(problems) == 1 and "finish the tool's run" in str(problems[0])
    # finished with another split's file (--split aug): named, not called unfinished
    (root / 'ImageSets/Segmentation/aug.txt').write_text('\n'.join(VOC_NAMES) + '\n')
    with pytest.raises(FileNotFoundError) as error:
        DATASETS.build(config)
    assert not isinstance(error.value, UnfinishedJobFolder)
    assert str(error.value).endswith("aug.txt lists the images the tool labelled (it leaves out "
                                     "those it could not): set ann_file to it")
    (root / 'ImageSets/Segmentation/aug.txt').unlink()
    (root / 'manifest.jsonl').unlink()
    with pytest.raises(FileNotFoundError) as error:
        DATASETS.build(config)
    assert not isinstance(error.value, UnfinishedJobFolder)


def test_a_label_folders_own_manifest_is_read_before_its_parents(tmp_path):
    """A label folder with its own manifest inside a folder whose manifest names other classes:
    the label folder's is the one that describes its labels (read after the parent's, a cat
    folder in a dog job folder was refused, and the reverse taken silently)."""
    root = make_synthetic(tmp_path, classes=['background', 'dog'], labels=one_value_labels(1))
    write_manifest(root / 'SegmentationClass', ['background', 'cat'])
    cfg = dict(type='SyntheticDataset', data_root=str(root), pipeline=LOAD)
    DATASETS.build(dict(cfg, metainfo=dict(classes=['background', 'cat'])))
    with pytest.raises(ValueError, match=r"index the classes \['background', 'cat'\]"):
        DATASETS.build(dict(cfg, metainfo=dict(classes=['background', 'dog'])))
