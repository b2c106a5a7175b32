"""DiffSeg's labelled mode: segments named by contrast with each class's background level."""
from dataclasses import replace

import numpy as np
import pytest
import torch

from diffseg_cases import (MODERATE_NOISE, VOC_CLASSES, class_miou, hungarian_miou, synthetic,
                           voc_labels, with_hot_spot)
from mmdiffseg.generators import DiffSeg
from mmdiffseg.generators.functional import minmax_normalize
from mmdiffseg.generators.segment_naming import batch_segment_classes, segment_classes

SMALL = dict(resolutions=(32, 16, 8), cross_resolutions=(32, 16, 8), output_size=(128, 128))


def test_an_object_with_a_hot_spot_is_named_and_a_silent_class_names_nothing():
    # segment 0 = the object (left half), 1 and 2 = background (right half)
    segments = torch.tensor([[0] * 4 + [1] * 4] * 2 + [[0] * 4 + [2] * 4] * 2)
    cat = torch.full((4, 8), 0.002)
    cat[:, :4] = 0.02
    cat[0, :2] = 0.2  # a hot spot 10x the rest of the object (4.7x the object's mean)
    dog = 0.01 + 0.001 * torch.rand(4, 8, generator=torch.Generator().manual_seed(0))
    scores = torch.stack([cat, dog])
    named = segment_classes(segments, scores)
    assert (named[:, :4] == 0).all() and (named[:, 4:] == -1).all()
    # the rule it replaces: min-max normalised mean >= 0.4 misses the object
    assert minmax_normalize(cat)[:, :4].mean() < 0.4
    # a segment standing out for two classes takes the one it stands out most for
    dog[:, :4] = 0.05  # 5x its background vs the cat's 21x
    assert (segment_classes(segments, torch.stack([cat, dog]))[:, :4] == 0).all()
    dog[:, :4] = 0.5  # 50x
    assert (segment_classes(segments, torch.stack([cat, dog]))[:, :4] == 1).all()
    # below min_contrast nothing is named; one segment has no background to compare with
    assert (segment_classes(segments, scores, min_contrast=30) == -1).all()
    assert (segment_classes(torch.zeros(4, 8, dtype=torch.long), scores) == -1).all()


def test_background_level_is_the_area_weighted_mean_of_the_low_segments():
    """A class's background level weights each low segment by its area, so a sliver of a low
    segment cannot drag the level and decide whether an object stands out by ``min_contrast``."""
    segments = torch.zeros(100, dtype=torch.long)
    segments[90:92] = 1  # a small low segment, mean 1.4
    segments[92:] = 2  # the object, mean 2.3
    scores = torch.tensor([1.0, 1.4, 2.3])[segments]
    named = segment_classes(segments.view(10, 10), scores.view(1, 10, 10), min_contrast=2.0)
    # low group {0, 1}: b = (90 * 1.0 + 2 * 1.4) / 92 = 1.009; 2.3 / b = 2.28 >= 2: named
    # (the unweighted mean of the low segments, 1.2, would give 1.92 < 2: background)
    assert named.flatten()[92:].eq(0).all() and named.flatten()[:92].eq(-1).all()


def test_a_batch_names_each_image_as_alone_whatever_its_segments_and_classes():
    gen = torch.Generator().manual_seed(1)
    three = torch.tensor([[0] * 4 + [1] * 4] * 2 + [[0] * 4 + [2] * 4] * 2)  # 3 segments
    two = torch.tensor([[0] * 6 + [1] * 2] * 4)  # 2 segments
    cat = torch.full((4, 8), 0.002)
    cat[:, :4] = 0.02
    dog = 0.01 + 0.001 * torch.rand(4, 8, generator=gen)
    lone = torch.full((4, 8), 0.001)
    lone[:, 6:] = 0.05  # the second image's only class, on its segment 1
    alone = [segment_classes(three, torch.stack([cat, dog]), num_segments=3),
             segment_classes(two, lone[None], num_segments=2)]
    assert (alone[0][:, :4] == 0).all() and (alone[1][:, 6:] == 0).all()
    valid = torch.tensor([[True, True], [True, False]])
    scores = torch.stack([torch.stack([cat, dog]), torch.stack([lone, torch.zeros(4, 8)])])
    batch = batch_segment_classes(torch.stack([three, two]), scores, [3, 2], class_valid=valid)
    assert torch.equal(batch, torch.stack(alone))


@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_labelled_miou_keeps_up_with_the_unlabelled_segments(shared_data, precision):
    """On VOC ground-truth attention whose object token has a hot spot 8x the rest of the object
    (on the ten VOC samples at noise 0.1 the min-max rule gave 0.42 mean mIoU where the segments
    score 0.82), from noise 0.1 (two or three segments) to 0.25 (tens to hundreds): where the
    segments are right, naming them loses at most 0.05 mIoU; where they are split, naming merges
    them (labelled above unlabelled). The fixtures' cross-attention marks every present class
    (its logit +4 over the noise), so "the cross-attention marks the object" holds here in every
    case."""
    unlabelled, labelled = DiffSeg(merge_precision=precision, **SMALL), \
        DiffSeg(merge_precision=precision, classes=VOC_CLASSES, **SMALL)
    gts = voc_labels(shared_data, ['voc_val_0', 'voc_val_114', 'voc_val_582'])
    small = [torch.nn.functional.interpolate(gt[None, None].float(), size=(128, 128),
                                             mode='nearest')[0, 0].long() for gt in gts]
    for noise in (0.1, 0.2, 0.25):
        for gt, gt_small in zip(gts, small):
            maps, names = synthetic(gt, VOC_CLASSES, noise, resolutions=SMALL['resolutions'])
            maps = with_hot_spot(maps, gt, names[0][0], 8.0, SMALL['resolutions'])
            segments = hungarian_miou(unlabelled(maps, None, None)[0], gt_small)
            named = class_miou(labelled(maps, None, names)[0], gt_small)
            assert named >= segments - 0.05, (noise, segments, named)


def test_labelled_mode_names_voc_segments(shared_data):
    """Known answer in float32 mode (see test_diffseg.py) at the full 64x64 merge."""
    generator = DiffSeg(classes=VOC_CLASSES, merge_precision='float32')
    for gt in voc_labels(shared_data, ['voc_val_114', 'voc_val_582']):
        maps, names = synthetic(gt, VOC_CLASSES, MODERATE_NOISE)
        assert class_miou(generator(maps, None, names)[0], gt) >= 0.8


def test_a_sample_naming_no_class_is_background_beside_named_ones(shared_data):
    generator = DiffSeg(classes=VOC_CLASSES, merge_precision='float32', **SMALL)
    gts = voc_labels(shared_data, ['voc_val_114', 'voc_val_582'])
    parts = [synthetic(gt, VOC_CLASSES, MODERATE_NOISE, resolutions=SMALL['resolutions'])
             for gt in gts]
    (first, _), (second, _) = parts
    maps = replace(first, maps={k: torch.cat([first[k], second[k], first[k]]) for k in first.maps},
                   prompts=first.prompts + second.prompts + first.prompts,
                   token_positions=first.token_positions + second.token_positions
                   + first.token_positions)
    names = [parts[0][1][0], parts[1][1][0], ['background']]
    labels = generator(maps, None, names)
    assert (labels[2] == 0).all() and (labels[0] != 0).any() and (labels[1] != 0).any()
    for b, (part, part_names) in enumerate(parts):
        assert torch.equal(labels[b], generator(part, None, part_names)[0])


def test_bad_min_contrast_is_refused():
    with pytest.raises(ValueError, match='min_contrast'):
        DiffSeg(classes=VOC_CLASSES, min_contrast=0.5)
    assert np.isclose(DiffSeg(classes=VOC_CLASSES).config_dict()['min_contrast'], 2.0)


def test_a_segment_at_exactly_min_contrast_is_named():
    """``min_contrast`` is a floor a segment may reach: means 1, 1, 2 over three equal
    segments put the last alone in the high group, at exactly twice the background level 1."""
    segments = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    scores = torch.tensor([1.0, 1.0, 2.0])[segments][None]
    named = segment_classes(segments, scores, min_contrast=2.0)
    assert named[:, 4:].eq(0).all() and named[:, :4].eq(-1).all()
    assert segment_classes(segments, scores, min_contrast=2.01).eq(-1).all()


def test_a_padded_image_is_named_as_alone_on_an_otsu_tie():
    """Means 10, 20, 30 over 3, 4, 3 pixels: levels 0, 0.5, 1 make Otsu's two splits tie, so the
    levels must be the image's own min-max, exactly as alone, when a batch pads it with empty
    segments (their mean 0 is no minimum: levels 1/3, 2/3, 1 would break the tie otherwise)."""
    segments = torch.tensor([0] * 3 + [1] * 4 + [2] * 3)[None].expand(2, 10)
    scores = torch.tensor([10.0, 20.0, 30.0])[segments][None]
    alone = segment_classes(segments, scores, num_segments=3)
    other = (torch.arange(10) % 4)[None].expand(2, 10)  # 4 segments: the first image is padded
    batch = batch_segment_classes(torch.stack([segments, other]),
                                  torch.stack([scores, torch.ones(1, 2, 10)]), [3, 4])
    assert torch.equal(batch[0], alone)


def test_segment_ids_may_be_any_integers():
    """Ids 7, 42, 1000 name the same segments as 0, 1, 2 (gaps are no segments)."""
    segments = torch.tensor([[0] * 4 + [1] * 4] * 2 + [[0] * 4 + [2] * 4] * 2)
    cat = torch.full((4, 8), 0.002)
    cat[:, :4] = 0.02
    named = segment_classes(segments, cat[None])
    assert (named[:, :4] == 0).all() and (named[:, 4:] == -1).all()
    sparse = torch.tensor([7, 42, 1000])[segments]
    assert torch.equal(segment_classes(sparse, cat[None]), named)
