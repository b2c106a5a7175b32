"""Generators build by their plain type name whatever default scope a runner has set, and from
the shipped configs (SeeDiff's defaults are its released VOC config)."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from sample_data import REPO

import mmdiffseg  # noqa: F401
from mmdiffseg.datasets import DATASET_CLASSES
from mmdiffseg.generators import MaskGenerator, SeeDiff
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


@pytest.mark.parametrize('config', ['seediff_voc20_synth.py',
                                    'seediff_cityscapes_human_vehicle_synth.py'])
def test_configs_build(config):
    cfg = Config.fromfile(str(REPO / 'configs' / 'seediff' / config))
    generator = MASK_GENERATORS.build(cfg.generator)
    settings = generator.config_dict()
    assert (settings['steps'], settings['guidance_scale'], settings['threshold'],
            settings['final_threshold'], settings['pamr_iter']) == (50, 7.0, 0.3, 0.8, 5000)
    assert generator.classes[0] == 'background'


def test_the_defaults_are_the_released_voc_config():
    """SeeDiff built from classes alone (the tools' ``--method seediff``) has every setting of
    the released VOC config, PAMR's sigma factor included."""
    cfg = Config.fromfile(str(REPO / 'configs' / 'seediff' / 'seediff_voc20_synth.py'))
    assert SeeDiff(DATASET_CLASSES['voc']).config_dict() == MASK_GENERATORS.build(cfg.generator).config_dict()
