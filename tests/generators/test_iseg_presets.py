"""iSeg's released layer and head lists (ALGORITHMS.md 3.1-3.2, from ``wsss/arguments.py`` and
``wsss/iSeg.py``): the head indices count heads layer-major over the layers in forward order, so
both the lists and the layers' order are pinned here against the documented release."""
from mmdiffseg.generators.iseg_presets import CROSS_LAYERS, SD21_VOC_HEADS


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
