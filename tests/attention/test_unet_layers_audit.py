"""unet_attention_layers on a two-level U-Net built on the meta device: the divisibility a latent
needs is the U-Net's own downsampling (2 ** (levels - 1)), and a module at an attention path that
is no attention module (no ``set_processor``) is no layer."""
import pytest
import torch
from diffusers import UNet2DConditionModel

from mmdiffseg.attention.unet_layers import attention_modules, unet_attention_layers


def _unet():
    config = dict(block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                  down_block_types=('CrossAttnDownBlock2D', 'DownBlock2D'),
                  up_block_types=('UpBlock2D', 'CrossAttnUpBlock2D'), cross_attention_dim=8,
                  attention_head_dim=4)
    with torch.device('meta'):
        return UNet2DConditionModel(**config)


def test_a_latent_need_only_be_divisible_by_the_unets_downsampling():
    """Two levels halve the latent once: side 6 runs (grids 6 and 3), side 5 is refused with the
    image-size multiple (16) named."""
    unet = _unet()
    sides = {(layer.name.split('.')[0], layer.resolution)
             for layer in unet_attention_layers(unet, 6)}
    assert sides == {('down_blocks', 6), ('mid_block', 3), ('up_blocks', 6)}
    with pytest.raises(ValueError, match=r'^latent size 5 is not divisible by 2 \(the U-Net halves '
                                         r'it 1 times\): use an image size that is a multiple of '
                                         r'16$'):
        unet_attention_layers(unet, 5)


def test_a_non_attention_module_at_an_attention_path_is_no_layer():
    """An ``attn2`` replaced by a module without ``set_processor`` (e.g. a wrapper) is skipped;
    the other layers keep their order."""
    unet = _unet()
    before = [name for _, name, _ in attention_modules(unet)]
    block = unet.down_blocks[0].attentions[0].transformer_blocks[0]
    block.attn2 = torch.nn.Identity()
    after = [layer.name for layer in unet_attention_layers(unet, 8)]
    assert after == [name for name in before
                     if name != 'down_blocks.0.attentions.0.transformer_blocks.0.attn2']
