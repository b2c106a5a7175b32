"""SeeDiff's steps and guards pinned against hand-computed answers and direct per-class forms:
the grids at other sizes, per-sample token positions, the one-layer cross-attention layout, the
per-class normalisations of the expansion, the final min-max, the claim rule, the input checks,
the PAMR options and the label-cache key."""
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import DiffSeg, SeeDiff
from mmdiffseg.generators.pamr import PAMR
from mmdiffseg.generators.seediff import CROSS_NAME, SEEDIFF_SELF_LAYERS, resolutions_for

CLASSES = ('background', 'cat', 'dog')
CAT, DOG = 1, 2


def with_map(monkeypatch, score):
    """SeeDiff's class maps ``M64`` replaced by ``score`` ``(B, C, h, w)`` (steps 1-4 skipped)."""
    monkeypatch.setattr(SeeDiff, 'class_cross_attention', lambda self, maps, names: None)
    monkeypatch.setattr(SeeDiff, 'expansion_map', lambda self, maps, ca: score.clone())


def blank_maps(batch=1, image_size=(64, 64)):
    return AttentionMaps({CROSS_NAME: torch.zeros(batch, 1, 256, 77)}, image_size=image_size)


def column_step(side=64, at=32):
    """A ``(side, side)`` map: 0 left of column ``at``, 1 from it on."""
    return (torch.arange(side) >= at).float().expand(side, side)


def minmax(x):
    return (x - x.min()) / (x.max() - x.min())


# -- token grids at other sizes ---------------------------------------------------------------
def test_grids_at_latents_that_are_multiples_of_8_not_16():
    """A latent side is image / 8; the U-Net halves it three times, so it must be a multiple
    of 8 (the image a multiple of 64), not 16: 576 px -> latent 72 -> grids 18, 36, 72; 704 px
    -> 88 -> 22, 44, 88; 768 px -> 96 -> 24, 48, 96."""
    assert resolutions_for(72) == (18, 36, 72)
    assert resolutions_for(88) == (22, 44, 88)
    assert resolutions_for(96) == (24, 48, 96)
    for bad in (60, 68, 76):
        with pytest.raises(ValueError, match='multiple of 8'):
            resolutions_for(bad)


# -- step 1: class cross-attention ------------------------------------------------------------
def test_each_sample_reads_its_own_prompts_token_positions():
    """'cat' is token 5 of sample 0's prompt and token 7 of sample 1's: each sample's CA16 is
    its own token's map (min-max normalised), not sample 0's token."""
    ramp = torch.linspace(0, 1, 256)
    bump = (torch.arange(256) < 40).float()
    cross = torch.zeros(2, 1, 256, 77)
    cross[0, 0, :, 5], cross[0, 0, :, 7] = ramp * 2, bump
    cross[1, 0, :, 5], cross[1, 0, :, 7] = ramp.flip(0), bump * 3 + 1
    maps = AttentionMaps({CROSS_NAME: cross}, ['a photo of a cat', 'a photo of a big cat'],
                         [{'cat': [5]}, {'cat': [7]}])
    ca = SeeDiff(CLASSES).class_cross_attention(maps, [['cat'], ['cat']])
    assert torch.allclose(ca[0, 0], ramp, atol=1e-6)
    assert torch.equal(ca[1, 0], bump)


def test_a_mean_layer_without_a_layer_axis_is_one_layer():
    """Cross-attention captured as one (mean) layer, ``(B, N, T)``, gives what the same maps
    with a layer axis of one give, per sample of a batch of two."""
    gen = torch.Generator().manual_seed(0)
    cross = torch.rand(2, 256, 77, generator=gen)
    positions = [{'cat': [5], 'dog': [7]}, {'cat': [6], 'dog': [4]}]
    three = AttentionMaps({CROSS_NAME: cross}, ['', ''], positions)
    four = AttentionMaps({CROSS_NAME: cross[:, None]}, ['', ''], positions)
    generator, names = SeeDiff(CLASSES), [['cat', 'dog'], ['dog']]
    ca = generator.class_cross_attention(three, names)
    assert ca.shape == (2, 2, 256)
    assert torch.equal(ca, generator.class_cross_attention(four, names))
    assert torch.allclose(ca[1, 0], minmax(cross[1, :, 4]), atol=1e-6)
    assert (ca[1, 1] == 0).all()  # the padding slot


def test_a_class_missing_from_a_samples_prompt_names_the_sample():
    cross = torch.rand(2, 1, 256, 77)
    maps = AttentionMaps({CROSS_NAME: cross}, ['a cat', 'a dog'], [{'cat': [2]}, {'dog': [2]}])
    with pytest.raises(KeyError, match=r"'cat' is not in the prompt of sample 1 \('a dog'\); "
                                       r"prompt classes: \['dog'\]\"?$"):
        SeeDiff(CLASSES).class_cross_attention(maps, [['cat'], ['cat']])
    maps.token_positions = maps.token_positions[:1]  # no positions for sample 1: the fix
    with pytest.raises(KeyError, match=r"of sample 1 \('a dog'\); prompt classes: \[\]; no class "
                                       r"was located in it: pass the class names to "
                                       r"engine.extract / engine.generate \(class_names=...\)"):
        SeeDiff(CLASSES).class_cross_attention(maps, [['cat'], ['cat']])


# -- steps 2-4: the expansion, per class ------------------------------------------------------
def cv2_otsu(x):
    """The released seed rule: ``cv2`` Otsu on ``uint16(x * 255)``, foreground ``> 0``."""
    _, binary = cv2.threshold((x.numpy() * 255).astype(np.uint16), 0, 255,
                              cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return torch.from_numpy(binary > 0).view(x.shape)


def summed_cosine(rows, seeds):
    out = torch.zeros(rows.shape[0])
    for s in torch.nonzero(seeds).flatten():
        out += F.cosine_similarity(rows, rows[s][None], dim=1)
    return out


def direct_expansion(self_rows, ca, resolutions):
    """Steps 2-4 of ONE class map ``ca`` ``(N,)`` as the module docstring states them."""
    side = resolutions[0]
    score = minmax(summed_cosine(self_rows[side], cv2_otsu(ca * ca)))
    for r in resolutions[1:]:
        prior = F.interpolate(score.view(1, 1, side, side), size=(r, r), mode='bicubic',
                              align_corners=False).flatten()
        background = ~cv2_otsu(prior * prior)
        score = minmax(minmax(1 - summed_cosine(self_rows[r], background)) * minmax(prior))
        side = r
    return score.view(side, side)


def test_expansion_is_per_class_as_the_direct_form():
    """Two classes of very different seed sets (a one-pixel peak, a wide plateau), batched as
    channels: each channel equals the direct per-class form (Otsu and min-max of each class
    alone, never across classes)."""
    resolutions = (4, 8, 16)
    gen = torch.Generator().manual_seed(3)
    self_rows = {r: torch.softmax(torch.randn(r * r, r * r, generator=gen) * 3, -1)
                 for r in resolutions}
    peak = torch.rand(16, generator=gen) * 0.3
    peak[5] = 1
    plateau = torch.rand(16, generator=gen) * 0.2 + 0.8
    plateau[[0, 9]] = torch.tensor([0, 0.1])
    ca = torch.stack([peak, plateau])[None]
    maps = AttentionMaps({f'seediff_self{r}': rows[None] for r, rows in self_rows.items()})
    got = SeeDiff(CLASSES, resolutions=resolutions).expansion_map(maps, ca)
    assert got.shape == (1, 2, 16, 16)
    for c in range(2):
        expected = direct_expansion(self_rows, ca[0, c], resolutions)
        assert torch.allclose(got[0, c], expected, atol=1e-4), c


def test_a_self_attention_map_of_another_grid_is_named():
    maps = AttentionMaps({'seediff_self16': torch.rand(1, 256, 256),
                          'seediff_self32': torch.rand(1, 256, 256)})
    ca = torch.linspace(0, 1, 256).view(1, 1, 256)
    with pytest.raises(ValueError, match=r"AttentionMaps\['seediff_self32'\] must be "
                                         r"\(B, 1024, 1024\), got \(1, 256, 256\)"):
        SeeDiff(CLASSES).expansion_map(maps, ca)


# -- step 5: final map, thresholds, claims ----------------------------------------------------
def test_final_map_is_min_max_normalised_after_the_bicubic_resize(monkeypatch):
    """A 0/1 step between columns 31 and 32 of M64, resized 2x (bicubic, a = -0.75): output
    column i samples x = i / 2 - 0.25, so columns 62, 63, 64, 65 read -0.10546875, 0.2265625,
    0.7734375, 1.10546875 (e.g. column 63: w2 + w3 at t = 0.25 = 0.26171875 - 0.03515625).
    Min-max over [-0.10546875, 1.10546875] makes column 63 0.2742 > threshold 0.25 (raw 0.2266
    is not). A second class holding 0.2 x the mirror image is normalised on its own: the
    mirrored answer, and the overlap (63, 64) goes to the higher normalised map."""
    step = column_step()
    with_map(monkeypatch, torch.stack([step, 0.2 * (1 - step)])[None])
    generator = SeeDiff(CLASSES, threshold=0.25, pamr_iter=0)
    labels = generator(blank_maps(image_size=(128, 128)), None, [['cat', 'dog']])[0]
    expected = torch.full((128, 128), CAT)
    expected[:, :64] = DOG
    assert torch.equal(labels, expected)
    with_map(monkeypatch, step[None, None])
    labels = generator(blank_maps(image_size=(128, 128)), None, [['cat']])[0]
    assert (labels[:, :63] == 0).all() and (labels[:, 63:] == CAT).all()


def test_a_pixel_goes_to_the_best_class_among_those_that_claim_it(monkeypatch):
    """After PAMR, only claiming classes compete: PAMR moves 'dog' to the left half, where its
    map is 0 and 'cat' has 1 but is no longer foreground: the left half is 'dog'."""
    step = column_step()
    with_map(monkeypatch, torch.stack([1 - step, step])[None])
    refined = torch.stack([torch.zeros(64, 64), 1 - step])[None]
    monkeypatch.setattr(PAMR, 'forward', lambda self, image, mask: refined.clone())
    image = torch.full((1, 3, 64, 64), 100, dtype=torch.uint8)
    labels = SeeDiff(CLASSES, pamr_iter=1)(blank_maps(), image, [['cat', 'dog']])[0]
    assert (labels[:, :32] == DOG).all() and (labels[:, 32:] == 0).all()


def test_a_padding_class_slot_never_claims(monkeypatch):
    """Sample 1 has one class; its second (padding) slot claims nothing, whatever its map
    holds (here the left half; no 'background' class: unclaimed pixels are ignore_index)."""
    step = column_step()
    score = torch.stack([torch.stack([step, 1 - step]), torch.stack([step, 1 - step])])
    with_map(monkeypatch, score)
    labels = SeeDiff(('cat', 'dog'), pamr_iter=0)(blank_maps(2), None, [['cat', 'dog'], ['dog']])
    assert (labels[1, :, 32:] == 1).all() and (labels[1, :, :32] == 255).all()
    assert (labels[0, :, 32:] == 0).all() and (labels[0, :, :32] == 1).all()


def test_labels_take_the_images_size_or_else_the_maps(monkeypatch):
    """Labels are at the image's (H, W) (here not square, and not the maps' image_size); without
    an image, at the maps' image_size. The object stays on the right."""
    with_map(monkeypatch, column_step()[None, None])
    generator = SeeDiff(CLASSES, pamr_iter=0)
    image = torch.zeros(1, 3, 48, 80, dtype=torch.uint8)
    labels = generator(blank_maps(image_size=(64, 64)), image, [['cat']])
    assert labels.shape == (1, 48, 80)
    assert (labels[0, :, :36] == 0).all() and (labels[0, :, 44:] == CAT).all()
    labels = generator(blank_maps(image_size=(40, 72)), None, [['cat']])
    assert labels.shape == (1, 40, 72)
    assert (labels[0, :, :32] == 0).all() and (labels[0, :, 40:] == CAT).all()


# -- input checks -------------------------------------------------------------------------------
@pytest.mark.parametrize('shape', [(1, 1, 64, 64), (1, 4, 64, 64), (2, 3, 64, 64),
                                   (3, 64, 64)])
def test_forward_takes_rgb_batches_of_the_maps_batch(shape):
    """``forward`` (what ``__call__`` runs after converting the images) names the shape it
    needs: a grey, RGBA, wrong-batch or unbatched image is refused, not labelled."""
    with pytest.raises(ValueError, match=r'images must be \(1, 3, H, W\) RGB, got'):
        SeeDiff(CLASSES, pamr_iter=0).forward(blank_maps(), torch.zeros(shape), [['cat']])


@pytest.mark.parametrize('lists', [[['cat']], [['cat'], ['dog'], ['cat']]])
def test_one_class_list_per_sample(lists):
    with pytest.raises(ValueError, match=f'{len(lists)} class-name lists for a batch of 2'):
        SeeDiff(CLASSES, pamr_iter=0)(blank_maps(2), None, lists)


# -- PAMR options, engine arguments, the label-cache key --------------------------------------
def test_pamr_tol_and_backend_reach_pamr(monkeypatch):
    """``pamr_tol`` stops PAMR at its first check (every 10 steps) when the change is below it
    (here always): 5000 steps with tol 1e9 give the labels of 10 steps. ``pamr_backend`` is the
    PAMR backend that ``check_device`` checks."""
    generator = SeeDiff(CLASSES, pamr_tol=1e9, pamr_backend='torch')
    assert (generator.pamr.tol, generator.pamr.backend) == (1e9, 'torch')
    square = torch.zeros(64, 64)
    square[20:44, 16:40] = 1
    with_map(monkeypatch, square[None, None])
    image = torch.randint(0, 256, (1, 3, 64, 64), generator=torch.Generator().manual_seed(0),
                          dtype=torch.uint8)
    early = generator(blank_maps(), image, [['cat']])
    assert torch.equal(early, SeeDiff(CLASSES, pamr_iter=10)(blank_maps(), image, [['cat']]))
    assert not torch.equal(early, SeeDiff(CLASSES, pamr_iter=60)(blank_maps(), image,
                                                                 [['cat']]))
    with pytest.raises(ValueError, match="PAMR.backend='graph'. needs CUDA"):
        SeeDiff(CLASSES, pamr_backend='graph').check_device('cpu')
    SeeDiff(CLASSES).check_device('cpu')


def test_extract_kwargs_default_to_the_released_single_pass():
    """Real images: one pass at t = 300 without noise (DiffSeg's released setting, the default
    of both generators); given values pass through, t = 0 (the clean latent) included."""
    assert SeeDiff(CLASSES).extract_kwargs([['cat']]) == dict(
        prompts=['a photo of a cat'], class_names=[['cat']], timestep=300, noise=None)
    assert SeeDiff(CLASSES).timestep == DiffSeg().timestep == 300
    noise = torch.zeros(1, 4, 8, 8)
    kwargs = SeeDiff(CLASSES, timestep=0, noise=noise).extract_kwargs([['dog']])
    assert kwargs['timestep'] == 0 and kwargs['noise'] is noise
    assert SeeDiff(CLASSES, noise=7).extract_kwargs([['dog']])['noise'] == 7


@pytest.mark.parametrize('key, value', [('classes', ['background', 'dog', 'cat']),
                                        ('seed_rule', 'alpha'), ('pamr_flat', 0.0),
                                        ('pamr_tol', 1e-3), ('noise', 7)])
def test_every_label_changing_option_is_in_the_config(key, value):
    """The config (the label-cache key) carries each option that changes the labels."""
    config = SeeDiff(**{'classes': CLASSES, key: value}).config_dict()
    assert config[key] == value
    assert config != SeeDiff(CLASSES).config_dict()


def test_self_layers_follow_the_resolutions():
    generator = SeeDiff(CLASSES, resolutions=(18, 36, 72))
    assert generator.self_layers == dict(zip((18, 36, 72), SEEDIFF_SELF_LAYERS.values()))
    assert [r.name for r in generator.capture_spec.requests] == [
        CROSS_NAME, 'seediff_self18', 'seediff_self36', 'seediff_self72']


def test_alpha_seeds_are_strictly_above_alpha():
    """``seed_rule='alpha'``: seeds where ``CA16^2 > alpha``; 0.5^2 = 0.25 exactly is no seed."""
    ca = torch.tensor([[[0.5, 1.0, 0.2, 0.6]]])
    seeds = SeeDiff(CLASSES, seed_rule='alpha', alpha=0.25).seeds(ca)
    assert seeds.tolist() == [[[False, True, False, True]]]


def test_no_note_when_no_cross_layer_is_at_the_seed_grid():
    """``model_notes`` compares ``num_heads`` with the heads of the cross-attention layers at
    the seed grid only; a model listing none there (or only other kinds/grids) gets no note."""
    from types import SimpleNamespace as Layer
    generator = SeeDiff(CLASSES)
    assert generator.model_notes([]) == []
    assert generator.model_notes([Layer(kind='self', resolution=16, heads=5),
                                  Layer(kind='cross', resolution=32, heads=5)]) == []
    [note] = generator.model_notes([Layer(kind='cross', resolution=16, heads=5)])
    assert 'num_heads=8' in note and "set the generator's num_heads=5" in note
