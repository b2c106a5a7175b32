"""Mutation audit of generated.py: which manifest a label folder's header is read from, and
the errors naming a missing list, image set or label folder."""
import json

import pytest
from mmseg.registry import DATASETS
from test_generated_datasets import LOAD, VOC_NAMES, make_synthetic

from mmdiffseg.datasets import DATASET_CLASSES
from mmdiffseg.datasets.generated import read_manifest_header

VOC = DATASET_CLASSES['voc']


def test_manifest_jsonl_is_read_before_manifest_json(tmp_path):
    """A folder holding both: the header is the first line of manifest.jsonl (the tools' file),
    as documented; manifest.json is read only without it."""
    (tmp_path / 'manifest.jsonl').write_text(json.dumps(dict(classes=['a'])) + '\n{"id": 1}\n')
    (tmp_path / 'manifest.json').write_text(json.dumps(dict(classes=['b']), indent=2))
    assert read_manifest_header(tmp_path) == dict(classes=['a'])
    (tmp_path / 'manifest.jsonl').unlink()
    assert read_manifest_header(tmp_path) == dict(classes=['b'])


def test_a_missing_list_image_folder_or_label_folder_is_named(tmp_path):
    """Each missing input gets its own error naming it: the ann_file list, images with the
    suffix, the label folder (not a generic 'no such file' or an empty dataset)."""
    root = make_synthetic(tmp_path / 'r', classes=['background', 'cat'])
    cfg = dict(type='PseudoLabelDataset', data_root=str(root), pipeline=LOAD,
               metainfo=dict(classes=['background', 'cat']), img_suffix='.jpg',
               data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
    with pytest.raises(FileNotFoundError, match=r'ann_file \S+/nolist.txt not found'):
        DATASETS.build(dict(cfg, ann_file='nolist.txt'))
    with pytest.raises(FileNotFoundError, match=r"no images ending in '.bmp' in \S+JPEGImages"):
        DATASETS.build(dict(cfg, img_suffix='.bmp'))
    with pytest.raises(FileNotFoundError, match=r'label folder \S+/nolabels not found'):
        DATASETS.build(dict(cfg, data_prefix=dict(img_path='JPEGImages',
                                                  seg_map_path='nolabels')))


def test_an_ann_file_that_is_a_folder_lists_every_image_as_mmseg_does(tmp_path):
    """ann_file naming a folder (mmseg's BaseSegDataset then scans the images) is no list: every
    image of img_path is read, sorted, not 'ann_file not found'."""
    root = make_synthetic(tmp_path / 'r')
    ds = DATASETS.build(dict(type='PseudoLabelDataset', data_root=str(root), pipeline=LOAD,
                             metainfo=dict(classes=list(VOC)), img_suffix='.jpg',
                             ann_file='ImageSets', data_prefix=dict(
                                 img_path='JPEGImages', seg_map_path='SegmentationClass')))
    assert [ds.get_data_info(i)['img_path'] for i in range(len(ds))] == [
        str(root / 'JPEGImages' / f'{name}.jpg') for name in sorted(VOC_NAMES)]
