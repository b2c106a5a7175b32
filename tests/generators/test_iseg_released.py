"""iSeg against the transcription of the released post-processing
(``transcriptions.iseg_postprocess``): the same labels on attention built from VOC ground truth, in
float16 as released and in float32, from fewer kernel launches at batch 1 (counted on the CPU, the
proxy of a GPU's launch-bound batch-1 time)."""
import sys
from pathlib import Path

import pytest
import torch

from sample_data import shared_path
from mmdiffseg.generators import ISeg
from mmdiffseg.generators.class_names import VOC_CLASSES, prompt_names
from mmdiffseg.generators.functional import minmax_normalize
from mmdiffseg.generators.iseg_steps import assign_labels, cam_normalize
from mmdiffseg.generators.testing import attention_from_labels, load_label_png
from mmdiffseg.generators.transcriptions import iseg_postprocess

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / 'benchmarks'))
from bench_iseg import released_args  # noqa: E402
from op_counts import count_ops  # noqa: E402

VOC_WORDS = prompt_names(VOC_CLASSES, 'voc')


def voc_attention(name, noise=0.15):
    gt = load_label_png(shared_path('voc2012_val_samples', 'SegmentationClass', f'{name}.png'))
    maps, found = attention_from_labels(gt[None], VOC_WORDS, noise=noise, self_resolutions=(64,),
                                        cross_resolutions=(32, 16), seed=0)
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    return maps, [[VOC_CLASSES[VOC_WORDS.index(w)] for w in ws] for ws in found]


@pytest.mark.parametrize('name', ['voc_val_582', 'voc_val_0'])  # two classes, one
@pytest.mark.parametrize('precision', ['float16', 'float32'])
def test_cluster_off_labels_equal_the_release_from_fewer_launches(name, precision):
    """``map_precision='float16'`` (the default) against the release's operations on float16 maps
    (its U-Net gives them), ``'float32'`` against them on float32 maps. At batch 1 on CUDA
    (``'auto'``: Ent-Self replayed from a CUDA graph) both launch far fewer kernels than the
    release; eagerly, float32 still does, float16 pays 6 more (casts and the weighted parts)."""
    torch.set_num_threads(1)
    gen = ISeg.from_preset('wsss_voc', use_cluster=False, map_precision=precision)
    maps, names = voc_attention(name)
    ours, counts = count_ops(gen, maps, None, names)
    *maps_in, token_sel = released_args(maps, names, gen)
    args = [m.to(getattr(torch, precision)) for m in maps_in] + [token_sel]
    released, released_counts = count_ops(iseg_postprocess, *args, ent=gen.ent, iters=gen.iters,
                                          use_cluster=False)
    slots = torch.tensor([gen.background_index] + gen.class_indices(sorted(
        set(names[0]) - {'background'}, key=VOC_CLASSES.index)))
    assert torch.equal(ours[0], slots[released])
    gen.steps.graphed = lambda self_attn: True  # as 'auto' on CUDA at batch 1
    count_ops(gen, maps, None, names)  # records the graph (count_ops stands in for CUDA's)
    replayed, graph_counts = count_ops(gen, maps, None, names)
    assert torch.equal(replayed, ours)
    assert graph_counts.launches < released_counts.launches / 2, graph_counts.describe()
    if precision == 'float32':
        assert counts.launches < released_counts.launches, (counts.describe(),
                                                           released_counts.describe())
    assert counts.syncs_total == graph_counts.syncs_total == 1


@pytest.mark.parametrize('name, noise', [('voc_val_582', 0.3), ('voc_val_20', 0.4)])
def test_float16_maps_give_the_releases_labels_where_float32_maps_do_not(name, noise):
    """With cluster smoothing, on VOC ground-truth attention noisy enough that the float16
    rounding moves labels: the default (``map_precision='float16'``) gives the labels of the
    release's operations run in float16 on the same maps, pixel for pixel; ``'float32'`` differs
    on hundreds of pixels (497 and 3,913 of 262,144)."""
    torch.set_num_threads(1)
    maps, names = voc_attention(name, noise)
    gen = ISeg.from_preset('wsss_voc')
    assert gen.map_precision == 'float16'
    *maps_in, token_sel = released_args(maps, names, gen)
    released = iseg_postprocess(*[m.half() for m in maps_in], token_sel, ent=gen.ent,
                                iters=gen.iters)
    slots = torch.tensor([gen.background_index] + gen.class_indices(sorted(
        set(names[0]) - {'background'}, key=VOC_CLASSES.index)))
    assert torch.equal(gen(maps, None, names)[0], slots[released])
    float32 = ISeg.from_preset('wsss_voc', map_precision='float32')(maps, None, names)[0]
    assert (float32 != slots[released]).sum() > 100


def test_cam_normalize_after_minmax_skips_a_subtraction_that_changes_no_bit():
    maps = torch.rand(2, 3, 17, 9) * 4 - 1
    maps[0, 1] = 0.25  # constant: all zeros after min-max
    maps[1, 2] *= 1e-9  # range below min-max's eps
    normed = minmax_normalize(maps)
    assert torch.equal(cam_normalize(normed, zero_min=True), cam_normalize(normed))


def test_a_score_equal_to_cam_bg_thr_keeps_its_class():
    """The released cam_to_label zeroes scores strictly below bkg_thre
    (``reshape_cam[reshape_cam < bkg_thre] = 0``): a score equal to it still labels the pixel."""
    cams = torch.tensor([[0.5, 0.25, 0.125], [0.25, 0.5, 0.375]]).view(1, 2, 1, 3)
    for valid in (None, torch.tensor([[True, True]])):
        assert assign_labels(cams, valid, 0.5).flatten().tolist() == [1, 2, 0]


def test_a_padding_column_never_takes_a_pixel_whatever_its_score():
    """Padding columns (``valid`` False) lose to the background under both rules, even scored 1."""
    cams = torch.tensor([[0.5, 0.3, 0.0], [1.0, 1.0, 1.0]]).view(1, 2, 1, 3)
    valid = torch.tensor([[True, False]])
    # threshold 0.45: column 1 alone keeps a score at pixel 0, none elsewhere
    assert assign_labels(cams, valid, 0.45).flatten().tolist() == [1, 0, 0]
    # no threshold: background (1 - 0.5)^2 = 0.25 < 0.5, 0.49 > 0.3, 1 > 0
    assert assign_labels(cams, valid, 0.0).flatten().tolist() == [1, 0, 0]
