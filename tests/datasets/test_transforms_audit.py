"""Transforms audit: what a packed sample carries for the online labeler, and the image-level
names an annotation file gives (the excluded names are dropped there too)."""
import json

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

from mmdiffseg.datasets import LoadImageLevelLabels, label_key
from mmdiffseg.datasets.label_cache import canonical_cache_spec
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS

init_default_scope('mmseg')


@MASK_GENERATORS.register_module(force=True)
class AuditConfigGenerator(MaskGenerator):
    """Only its config matters here (cache signatures)."""
    method = 'audit'

    def config_dict(self):
        return dict(method=self.method, classes=self.classes)


def pipeline(tmp_path, names, pack=True):
    """A 2x3 image whose annotation file lists ``names``, loaded through the pseudo-label steps."""
    img = tmp_path / 'pic.png'
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(img)
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'pic': names}))
    cache = dict(cache_dir=str(tmp_path / 'cache'), model='some/hub-model',
                 generator=dict(type='AuditConfigGenerator', classes=['background', 'cat']))
    steps = [dict(type='LoadImageFromFile'),
             dict(type='LoadImageLevelLabels', classes='voc', ann_file=str(ann)),
             dict(type='LoadPseudoLabel', cache=cache)]
    return img, cache, Compose(steps + ([dict(type='PackPseudoLabelInputs')] if pack else []))


def test_a_packed_miss_carries_the_label_cache_settings_and_key(tmp_path):
    """The online labeler binds its cache from the sample's ``pseudo_label_cache`` metainfo: the
    packed sample holds the canonical settings given to LoadPseudoLabel, the key of the image
    bytes and names, and the identity index map of the 2x3 image."""
    img, cache, load = pipeline(tmp_path, ['cat'])
    packed = load(dict(img_path=str(img), seg_fields=[]))
    meta = packed['data_samples'].metainfo
    assert meta['pseudo_label_cache'] == canonical_cache_spec(cache)
    assert meta['pseudo_label_key'] == label_key(img.read_bytes(), ['cat'])
    assert meta['pseudo_label_cached'] is False and meta['image_labels'] == ['cat']
    index = packed['data_samples'].pseudo_label_index.data
    assert index.dtype == torch.int64 and index.tolist() == [[[0, 1, 2], [3, 4, 5]]]


def test_annotation_file_names_drop_the_excluded_classes(tmp_path):
    """'background' listed in an annotation file is dropped as from ground truth (generators
    label it themselves); ``exclude=()`` keeps it, in the file's order."""
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'room': ['dog', 'background', 'cat']}))
    sample = dict(img_path='/data/room.jpg')
    default = LoadImageLevelLabels(classes='voc', ann_file=str(ann))(dict(sample))
    assert default['image_labels'] == ['dog', 'cat']
    kept = LoadImageLevelLabels(classes='voc', ann_file=str(ann), exclude=())(dict(sample))
    assert kept['image_labels'] == ['dog', 'background', 'cat']


def test_a_ground_truth_pixel_of_the_ignore_index_names_no_class(tmp_path):
    """Ground-truth values 255 (ignored) are no class; with ``exclude=()`` background (0) is
    listed, classes in index order whatever their pixel order."""
    seg = tmp_path / 'gt.png'
    Image.fromarray(np.array([[255, 12, 0, 8, 255]], np.uint8)).save(seg)
    sample = dict(img_path='x.png', seg_map_path=str(seg), reduce_zero_label=False)
    out = LoadImageLevelLabels(classes='voc', exclude=())(sample)
    assert out['image_labels'] == ['background', 'cat', 'dog']
