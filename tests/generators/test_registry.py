"""Generators build by their plain type name whatever default scope a runner has set, and from
the shipped configs (SeeDiff's defaults are its released VOC config)."""
import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
from sample_data import REPO

import mmdiffseg  # noqa: F401
from mmdiffseg.datasets import DATASET_CLASSES
from mmdiffseg.generators import DiffSeg, ISeg, MaskGenerator, SeeDiff
from mmdiffseg.registry import (MASK_GENERATORS, accepted_options, unknown_options,
                                unknown_options_error)


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


class _Open:
    def __init__(self, alpha=1, **kwargs):
        pass


class _Closed:
    def __init__(self, alpha=1, alphb=2, gamma=3):
        pass


def test_a_class_taking_kwargs_takes_every_option():
    """``**kwargs`` takes any key, so none is unknown; a closed signature names its strangers."""
    assert unknown_options(_Open, dict(type='x', beta=2, gamma=3)) == []
    assert unknown_options(_Closed, dict(type='x', beta=2, alpha=0)) == ['beta']
    # mmengine's own keys (_scope_) aside, a stray underscore is a typo to name
    assert unknown_options(_Closed, dict(alpha_=1, _alpha=1, _scope_='mmseg')) == [
        'alpha_', '_alpha']


def test_the_error_lists_and_suggests_every_option_given_or_not():
    """'gamme' next to a set 'gamma': still the option meant (a preset sets many options a
    misspelt override is meant for; only the unset ones were listed and suggested)."""
    err = unknown_options_error(_Closed, dict(gamma=0, gamme=5))
    assert isinstance(err, TypeError)
    assert str(err) == ("_Closed: unknown option 'gamme' (did you mean 'gamma'?); its options: "
                        "alpha, alphb, gamma")
    synth = SeeDiff(['background', 'cat']).config_dict()
    with pytest.raises(TypeError, match=r"unknown option 'pamr_iters' \(did you mean "
                                        r"'pamr_iter'\?\); its options: classes, .*pamr_iter"):
        MASK_GENERATORS.build(dict(type='SeeDiff', classes=['background', 'cat'], pamr_iters=5,
                                   pamr_iter=synth['pamr_iter']))


def test_accepted_options_follow_kwargs_up_the_bases_without_self():
    """Named and keyword-only arguments, up the bases while ``**kwargs`` passes them on; never
    ``self`` nor ``*args``; the class's own first; None where ``**kwargs`` reaches ``object``."""
    class Base:
        def __init__(self, depth, *args, width=2):
            pass

    class Child(Base):
        def __init__(self, name, *, scale=1.0, **kwargs):
            super().__init__(**kwargs)

    class Open:
        def __init__(self, **kwargs):
            pass

    assert accepted_options(Child) == ('name', 'scale', 'depth', 'width')   # in signature order
    assert accepted_options(Open) is None

    class Opaque(Base):
        __init__ = max   # a builtin without a signature: its options cannot be known

    assert accepted_options(Opaque) is None


class _Forwarding(_Closed):
    def __init__(self, delta=4, **kwargs):
        super().__init__(**kwargs)


class _TunedDiffSeg(DiffSeg):
    def __init__(self, note='', **kwargs):
        super().__init__(**kwargs)


class _SmoothedDiffSeg(DiffSeg):
    def __init__(self, **kwargs):
        self.smooth = kwargs.pop('smooth', 0)
        super().__init__(**kwargs)


def test_a_subclass_reading_its_own_option_out_of_kwargs_builds():
    """Its option is not in any signature: only a build its class refuses names unknown ones."""
    assert MASK_GENERATORS.build(dict(type=_SmoothedDiffSeg, smooth=2)).smooth == 2
    from mmdiffseg.preflight import check_generator
    assert check_generator(dict(type=_SmoothedDiffSeg, smooth=2), 'g') == []
    (item,) = check_generator(dict(type=_SmoothedDiffSeg, kl_threshold=0.9), 'g')
    assert "has no option 'kl_threshold' (did you mean 'kl_thresholds'?)" in item.what


def test_options_passed_on_by_kwargs_are_followed_up_the_bases():
    """A subclass passing ``**kwargs`` to its base takes the base's options, no others: its
    typo is named with the nearest option at build (it was the base's bare TypeError)."""
    assert unknown_options(_Forwarding, dict(delta=1, alpha=0, alphx=5)) == ['alphx']
    assert str(unknown_options_error(_Forwarding, dict(alpha=0, alphx=5))) == (
        "_Forwarding: unknown option 'alphx' (did you mean 'alphb'?); its options: delta, alpha, "
        "alphb, gamma")
    with pytest.raises(TypeError, match=r"_TunedDiffSeg: unknown option 'kl_threshold' \(did you "
                                        r"mean 'kl_thresholds'\?\)"):
        MASK_GENERATORS.build(dict(type=_TunedDiffSeg, kl_threshold=0.9))
    assert MASK_GENERATORS.build(dict(type=_TunedDiffSeg, kl_thresholds=(0.5,) * 3, note='x'))


def test_build_passes_default_args():
    """``MASK_GENERATORS.build(cfg, default_args)`` fills what the config leaves out."""
    generator = MASK_GENERATORS.build(dict(type='ISeg'), default_args=dict(iters=2))
    assert isinstance(generator, ISeg) and generator.iters == 2
    assert MASK_GENERATORS.build(dict(type='ISeg', iters=3),
                                 default_args=dict(iters=2)).iters == 3


def test_generators_are_reached_from_mmseg_models():
    """A child of mmseg's MODELS: ``mmdiffseg.ISeg`` is found from mmseg's registry."""
    assert MASK_GENERATORS.parent is MODELS
    assert MODELS.get('mmdiffseg.ISeg') is ISeg
