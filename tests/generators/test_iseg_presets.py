"""iSeg's released layer and head lists (ALGORITHMS.md 3.1-3.2, from ``wsss/arguments.py`` and
``wsss/iSeg.py``): the head indices count heads layer-major over the layers in forward order, so
both the lists and the layers' order are pinned here against the documented release."""
import re
from pathlib import Path

import pytest

from mmdiffseg.generators.iseg_presets import (CROSS_LAYERS, ISEG_PRESETS, RELEASED_CLASS_ORDER,
                                               SD21_VOC_HEADS, head_layout_fix)

REPO = Path(__file__).resolve().parents[2]


def attn2(block: str, attention: int) -> str:
    return f'{block}.attentions.{attention}.transformer_blocks.0.attn2'


def test_cross_layers_are_the_released_ones_in_forward_order():
    """16x16: down_blocks[2].attentions[0, 1], then up_blocks[1].attentions[0, 1, 2]; 32x32:
    down_blocks[1].attentions[1], then up_blocks[2].attentions[0, 1]."""
    assert CROSS_LAYERS[16] == (attn2('down_blocks.2', 0), attn2('down_blocks.2', 1),
                                attn2('up_blocks.1', 0), attn2('up_blocks.1', 1),
                                attn2('up_blocks.1', 2))
    assert CROSS_LAYERS[32] == (attn2('down_blocks.1', 1), attn2('up_blocks.2', 0),
                                attn2('up_blocks.2', 1))


def test_voc_head_lists_are_the_released_ones_in_their_order():
    """The hand-picked VOC heads of ALGORITHMS.md 3.2, within SD 2.1-base's 5 x 20 heads at
    16x16 and 3 x 10 at 32x32, none twice."""
    assert SD21_VOC_HEADS[32] == (22, 5, 21, 13, 8, 27, 28, 6, 25)
    assert SD21_VOC_HEADS[16] == (
        76, 1, 43, 17, 81, 6, 44, 27, 2, 8, 22, 20, 60, 78, 12, 83, 94, 47, 88, 96, 3, 33, 46,
        52, 77, 93, 51, 58, 0, 13, 14, 19, 34, 41, 59, 87, 16, 24, 28, 30, 32)
    for r, total in ((16, 5 * 20), (32, 3 * 10)):
        heads = SD21_VOC_HEADS[r]
        assert len(set(heads)) == len(heads) and max(heads) < total


def test_an_unknown_preset_is_refused_naming_the_known_ones():
    """A misspelt preset names every known one (the fix), not just the bad name."""
    from mmdiffseg.generators.iseg import ISeg
    with pytest.raises(KeyError) as error:
        ISeg(preset='wsss_vco')
    assert "'wsss_vco'" in str(error.value)
    assert str(sorted(ISEG_PRESETS)) in str(error.value)
    assert {'wsss_voc_sd1x', 'ovs_voc_sd1x', 'ovs_context'} <= set(ISEG_PRESETS)
    with pytest.raises(KeyError, match="unknown preset ''"):  # only None means no preset
        ISeg(preset='')


def test_the_head_layout_fix_key_is_where_a_training_config_keeps_its_generator():
    """The fix's training-config key (``train_dataloader.dataset.pipeline.2.cache.generator``)
    is the label cache's ISeg generator in the online iSeg training config, and setting the
    two keys there as the fix says gives a generator that averages all heads."""
    from mmdiffseg.compat import config_fromfile
    from mmdiffseg.registry import MASK_GENERATORS
    fix = head_layout_fix()
    [key] = re.findall(r'train_dataloader\.[\w.]+\.generator', fix)
    cfg = config_fromfile(str(REPO / 'configs/mask2former/'
                              'mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'))
    node = cfg
    for part in key.split('.'):
        node = node[int(part)] if part.isdigit() else node[part]
    assert node['type'] == 'ISeg'
    cfg.merge_from_dict({f'{key}.{k}': None for k in ('cross_heads', 'self_heads')})
    gen = MASK_GENERATORS.build(cfg.train_dataloader.dataset.pipeline[2].cache.generator)
    assert (gen.cross_heads, gen.self_heads) == (None, None)


def test_released_context_order_is_a_permutation_of_the_dataset_classes():
    """Every Context 59 class once, VOC's 20 first in VOC's order, and the documented released
    ids (1-based, 0 = background): person 15, grass 36, sky 50."""
    from mmseg.datasets import PascalContextDataset59, PascalVOCDataset
    order = RELEASED_CLASS_ORDER['context59']
    assert sorted(order) == sorted(PascalContextDataset59.METAINFO['classes'])
    voc = [c for c in PascalVOCDataset.METAINFO['classes'] if c != 'background']
    assert [{'diningtable': 'table'}.get(c, c) for c in voc] == list(order[:20])
    assert (order.index('person') + 1, order.index('grass') + 1, order.index('sky') + 1) == \
        (15, 36, 50)
