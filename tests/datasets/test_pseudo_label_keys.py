"""LoadPseudoLabel: the label key follows the order of the image-level names, a ``gt_seg_map``
already in ``seg_fields`` is listed once (so a flip applies once), and a packed miss carries
what the online labeler needs."""
import json

import numpy as np
import torch
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

from mmdiffseg.datasets import LabelCache, label_key
from mmdiffseg.datasets.cache_settings import canonical_cache_spec
from mmdiffseg.generators.base import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS

init_default_scope('mmseg')


@MASK_GENERATORS.register_module(force=True)
class KeyOrderGenerator(MaskGenerator):
    """Only its config matters here (cache signatures)."""
    method = 'key-order'

    def config_dict(self):
        return dict(method=self.method, classes=self.classes)


def setup(tmp_path, names):
    img = tmp_path / 'pic.png'
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(img)
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'pic': names}))
    cache = dict(cache_dir=str(tmp_path / 'cache'), model='some/hub-model',
                 generator=dict(type='KeyOrderGenerator', classes=['background', 'cat', 'dog']))
    load = [dict(type='LoadImageFromFile'),
            dict(type='LoadImageLevelLabels', classes='voc', ann_file=str(ann)),
            dict(type='LoadPseudoLabel', cache=cache)]
    return img, cache, load


def test_the_label_key_keeps_the_order_of_the_image_level_names(tmp_path):
    """Prompts follow the names' order, so the key is made from them as listed, not sorted."""
    img, _, load = setup(tmp_path, ['dog', 'cat'])
    out = Compose(load)(dict(img_path=str(img), seg_fields=[]))
    assert out['image_labels'] == ['dog', 'cat']
    assert out['pseudo_label_key'] == label_key(img.read_bytes(), ['dog', 'cat'])
    assert out['pseudo_label_key'] != label_key(img.read_bytes(), ['cat', 'dog'])


def test_a_listed_gt_seg_map_is_not_listed_twice_and_flips_once(tmp_path):
    img, cache, load = setup(tmp_path, ['cat'])
    label = np.array([[0, 1, 2], [3, 4, 5]], np.uint8)
    LabelCache(**cache).save(label_key(img.read_bytes(), ['cat']), label)
    flip = dict(type='RandomFlip', prob=1.0, direction='horizontal')
    out = Compose(load + [flip])(dict(img_path=str(img), seg_fields=['gt_seg_map']))
    assert out['pseudo_label_cached'] is True
    assert out['seg_fields'] == ['gt_seg_map']
    assert out['gt_seg_map'].tolist() == [[2, 1, 0], [5, 4, 3]]


def test_a_packed_miss_carries_the_label_cache_settings_and_key(tmp_path):
    """The online labeler binds its cache from the sample's ``pseudo_label_cache`` metainfo: the
    packed sample holds the canonical settings given to LoadPseudoLabel, the key of the image
    bytes and names, and the identity index map of the 2x3 image."""
    img, cache, load = setup(tmp_path, ['cat'])
    pack = dict(type='PackPseudoLabelInputs')
    packed = Compose(load + [pack])(dict(img_path=str(img), seg_fields=[]))
    meta = packed['data_samples'].metainfo
    assert meta['pseudo_label_cache'] == canonical_cache_spec(cache)
    assert meta['pseudo_label_key'] == label_key(img.read_bytes(), ['cat'])
    assert meta['pseudo_label_cached'] is False and meta['image_labels'] == ['cat']
    index = packed['data_samples'].pseudo_label_index.data
    assert index.dtype == torch.int64 and index.tolist() == [[[0, 1, 2], [3, 4, 5]]]


def test_a_transform_that_moves_the_image_before_it_is_refused(tmp_path):
    """The label (or its source-index map) is made at the image's size as loaded: after a
    resize or crop it would be placed wrong (0.9% of pixels right on a cold cache), so the
    order is refused with the fix."""
    import pytest
    img, _, load = setup(tmp_path, ['cat'])
    resize = dict(type='Resize', scale=(6, 4), keep_ratio=False)
    with pytest.raises(ValueError, match=r"^LoadPseudoLabel: the image .*pic\.png is \(6, 4\) here "
                                         r'but \(3, 2\) as loaded: put LoadPseudoLabel right after'):
        Compose(load[:2] + [resize, load[2]])(dict(img_path=str(img), seg_fields=[]))
    assert Compose(load + [resize])(dict(img_path=str(img), seg_fields=[]))['gt_seg_map'].shape \
        == (4, 6, 4)  # after it: the source-index map moves with the image
