"""DiffSeg: released defaults, option checks, labelled-mode call checks, config round trip,
labels_at checks, an unsure image beside refinement, class scores, naming gapped segment ids."""
import pytest
import torch

from diffseg_cases import VOC_CLASSES, uniform_maps
from mmdiffseg.attention.maps import AttentionMaps
from mmdiffseg.generators import DiffSeg

# rows of 2x2-grid self-attention (as in test_diffseg_precision): A and B alike, C and D alike;
# E underflows float16, so A's and D's anchors are dropped in the released precision
E = 1e-8
A, B = [0.7, 0.2, 0.1 - E, E], [0.6, 0.2, 0.1, 0.1]
C, D = [0.05, 0.05, 0.2, 0.7], [E, 0.1, 0.2 - E, 0.7]


def test_defaults_are_the_released_coco_stuff_settings():
    """ALGORITHMS.md 1: 16x16 anchors, three passes at KL 1.1, no refinement, float16 merge."""
    generator = DiffSeg()
    assert tuple(generator.kl_thresholds) == (1.1, 1.1, 1.1)
    assert generator.num_points == 16 and generator.refine is False
    assert generator.merge_precision == 'float16' and generator.grid_size == 64


def test_the_merging_grid_is_the_largest_resolution_in_any_order():
    """Resolutions listed small-first: the grid is still the largest (16), and uniform attention
    there is one segment."""
    generator = DiffSeg(resolutions=(8, 16), num_points=4)
    assert generator.grid_size == 16
    labels = generator(uniform_maps((8, 16)))
    assert labels.shape == (1, 64, 64) and labels.eq(0).all()


def test_labelled_mode_needs_one_class_name_list_per_image():
    generator = DiffSeg(classes=VOC_CLASSES, resolutions=(16, 8), num_points=4,
                        cross_resolutions=(16, ))
    with pytest.raises(ValueError, match='labelled mode'):
        generator(uniform_maps())
    with pytest.raises(ValueError, match='2 class-name lists for a batch of 1'):
        generator(uniform_maps(), class_names=[['cat'], ['dog']])


def test_timestep_and_ignore_index_reach_the_extraction_and_the_config():
    generator = DiffSeg(timestep=50, ignore_index=200)
    assert generator.extract_kwargs()['timestep'] == 50
    config = generator.config_dict()
    assert config['timestep'] == 50 and config['ignore_index'] == 200


@pytest.mark.parametrize('refine', [False, True])
def test_an_unsure_image_beside_others_with_and_without_refinement(refine):
    """Image 1 loses every anchor in float16 (A and D underflow): it is ``ignore_index`` at every
    size, in forward and labels_at, and the refinement runs on the other images only (each as
    alone: two clusters, A/B on top and C on the bottom)."""
    batch = AttentionMaps({'self2': torch.tensor([[A, B, C, C], [A, A, D, D], [C, C, C, B]])},
                          image_size=(2, 2))
    generator = DiffSeg(resolutions=(2, ), num_points=2, refine=refine, ignore_index=200)
    labels = generator(batch, None, None)
    assert (labels[1] == 200).all() and labels[0].tolist() == [[0, 0], [1, 1]]
    alone = AttentionMaps({'self2': batch['self2'][2:]}, image_size=(2, 2))
    assert torch.equal(labels[2], generator(alone, None, None)[0])
    assert len(labels[2].unique()) == 2
    first, unsure, last = generator.labels_at(batch, None, None, [(2, 2), (3, 5), (2, 2)])
    assert unsure.shape == (3, 5) and (unsure == 200).all()
    assert torch.equal(first, labels[0]) and torch.equal(last, labels[2])


def test_labels_at_refuses_a_wrong_number_of_sizes_and_non_finite_maps():
    """The unsupervised labels_at path checks its inputs itself (forward is not called)."""
    generator = DiffSeg(resolutions=(16, 8), num_points=4)
    maps = uniform_maps(batch=2)
    for sizes in ([(32, 32)], [(32, 32)] * 3):
        with pytest.raises(ValueError, match=rf'DiffSeg.labels_at: {len(sizes)} sizes for 2 '
                                             r'images \(one \(H, W\) per image\)'):
            generator.labels_at(maps, None, None, sizes)
    maps['self8'][1, 3, 5] = float('nan')
    with pytest.raises(ValueError, match=r"AttentionMaps\['self8'\] contains NaN or inf"):
        generator.labels_at(maps, None, None, [(32, 32)] * 2)


def test_class_scores_are_bilinearly_upsampled_and_averaged_over_resolutions():
    """Known answer: at 2x2, class 0 is 0 on the left and 1 on the right column (class 1: top and
    bottom rows); bilinear (align_corners=False) to 4 gives [0, .25, .75, 1]; at 1x1 both are .5;
    the two resolutions averaged."""
    fine = torch.tensor([[0., 0.], [1., 0.], [0., 1.], [1., 1.]])[None]  # (1, 4 pixels, 2)
    coarse = torch.full((1, 1, 2), 0.5)
    scores = DiffSeg().class_scores([fine, coarse], (4, 4))
    ramp = (torch.tensor([0, 0.25, 0.75, 1]) + 0.5) / 2
    assert scores.shape == (1, 2, 4, 4)
    torch.testing.assert_close(scores[0, 0], ramp.expand(4, 4))
    torch.testing.assert_close(scores[0, 1], ramp[:, None].expand(4, 4))


def test_labelled_mode_names_segments_whose_proposal_ids_have_gaps():
    """float32, one threshold: the proposals of pixels 1 and 3 repeat those of 0 and 2 and win
    nowhere, so the segment ids are 0 and 2. Naming takes them as two segments: 'dog' attends to
    the top row, 'cat' to the bottom one."""
    rows = [A, [0.6, 0.2, 0.2 - E, E], C, [0.1, 0.1, 0.1, 0.7]]
    maps = AttentionMaps({'self2': torch.tensor(rows)[None]}, image_size=(2, 2))
    cross = torch.full((1, 4, 77), 0.01)
    cross[0, :2, 6], cross[0, 2:, 4] = 0.2, 0.2
    maps.maps['cross2'] = cross / cross.sum(-1, keepdim=True)
    maps.prompts, maps.token_positions = ['a photo of cat and dog'], [{'cat': [4], 'dog': [6]}]
    options = dict(resolutions=(2, ), num_points=2, kl_thresholds=(1.1, ),
                   merge_precision='float32')
    assert DiffSeg(**options)(maps, None, None)[0].tolist() == [[0, 0], [2, 2]]
    generator = DiffSeg(classes=['background', 'cat', 'dog'], cross_resolutions=(2, ), **options)
    assert generator(maps, None, [['cat', 'dog']])[0].tolist() == [[2, 2], [1, 1]]


def test_labelled_mode_names_segments_of_half_precision_maps_as_of_float32_ones():
    """Stored float16 maps: one segment's min-max floor (1e-8) is 0 in float16, its 0/0 a NaN,
    whose .long() indexed far out of bounds (a RuntimeError); the names are taken in float32."""
    maps = AttentionMaps({'self2': torch.full((1, 4, 4), 0.25)}, image_size=(2, 2))
    cross = torch.full((1, 4, 77), 0.01)
    cross[0, :, 4] = 0.2
    maps.maps['cross2'] = cross / cross.sum(-1, keepdim=True)
    maps.prompts, maps.token_positions = ['a photo of cat'], [{'cat': [4]}]
    generator = DiffSeg(classes=['background', 'cat'], resolutions=(2, ), cross_resolutions=(2, ),
                        num_points=2, kl_thresholds=(1.1, ), merge_precision='float32')
    full = generator(maps, None, [['cat']])
    half = AttentionMaps({k: v.half() for k, v in maps.maps.items()}, maps.prompts,
                         maps.token_positions, maps.image_size)
    assert torch.equal(generator(half, None, [['cat']]), full)
