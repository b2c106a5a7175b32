"""The transcriptions of the released post-processing checked themselves: ``matched_agreement``
on hand-counted partitions; DiffSeg's anchor grid at the released size and its strict threshold;
iSeg's cluster-smoothing path (``iseg_postprocess`` with ``use_cluster=True``) against ISeg with
cluster smoothing on, and its mean over a class's read tokens; SeeDiff's conv2d PAMR against
the formula."""
import sys
from pathlib import Path

import numpy as np
import torch

from sample_data import shared_path
from mmdiffseg.generators import ISeg
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
from mmdiffseg.generators.diffseg_first_pass import anchor_grid
from mmdiffseg.generators.functional import elementwise_symmetric_kl
from mmdiffseg.generators.testing import attention_from_labels, load_label_png
from mmdiffseg.generators.transcriptions import (ConvPAMR, _diffseg_grid, diffseg_aggregate,
                                                 diffseg_masks, iseg_postprocess,
                                                 matched_agreement)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
from bench_iseg import released_args  # noqa: E402
from test_iseg_released import voc_attention  # noqa: E402
from test_pamr import direct_pamr_step  # noqa: E402


def test_matched_agreement_matches_segments_one_to_one():
    """Overlaps a0-b0 1, a0-b1 2, a1-b1 1: one-to-one, a0 and a1 cannot both take b1, so the best
    matching keeps 2 of 4 pixels (a best match per segment would count 3)."""
    a = torch.tensor([0, 0, 0, 1])
    b = torch.tensor([0, 1, 1, 1])
    assert matched_agreement(a, b) == 0.5
    assert matched_agreement(b, a) == 0.5


def test_matched_agreement_is_one_for_the_same_partition_under_any_ids():
    a = torch.tensor([[3, 3, 7], [7, 9, 9]])
    assert matched_agreement(a, torch.tensor([[0, 0, 1], [1, 2, 2]])) == 1.0
    # one segment against three: only the largest overlap (2 of 6) can be matched
    assert matched_agreement(a, torch.zeros(2, 3, dtype=torch.long)) == 2 / 6
    # segment 7 split between two: 3 -> 0 (2 px), 9 -> 2 (2), 7 -> 1 (1 of its 2): 5 of 6
    assert matched_agreement(a, torch.tensor([[0, 0, 1], [2, 2, 2]])) == 5 / 6


def test_diffseg_anchor_grid_is_centred_as_released():
    """16 points on 64: step 63 // 15 = 4, start (63 - 60) // 2 = 1, i.e. {1, 5, ..., 61}; 4 on
    10: step 3, start 0; and the same coordinates as the generator's grid on other sizes."""
    assert _diffseg_grid(16, 64).tolist() == list(range(1, 62, 4))
    assert _diffseg_grid(4, 10).tolist() == [0, 3, 6, 9]
    for points, size in ((16, 64), (4, 10), (3, 8), (16, 32), (5, 23)):
        coords = _diffseg_grid(points, size)
        flat = (coords[:, None] * size + coords[None, :]).flatten()
        assert torch.equal(flat, anchor_grid(points, size)), (points, size)


def test_diffseg_anchor_pass_threshold_is_strict():
    """A pixel joins an anchor when their symmetric KL is below the threshold, not at it: four
    pixels on a 2x2 grid, each an anchor; A and B are alike (their float16 KL is tau), C and D
    apart. At tau nothing merges (each pixel its own segment); just above, A and B do."""
    rows = [[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.1, 0.7, 0.1],
            [0.1, 0.1, 0.1, 0.7]]
    attns = diffseg_aggregate([torch.tensor(rows)], 2)
    kl = elementwise_symmetric_kl(attns.reshape(4, 4), attns.reshape(4, 4), dtype=torch.float16)
    assert kl[0, 1] == kl[1, 0] and kl[0, 1] < kl[[0, 1]][:, [2, 3]].min()
    tau = float(kl[0, 1])

    def masks(threshold):
        return diffseg_masks(attns, (threshold, 1e-3, 1e-3), torch.float16, num_points=2,
                             out_size=(2, 2)).tolist()
    assert masks(tau) == [[0, 1], [2, 3]]
    assert masks(tau * 1.01) == [[0, 0], [1, 2]]


def test_diffseg_greedy_pass_replaces_matched_proposals_by_their_mean():
    """Anchors kept apart by pass 0 (threshold 0.01), A and B merged by pass 1 (0.1): their
    proposal is (A + B) / 2, whose 0.15 at key 1 beats C's 0.13 (A alone, 0.1, would not)."""
    rows = [[0.7, 0.1, 0.1, 0.1], [0.6, 0.2, 0.1, 0.1], [0.1, 0.13, 0.67, 0.1],
            [0.1, 0.1, 0.1, 0.7]]
    attns = diffseg_aggregate([torch.tensor(rows)], 2)
    out = diffseg_masks(attns, (0.01, 0.1, 0.01), torch.float16, num_points=2, out_size=(2, 2))
    assert out.tolist() == [[0, 0], [1, 2]]


def half_maps(args):
    """The transcription's arguments with the maps in float16, as the release's U-Net gives
    them (ISeg's default ``map_precision``)."""
    *maps, token_sel = args
    return [m.half() for m in maps] + [token_sel]


def slots_of(gen, names):
    """Label of each index of the transcription's ``[background, class_1, ...]``."""
    return torch.tensor([gen.background_index] + gen.class_indices(sorted(
        set(names[0]) - {'background'}, key=VOC_CLASSES.index)))


def test_a_class_of_two_read_tokens_is_their_mean_as_iseg_reads_it():
    """VOC sample 582 with its person relabelled dining table (both tokens read, each with its
    own noise): the transcription without clustering gives ISeg's labels."""
    gt = load_label_png(shared_path('voc2012_val_samples', 'SegmentationClass',
                                    'voc_val_582.png'))
    gt[gt == VOC_CLASSES.index('person')] = VOC_CLASSES.index('diningtable')
    words = prompt_names(VOC_CLASSES, 'voc')
    maps, found = attention_from_labels(gt[None], words, noise=0.15, self_resolutions=(64,),
                                        cross_resolutions=(32, 16), seed=0)
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    names = [[VOC_CLASSES[words.index(w)] for w in ws] for ws in found]
    gen = ISeg.from_preset('wsss_voc', use_cluster=False)
    args = half_maps(released_args(maps, names, gen))
    assert sorted(map(len, args[3])) == [1, 2]
    released = iseg_postprocess(*args, ent=gen.ent, iters=gen.iters, use_cluster=False)
    assert torch.equal(gen(maps, None, names)[0], slots_of(gen, names)[released])


def test_cluster_smoothing_path_labels_equal_iseg_with_clustering_on():
    """On VOC ground-truth attention of two classes, the transcription's float16 k-means smoothing
    gives ISeg's labels (float16 k-means) pixel for pixel, and the smoothing moves labels there
    (the comparison is not that of the cluster-off path)."""
    torch.set_num_threads(1)
    gen = ISeg.from_preset('wsss_voc', use_cluster=True, kmeans_precision='float16')
    maps, names = voc_attention('voc_val_582')
    ours = gen(maps, None, names)[0]
    args = half_maps(released_args(maps, names, gen))
    slots = slots_of(gen, names)
    smoothed = slots[iseg_postprocess(*args, ent=gen.ent, iters=gen.iters, use_cluster=True,
                                      kl_dtype=torch.float16)]
    unsmoothed = slots[iseg_postprocess(*args, ent=gen.ent, iters=gen.iters, use_cluster=False)]
    assert torch.equal(ours, smoothed)
    assert (smoothed != unsmoothed).any()


def test_seediffs_conv2d_pamr_step_is_the_pamr_formula():
    """The released PAMR module as transcribed (shift-kernel convolutions, ``ConvPAMR``): one
    step equals the formula written pixel by pixel (SeeDiff's one dilation, factor 0.2), on an
    image with flat patches and edges, two mask channels."""
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 7, 6, generator=gen) * 255
    image[..., :3, :3] = 40.0
    mask = torch.rand(1, 2, 7, 6, generator=gen)
    got = ConvPAMR(1).double()(image.double(), mask.double())[0].numpy()
    expected = direct_pamr_step(image[0].double().numpy(), mask[0].double().numpy(), (1,), 0.2)
    assert np.allclose(got, expected, rtol=0, atol=1e-12)
