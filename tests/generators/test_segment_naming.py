"""``segment_naming`` against a direct per-segment reading of its rule (module docstring, steps
1-3), with cv2's Otsu on the 8-bit pixel levels as the split; its scale invariance; the default
contrast floor; and a class that stands out more but is not in its high group."""
import cv2
import numpy as np
import torch

from mmdiffseg.generators.segment_naming import batch_segment_classes, segment_classes


def reference(segments, scores, min_contrast=2.0, valid=None):
    """Per segment ``k`` and class ``c``: mean share; min-max over the segments; cv2 Otsu on the
    map of each pixel's 8-bit level (floor(level * 255)); the low group's area-weighted mean as
    background; candidates high and at least ``min_contrast`` times it; the largest ratio wins."""
    seg = segments.numpy().ravel()
    ids = np.unique(seg)
    area = np.array([(seg == k).sum() for k in ids], dtype=np.float64)
    out = np.full(seg.shape, -1)
    best = {}
    for c, score in enumerate(scores.double().numpy().reshape(len(scores), -1)):
        if valid is not None and not valid[c]:
            continue
        mean = np.array([score[seg == k].mean() for k in ids])
        span = mean.max() - mean.min()
        level = (mean - mean.min()) / span if span > 0 else np.zeros_like(mean)
        q = np.floor(level * 255).astype(np.uint8)
        pixels = q[np.searchsorted(ids, seg)].reshape(1, -1)
        t, _ = cv2.threshold(pixels, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        high = q > t
        background = (area * mean)[~high].sum() / area[~high].sum()
        for j, k in enumerate(ids):
            with np.errstate(divide='ignore', invalid='ignore'):  # a zero background: inf
                ratio = mean[j] / background
            if high[j] and ratio >= min_contrast and ratio > best.get(k, (0, -1))[0]:
                best[k] = (ratio, c)
    for k, (_, c) in best.items():
        out[seg == k] = c
    return torch.from_numpy(out).view_as(segments)


def random_case(rng, side=12, num_segments=6, num_classes=3):
    """Blocks of random sizes as segments; each class raised on a random subset of them, with
    multiplicative noise per pixel."""
    cuts = np.sort(rng.choice(np.arange(1, side * side), num_segments - 1, replace=False))
    segments = np.searchsorted(cuts, np.arange(side * side), side='right').reshape(side, side)
    scores = []
    for _ in range(num_classes):
        on = rng.random(num_segments) < 0.35
        level = np.where(on, rng.uniform(1.5, 8.0, num_segments), 1.0)[segments]
        scores.append(0.01 * level * rng.uniform(0.6, 1.4, (side, side)))
    return torch.from_numpy(segments), torch.tensor(np.stack(scores), dtype=torch.float32)


def test_segments_are_named_as_the_rule_reads_per_segment():
    rng = np.random.default_rng(0)
    named = background = 0
    for _ in range(40):
        segments, scores = random_case(rng)
        ours = segment_classes(segments, scores)  # default floor 2.0
        assert torch.equal(ours, reference(segments, scores)), (segments, scores)
        named += int((ours >= 0).sum())
        background += int((ours < 0).sum())
    assert named > 1000 and background > 1000  # both outcomes occur often


def test_a_batch_with_padding_classes_and_fewer_segments_is_named_as_the_rule_reads():
    """Images of 4 and 6 segments in one batch (the first padded with empty segments), and a
    padding score map (``class_valid`` False) that would win wherever it is raised."""
    rng = np.random.default_rng(1)
    for _ in range(10):
        (seg_a, scores_a), (seg_b, scores_b) = random_case(rng, num_segments=4), random_case(rng)
        scores_a[2] = 10 * scores_a[2] * (seg_a == 1)  # stands out on segment 1 only
        valid = torch.tensor([[True, True, False], [True, True, True]])
        batch = batch_segment_classes(torch.stack([seg_a, seg_b]),
                                      torch.stack([scores_a, scores_b]), [4, 6],
                                      class_valid=valid)
        assert torch.equal(batch[0], reference(seg_a, scores_a, valid=valid[0].tolist()))
        assert torch.equal(batch[1], reference(seg_b, scores_b))
        assert (reference(seg_a, scores_a)[seg_a == 1] == 2).all()  # it would win there


def test_names_do_not_depend_on_the_scale_of_the_attention():
    rng = np.random.default_rng(2)
    for _ in range(5):
        segments, scores = random_case(rng)
        named = segment_classes(segments, scores)
        for factor in (1e-4, 1e6):  # min-max keeps a spread above its 1e-8 floor
            assert torch.equal(segment_classes(segments, scores * factor), named), factor


def test_the_default_contrast_floor_is_two():
    """Means 1, 1, 1.9 over three equal segments: the last is alone in the high group, 1.9 times
    the background level 1: background by default, named with a floor of 1.8."""
    segments = torch.tensor([[0, 0, 1, 1, 2, 2]] * 2)
    scores = torch.tensor([1.0, 1.0, 1.9])[segments][None]
    assert segment_classes(segments, scores).eq(-1).all()
    assert segment_classes(segments, scores, min_contrast=1.8)[:, 4:].eq(0).all()


def test_a_class_standing_out_more_outside_its_high_group_does_not_take_the_segment():
    """Segment 1 (1 pixel): class 0 means 1, 2.5, 1 (alone high, 2.5x its background); class 1
    means 1, 3, 100 (segment 1 in its low group with segment 0, 100 px of 1: 2.98x its
    background of 1.02, above class 0's ratio, but low). Segment 1 is class 0's; segment 2 is
    class 1's."""
    segments = torch.tensor([0] * 100 + [1] + [2] * 10)
    scores = torch.stack([torch.tensor([1.0, 2.5, 1.0])[segments],
                          torch.tensor([1.0, 3.0, 100.0])[segments]])
    named = segment_classes(segments[None], scores[:, None])[0]
    assert named[100] == 0 and (named[101:] == 1).all() and (named[:100] == -1).all()
    assert torch.equal(named[None], reference(segments[None], scores[:, None]))


def test_levels_are_min_max_of_the_segment_means():
    """Means 10, 20, 30 over 3, 4, 3 pixels: min-max levels 0, 127, 255 (of 255) give Otsu's
    split above 127 (between-class variance 0.21 * 182.4^2 against 0.21 * 181.9^2 above 0),
    so only the 30 segment is high: 1.91 times the background 15.7, named with a floor of 1.5.
    (Levels of the means over their maximum, 85, 170, 255, would tie and split above 85.)"""
    segments = torch.tensor([0] * 3 + [1] * 4 + [2] * 3)[None]
    scores = torch.tensor([10.0, 20.0, 30.0])[segments][None]
    named = segment_classes(segments, scores, min_contrast=1.5)[0]
    assert named.tolist() == [-1] * 7 + [0] * 3
