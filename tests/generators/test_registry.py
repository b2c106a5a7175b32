"""Generators build by their plain type name whatever default scope a runner has set."""
import pytest
from mmengine.registry import DefaultScope

import mmdiffseg  # noqa: F401
from mmdiffseg.generators import MaskGenerator
from mmdiffseg.registry import MASK_GENERATORS


@pytest.mark.parametrize('scope', [None, 'mmseg', 'mmdet'])
@pytest.mark.parametrize('cfg', [dict(type='ISeg'), dict(type='DiffSeg'),
                                 dict(type='SeeDiff', classes=['background', 'cat'])])
def test_generators_build_under_any_default_scope(scope, cfg):
    if scope is None:
        generator = MASK_GENERATORS.build(cfg)
    else:
        with DefaultScope.overwrite_default_scope(scope):
            generator = MASK_GENERATORS.build(cfg)
            assert DefaultScope.get_current_instance().scope_name == scope  # restored afterwards
    assert isinstance(generator, MaskGenerator) and type(generator).__name__ == cfg['type']


def test_unknown_generator_is_named():
    with pytest.raises(KeyError, match='NoSuchGenerator'):
        MASK_GENERATORS.build(dict(type='NoSuchGenerator'))
