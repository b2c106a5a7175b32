"""DiffSeg's merge precision: the released first merging pass in float16 (the default) against a
transcription of the released code run in float16, the float32 mode against the output recorded
before the option existed, and a hand-built float16 underflow."""
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from diffseg_cases import AGREEMENT_CASES, SMALL_GRID, SMALL_OUTPUT, case_maps
from sample_data import shared_path
from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import DiffSeg
from mmdiffseg.generators.diffseg import anchor_proposals
from mmdiffseg.generators.functional import float16_symmetric_kl
from mmdiffseg.generators.transcriptions import (diffseg_aggregate, diffseg_masks,
                                                 matched_agreement)

RECORDED = Path(__file__).parent / 'data' / 'diffseg_float32_e32a25e.npz'

# four pixels on a 2x2 grid, four keys: A and B alike, C and D alike; E underflows in float16
E = 1e-8
A, B = [0.7, 0.2, 0.1 - E, E], [0.6, 0.2, 0.1, 0.1]
C, D = [0.05, 0.05, 0.2, 0.7], [E, 0.1, 0.2 - E, 0.7]


@pytest.fixture(scope='module')
def small_cases():
    return {case: case_maps(shared_path, *case) for case in AGREEMENT_CASES}


def two_by_two(rows) -> AttentionMaps:
    return AttentionMaps({'self2': torch.tensor(rows)[None]}, image_size=(2, 2))


def released(maps, precision):
    attns = diffseg_aggregate([maps[f'self{r}'][0] for r in SMALL_GRID], SMALL_GRID[0])
    dtype = torch.float16 if precision == 'float16' else torch.float32
    return diffseg_masks(attns, (1.1,) * 3, dtype, out_size=SMALL_OUTPUT)


def test_release_mode_agrees_with_the_released_formulation_in_float16(small_cases):
    """Segments matched one to one, on VOC ground-truth attention from noise 0.1 (few drops, the
    two modes alike) to 0.25 (nearly every anchor dropped, the modes far apart)."""
    agreement, counts = {}, {}
    for case, maps in small_cases.items():
        ref = released(maps, 'float16')
        for precision in ('float16', 'float32'):
            ours = DiffSeg(resolutions=SMALL_GRID, output_size=SMALL_OUTPUT,
                           merge_precision=precision)(maps, None, None)[0]
            agreement[case, precision] = matched_agreement(ours, ref)
            counts[case, precision] = len(ours.unique())
    release = [agreement[case, 'float16'] for case in small_cases]
    assert min(release) >= 0.99, agreement
    # the cases exercise the drop: at noise >= 0.2 float32 keeps several times more segments
    # and disagrees with the release
    heavy = [case for case in small_cases if case[1] >= 0.2]
    assert all(counts[c, 'float32'] > 3 * counts[c, 'float16'] for c in heavy), counts
    assert max(agreement[c, 'float32'] for c in heavy) < 0.9, agreement


def test_float32_mode_equals_the_output_before_the_option(small_cases):
    """``RECORDED`` holds the segments of the code before ``merge_precision`` (commit e32a25e) on
    these inputs (``tests/generators/record_diffseg_float32.py``), numbered ``0..n-1`` as that
    code did (ids are the winning proposals' indices now: the same segments, renumbered)."""
    recorded = np.load(RECORDED)
    assert sorted(recorded.files) == sorted(f'{name}_{noise}' for name, noise in small_cases)
    for (name, noise), maps in small_cases.items():
        ours = DiffSeg(resolutions=SMALL_GRID, output_size=SMALL_OUTPUT,
                       merge_precision='float32')(maps, None, None)[0]
        ours = torch.unique(ours, return_inverse=True)[1]
        np.testing.assert_array_equal(ours.numpy(), recorded[f'{name}_{noise}'],
                                      err_msg=f'{name} noise {noise}')


def test_an_anchor_map_that_underflows_float16_is_dropped_in_release_mode_only():
    attn = torch.tensor([A, B, C, D])
    kl = float16_symmetric_kl(attn, attn)
    assert kl[[0, 3]].isnan().all() and kl[:, [0, 3]].isnan().all()
    assert kl[1, 2] > 1.1 and kl[1, 1] < 1e-3 and kl[2, 2] < 1e-3
    anchors = torch.tensor([0, 2])
    kept = anchor_proposals(attn, anchors, 1.1, 'float32')
    torch.testing.assert_close(kept, torch.stack([attn[[0, 1]].mean(0), attn[[2, 3]].mean(0)]))
    released_ = anchor_proposals(attn, anchors, 1.1, 'float16')
    assert (released_[0] == 0).all()  # A matches nothing, not even itself
    torch.testing.assert_close(released_[1], attn[2])  # D joins no proposal

    # through the generator (every pixel of the 2x2 grid is an anchor): A and B's segment
    # vanishes when both their maps underflow, and its pixels go to the other segment
    rows = [A, [0.6, 0.2, 0.2 - E, E], C, [0.1, 0.1, 0.1, 0.7]]
    maps = two_by_two(rows)
    # float32, one threshold: proposals 1 and 3 repeat 0 and 2 and lose the argmax ties (first
    # index wins), so the ids are 0 and 2; three thresholds merge them first
    for thresholds, ids in (((1.1,), [[0, 0], [2, 2]]), ((1.1, 1.1, 1.1), [[0, 0], [1, 1]])):
        options = dict(resolutions=(2,), num_points=2, kl_thresholds=thresholds)
        assert DiffSeg(merge_precision='float32', **options)(maps, None, None)[0].tolist() == ids
        assert DiffSeg(**options)(maps, None, None)[0].tolist() == [[0, 0], [0, 0]]


def test_an_image_whose_every_anchor_underflows_is_left_unsure(monkeypatch):
    logged = []
    monkeypatch.setattr('mmdiffseg.generators.diffseg.print_log',
                        lambda msg, **kwargs: logged.append((msg, kwargs['level'])))
    maps = two_by_two([A, A, D, D])
    classes = ['background', 'cat']
    maps.prompts, maps.token_positions = ['a photo of cat'], [{'cat': [4]}]
    maps.maps['cross2'] = torch.softmax(torch.randn(1, 4, 77), -1)
    for generator, names in ((DiffSeg(resolutions=(2,), num_points=2), None),
                             (DiffSeg(resolutions=(2,), num_points=2, classes=classes,
                                      cross_resolutions=(2,)), [['cat']])):
        assert (generator(maps, None, names) == 255).all()
    assert len(logged) == 2 and all(level == logging.WARNING for _, level in logged)
    assert 'no anchor of sample 0 matched a pixel' in logged[0][0]
    assert "merge_precision='float32' keeps every anchor" in logged[0][0]
    float32 = DiffSeg(resolutions=(2,), num_points=2, merge_precision='float32')
    assert float32(maps, None, None)[0].tolist() == [[0, 0], [1, 1]]
    # in a batch, the unsure image does not shift the others' segments
    batch = AttentionMaps({'self2': torch.tensor([[A, B, C, C], [A, A, D, D], [C, C, C, B]])},
                          image_size=(2, 2))
    generator = DiffSeg(resolutions=(2,), num_points=2)
    labels = generator(batch, None, None)
    assert (labels[1] == 255).all() and labels[0].tolist() == [[0, 0], [1, 1]]
    alone = AttentionMaps({'self2': batch['self2'][2:]}, image_size=(2, 2))
    assert torch.equal(labels[2], generator(alone, None, None)[0])
    assert len(labels[2].unique()) == 2


def test_bad_precision_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"merge_precision.*'float16', 'float32'.*'bfloat16'"):
        DiffSeg(merge_precision='bfloat16')


def test_the_first_pass_decides_pairs_near_the_threshold_as_released():
    """The release sums float16 terms (google/diffseg ``DiffSeg.KL``); the matrix-product form
    rounds once, a few float16 ulps off, and on VOC maps at noise 0.3 put 26 pixel-anchor pairs
    of 32 anchors on the other side of tau 1.1, 26 of them as extra matches. The pairs nearest
    the threshold are recomputed term by term: every pair decided as the transcription decides."""
    from mmdiffseg.generators.diffseg_first_pass import aggregate_self_attention, anchor_grid
    from mmdiffseg.generators.functional import elementwise_symmetric_kl, released_kl_near
    from mmdiffseg.generators.testing import attention_from_labels, load_label_png
    labels = load_label_png(shared_path('voc2012_val_samples', 'SegmentationClass',
                                        'voc_val_0.png'), 512)
    maps, _ = attention_from_labels(labels[None], [f'c{i}' for i in range(21)], noise=0.3,
                                    temperature=0.3, cross_resolutions=())
    attn = aggregate_self_attention([maps[f'self{r}'][0] for r in (64, 32, 16, 8)],
                                    [r / 120 for r in (64, 32, 16, 8)], 64)
    grid = anchor_grid(16, 64)[:32]
    anchors = attn[grid]
    released = elementwise_symmetric_kl(anchors, attn, chunk=4) < 1.1
    assert (float16_symmetric_kl(anchors, attn) < 1.1).ne(released).sum() > 10  # the case holds
    assert torch.equal(released_kl_near(anchors, attn, 1.1) < 1.1, released)
    batch = torch.stack([attn, attn.flip(0)])  # leading dims: each image its own pairs
    assert torch.equal(released_kl_near(batch[:, grid], batch, 1.1)[0] < 1.1, released)
