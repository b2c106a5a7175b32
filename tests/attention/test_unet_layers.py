"""unet_attention_layers on small U-Nets built on the meta device (layout only, no weights):
forward order past nine transformer blocks, and a U-Net whose module tree changed."""
import torch
from diffusers import UNet2DConditionModel

from mmdiffseg.attention.unet_layers import attention_modules, unet_attention_layers


def _unet(**kwargs):
    config = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                  down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                  up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=8,
                  attention_head_dim=4)
    with torch.device('meta'):
        return UNet2DConditionModel(**dict(config, **kwargs))


def test_eleven_transformer_blocks_are_in_forward_order():
    """Indices compare as numbers: block 10 runs after block 9, not after block 1."""
    unet = _unet(transformer_layers_per_block=11)
    layers = unet_attention_layers(unet, 8)
    names = [layer.name for layer in layers if layer.name.startswith('down_blocks')]
    assert names == [f'down_blocks.0.attentions.0.transformer_blocks.{i}.attn{j}'
                     for i in range(11) for j in (1, 2)]
    resolutions = {(layer.name.split('.')[0], layer.resolution) for layer in layers}
    assert resolutions == {('down_blocks', 8), ('mid_block', 4), ('up_blocks', 8)}


def test_a_removed_attention_block_is_dropped_from_the_kept_layer_list():
    """A block list replaced by a shorter one (the kept path ``down_blocks.0.attentions.1`` gone)
    and a mid block set to None: the layers are found again, without them."""
    unet = _unet(layers_per_block=2)
    kept = [name for _, name, _ in attention_modules(unet)]
    assert any(name.startswith('down_blocks.0.attentions.1.') for name in kept)
    block = unet.down_blocks[0]
    block.attentions = torch.nn.ModuleList([block.attentions[0]])
    unet.mid_block = None
    names = [name for _, name, _ in attention_modules(unet)]
    assert names == [name for name in kept if not name.startswith(
        ('down_blocks.0.attentions.1.', 'mid_block.'))]
