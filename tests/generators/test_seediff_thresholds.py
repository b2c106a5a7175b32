"""SeeDiff's thresholds and guards at their boundaries: strict thresholds, the flat-layer test's
``<=``, the flat-PAMR guard, the resolutions check."""
import pytest
import torch

from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import SeeDiff
from mmdiffseg.generators.seediff import CROSS_NAME

CLASSES = ('background', 'cat', 'dog')


def labels_for(generator, monkeypatch, score, image=None):
    """``generator``'s labels of one image whose class map ``M64`` is ``score`` (64, 64), the
    steps before it skipped; a 64x64 map at a 64x64 output is resampled as it is."""
    monkeypatch.setattr(SeeDiff, 'class_cross_attention', lambda self, maps, names: None)
    monkeypatch.setattr(SeeDiff, 'expansion_map', lambda self, maps, ca: score[None, None].clone())
    maps = AttentionMaps({CROSS_NAME: torch.zeros(1, 1, 256, 77)}, image_size=(64, 64))
    return generator(maps, image, [['cat']])[0]


def test_a_map_exactly_at_the_threshold_is_not_foreground(monkeypatch):
    score = torch.zeros(64, 64)
    score[:, :10] = 1
    score[:, 10:20] = 0.5
    labels = labels_for(SeeDiff(CLASSES, threshold=0.5, pamr_iter=0), monkeypatch, score)
    assert (labels[:, :10] == 1).all() and (labels[:, 10:] == 0).all()


def test_a_refined_mask_exactly_at_the_final_threshold_is_not_foreground(monkeypatch):
    """One PAMR step on a flat image averages the 8 neighbours (1/8 each): a 2-pixel-wide stripe
    (columns 10, 11) becomes 5/8 on itself and 3/8 beside it, min-max 1 and 0.6 (exactly, in
    float32 as in the threshold): only the stripe stays above ``final_threshold=0.6``."""
    score = torch.zeros(64, 64)
    score[:, 10:12] = 1
    image = torch.full((1, 3, 64, 64), 90, dtype=torch.uint8)
    generator = SeeDiff(CLASSES, threshold=0.5, final_threshold=0.6, pamr_iter=1)
    labels = labels_for(generator, monkeypatch, score, image)
    expected = torch.zeros(64, 64, dtype=torch.long)
    expected[:, 10:12] = 1
    assert torch.equal(labels, expected)


def test_a_layer_at_exactly_flat_layer_var_is_flat():
    """The flat-layer test is ``var(num_heads * map) <= flat_layer_var``: a layer whose
    head-summed variance equals the limit is scaled by 0.01."""
    n = 256
    ramp, bump = torch.linspace(0, 1, n), (torch.arange(n) < 16).float()
    cross = torch.zeros(1, 2, n, 77)
    cross[0, 0, :, 5] = ramp * 0.5 + 0.1
    cross[0, 1, :, 5] = 0.013 * bump
    limit = float((cross[0, 1, :, 5] * 8).var())
    maps = AttentionMaps({CROSS_NAME: cross}, ['a photo of a cat'], [{'cat': [5]}])
    ca = SeeDiff(CLASSES, flat_layer_var=limit).class_cross_attention(maps, [['cat']])
    expected = ramp + 0.01 * bump
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert torch.allclose(ca[0, 0], expected, atol=1e-6)


def test_a_pamr_output_converged_on_a_flat_image_is_no_mask(monkeypatch):
    """A flat grey image: 5000 PAMR steps spread a square to a constant within float32 rounding.
    SeeDiff's ``pamr_flat`` guard makes that no foreground; ``pamr_flat=0`` (the release's
    plain min-max) stretches the rounding into a mask."""
    score = torch.zeros(64, 64)
    score[16:48, 16:48] = 1
    image = torch.full((1, 3, 64, 64), 128, dtype=torch.uint8)
    guarded = labels_for(SeeDiff(CLASSES, pamr_iter=5000), monkeypatch, score, image)
    assert (guarded == 0).all()
    released = labels_for(SeeDiff(CLASSES, pamr_iter=5000, pamr_flat=0), monkeypatch, score,
                          image)
    assert (released == 1).float().mean() > 0.1


@pytest.mark.parametrize('resolutions', [(16, 16, 64), (16, 32, 32), (0, 32, 64), (16, 32)])
def test_resolutions_must_be_three_strictly_increasing_grids(resolutions):
    with pytest.raises(ValueError, match='three increasing token grids'):
        SeeDiff(CLASSES, resolutions=resolutions)
