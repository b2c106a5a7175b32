"""Pre-flight: a plain mask dataset pointed at a folder a tool wrote is read as the classes the
folder's manifest records (mmdiffseg.preflight_label_files)."""
import json

from mmdiffseg.datasets.class_names import DATASET_CLASSES
from mmdiffseg.preflight_label_files import check_tool_label_folder

MINE = ['background', 'aeroplane', 'bird', 'sheep', 'cow', 'motorbike', 'person']
STEPS = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]


def dataset(root, kind='BaseSegDataset', classes=MINE, **kwargs):
    return dict(type=kind, data_root=str(root), metainfo=dict(classes=classes),
                data_prefix=dict(img_path='images', seg_map_path='labels/SegmentationClass'),
                pipeline=STEPS, **kwargs)


def write_manifest(folder, header):
    """A manifest as the tools write it (their mark: manifest='mmdiffseg')."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / 'manifest.jsonl').write_text(json.dumps(dict(header, manifest='mmdiffseg'))
                                           + '\n{"id": "a"}\n')


def test_a_folder_labelled_with_other_classes_is_named_with_the_dataset_that_checks_it(tmp_path):
    """pseudo_label.py --classes voc, read by a 7-class BaseSegDataset: VOC's bird (3) trained
    as the dataset's sheep, and VOC's 17 stopped the run in mmdet's matching cost."""
    write_manifest(tmp_path / 'labels', dict(tool='pseudo_label', classes=list(
        DATASET_CLASSES['voc'])))
    (item,) = check_tool_label_folder(dataset(tmp_path), 'train_dataloader.dataset')
    assert item.what == (
        f"train_dataloader.dataset (BaseSegDataset) reads {tmp_path}/labels/SegmentationClass, "
        "whose manifest records the classes 'voc' (21 classes), as its classes ['background', "
        "'aeroplane', 'bird', 'sheep', 'cow', 'motorbike', 'person'] (7 classes): a label would "
        'train or score as another class')
    assert item.fix.startswith("read a tool's folder with type='PseudoLabelDataset'")
    assert item.where == ['train_dataloader.dataset.type']


def test_segment_ids_are_named_and_agreeing_or_foreign_folders_pass(tmp_path):
    write_manifest(tmp_path / 'labels' / 'SegmentationClass', dict(tool='segment', classes=None))
    (item,) = check_tool_label_folder(dataset(tmp_path), 'd')
    assert 'whose manifest records unlabelled segment ids (made without class names)' in item.what
    write_manifest(tmp_path / 'labels' / 'SegmentationClass', dict(classes=MINE))
    assert check_tool_label_folder(dataset(tmp_path), 'd') == []
    # the generated-label datasets check their manifest themselves; a dataset that reads no
    # masks, a manifest of another program or none at all: nothing to compare
    write_manifest(tmp_path / 'labels' / 'SegmentationClass', dict(classes=['x']))
    assert check_tool_label_folder(dataset(tmp_path, 'PseudoLabelDataset'), 'd') == []
    assert check_tool_label_folder(dict(dataset(tmp_path), pipeline=STEPS[:1]), 'd') == []
    (tmp_path / 'labels' / 'SegmentationClass' / 'manifest.jsonl').write_text('not json\n')
    assert check_tool_label_folder(dataset(tmp_path), 'd') == []
    (tmp_path / 'labels' / 'SegmentationClass' / 'manifest.jsonl').write_text('[1, 2]\n')
    assert check_tool_label_folder(dataset(tmp_path), 'd') == []
    assert check_tool_label_folder(dataset(tmp_path / 'elsewhere'), 'd') == []


def test_a_stock_dataset_would_remap_a_folder_of_its_own_classes(tmp_path):
    """PascalVOCDataset given the folder's classes maps the files as VOC indices (mmseg's
    label_map: VOC's bird 3 -> 2), which these files are not."""
    write_manifest(tmp_path / 'labels', dict(tool='pseudo_label', classes=MINE))
    assert check_tool_label_folder(dataset(tmp_path), 'd') == []
    (item,) = check_tool_label_folder(dataset(tmp_path, 'PascalVOCDataset'), 'd')
    assert item.what.endswith("whose manifest records the classes ['background', 'aeroplane', "
                              "'bird', 'sheep', 'cow', 'motorbike', 'person'] (7 classes), "
                              "through mmseg's label_map from PascalVOCDataset's own classes: "
                              'a label would train or score as another class')
    write_manifest(tmp_path / 'labels', dict(classes=list(DATASET_CLASSES['voc'])))
    assert check_tool_label_folder(dataset(tmp_path, 'PascalVOCDataset',
                                           classes=list(DATASET_CLASSES['voc'])), 'd') == []


def test_another_programs_manifest_is_not_read_as_a_tools(tmp_path):
    """A labelling program's own manifest.json with a 'classes' entry (of dicts) beside the
    masks refused a legitimate dataset: only the tools' manifests (their mark) are read."""
    folder = tmp_path / 'labels'
    folder.mkdir()
    (folder / 'manifest.json').write_text(json.dumps(dict(
        classes=[dict(id=0, name='background')], exported_by='labelling-tool')))
    assert check_tool_label_folder(dataset(tmp_path), 'd') == []


def test_a_folder_of_0_based_labels_read_with_reduce_zero_label_is_named(tmp_path):
    """pseudo_label.py --classes ade20k writes 0-based labels; ADE20KDataset reads masks with
    reduce_zero_label=True: wall (0) dropped, floor (3) trained as sky (2)."""
    ade = list(DATASET_CLASSES['ade20k'])
    write_manifest(tmp_path / 'labels', dict(tool='pseudo_label', classes=ade))
    (item,) = check_tool_label_folder(dataset(tmp_path, 'ADE20KDataset', classes=ade), 'd')
    assert 'with reduce_zero_label=True (the files: False; class k read as k - 1): a label ' \
        'would train or score as another class' in item.what
    assert check_tool_label_folder(dataset(tmp_path, 'ADE20KDataset', classes=ade,
                                           reduce_zero_label=False), 'd') == []
