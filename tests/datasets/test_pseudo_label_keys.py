"""LoadPseudoLabel: the label key follows the order of the image-level names, and a
``gt_seg_map`` already in ``seg_fields`` is listed once (so a flip applies once)."""
import json

import numpy as np
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope
from PIL import Image

from mmdiffseg.datasets import LabelCache, label_key
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
