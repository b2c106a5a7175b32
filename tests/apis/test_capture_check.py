"""A generator the model cannot serve stops the tools before any work, with the reason."""
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
    with pytest.raises(ValueError, match=r"iseg_cross16': unknown layer.*resolution 16; valid"):
        engine.check_capture(iseg.capture_spec, image_size=256)
