"""A generator the model cannot serve stops the tools before any work, with the reason."""
import numpy as np
import pytest

import mmdiffseg  # noqa: F401
from mmdiffseg.apis.builders import load_engine
from mmdiffseg.apis.io import UserInputError
from mmdiffseg.attention.testing import cached_tiny_pipeline_folder
from mmdiffseg.registry import MASK_GENERATORS
from sample_data import shared_path


@pytest.fixture(scope='module')
def tiny_sd2():
    return str(cached_tiny_pipeline_folder(shared_path('sd_configs', 'stable-diffusion-2-1-base')))


def test_released_iseg_head_lists_are_refused_on_a_model_with_fewer_heads(tiny_sd2):
    iseg = MASK_GENERATORS.build(dict(type='ISeg'))  # SD 2.1-base's hand-picked VOC heads
    with pytest.raises(UserInputError, match=r'iseg_cross16.*head indices'):
        load_engine(tiny_sd2, capture=iseg.capture_spec, image_size=512)


def test_a_spec_the_model_serves_passes_and_resolutions_are_checked(tiny_sd2):
    iseg = MASK_GENERATORS.build(dict(type='ISeg', cross_heads=None, self_heads=[0]))
    engine = load_engine(tiny_sd2, capture=iseg.capture_spec, image_size=512)
    # at 256 px the layers iSeg names sit at half the resolutions it asks for
    with pytest.raises(ValueError, match=r"image size 256 cannot be used: .*16/32/64 token grids, "
                       r"which this model has at image size\(s\) \[512\] only.*use one of those "
                       r"sizes, or read the grids 256 has \(4/8/16/32: .*\)\. At 256: "
                       r".*iseg_cross16': unknown layer.*resolution 16; valid"):
        engine.check_capture(iseg.capture_spec, image_size=256)
    diffseg = MASK_GENERATORS.build(dict(type='DiffSeg'))  # 64x64 self-attention: 32x32 at 256
    with pytest.raises(ValueError, match=r'image size 256 cannot be used: .*8/16/32/64 token '
                       r'grids.*image size\(s\) \[512\] only'):
        engine.extract(np.zeros((8, 8, 3), np.uint8), capture=diffseg.capture_spec,
                       image_size=256)


def test_the_refusal_reads_the_unet_config_before_any_weight_loads(tiny_sd2, monkeypatch):
    """The same message as the loaded engine's check, without the wait for the weights (the
    tools refused only after the whole pipeline had loaded)."""
    from mmdiffseg.attention.engine import DiffusionAttentionEngine
    iseg = MASK_GENERATORS.build(dict(type='ISeg'))
    with pytest.raises(ValueError) as after_load:
        load_engine(tiny_sd2).check_capture(iseg.capture_spec, 512)

    def no_load(*args, **kwargs):
        raise AssertionError('the pipeline was loaded')
    monkeypatch.setattr(DiffusionAttentionEngine, 'from_pretrained', no_load)
    with pytest.raises(UserInputError) as before_load:
        load_engine(tiny_sd2, capture=iseg.capture_spec, image_size=512)
    assert str(before_load.value) == f'the generator cannot run on {tiny_sd2!r}: {after_load.value}'
