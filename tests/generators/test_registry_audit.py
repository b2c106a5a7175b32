"""Gaps found by a mutation audit of mmdiffseg.registry: options of ``**kwargs`` classes, the
options an error lists, ``default_args`` and the registry's place under mmseg's ``MODELS``."""
from mmseg.registry import MODELS

from mmdiffseg.generators import ISeg
from mmdiffseg.registry import MASK_GENERATORS, unknown_options, unknown_options_error


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


def test_the_error_lists_and_suggests_only_options_not_given():
    """The options already given are neither listed nor suggested: 'alphx' is nearest to 'alpha',
    but 'alpha' is given, so 'alphb' is suggested."""
    err = unknown_options_error(_Closed, dict(alpha=0, alphx=5))
    assert isinstance(err, TypeError)
    assert str(err) == ("_Closed: unknown option 'alphx' (did you mean 'alphb'?); its options: "
                        "alphb, gamma")


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
