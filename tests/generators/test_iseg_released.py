"""iSeg without cluster smoothing against the transcription of the released post-processing
(``transcriptions.iseg_postprocess``): the same labels on attention built from VOC ground truth,
from fewer kernel launches at batch 1 (counted on the CPU, the proxy of a GPU's launch-bound
batch-1 time)."""
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


def voc_attention(name):
    gt = load_label_png(shared_path('voc2012_val_samples', 'SegmentationClass', f'{name}.png'))
    maps, found = attention_from_labels(gt[None], VOC_WORDS, noise=0.15, self_resolutions=(64,),
                                        cross_resolutions=(32, 16), seed=0)
    for key in ('self64', 'cross16', 'cross32'):
        maps.maps[f'iseg_{key}'] = maps.maps.pop(key)
    return maps, [[VOC_CLASSES[VOC_WORDS.index(w)] for w in ws] for ws in found]


@pytest.mark.parametrize('name', ['voc_val_582', 'voc_val_0'])  # two classes, one
def test_cluster_off_labels_equal_the_release_from_fewer_launches(name):
    torch.set_num_threads(1)
    gen = ISeg.from_preset('wsss_voc', use_cluster=False)
    maps, names = voc_attention(name)
    ours, counts = count_ops(gen, maps, None, names)
    args = released_args(maps, names, gen)
    released, released_counts = count_ops(iseg_postprocess, *args, ent=gen.ent, iters=gen.iters,
                                          use_cluster=False)
    slots = torch.tensor([gen.background_index] + gen.class_indices(sorted(
        set(names[0]) - {'background'}, key=VOC_CLASSES.index)))
    assert torch.equal(ours[0], slots[released])
    assert counts.launches < released_counts.launches, (counts.describe(),
                                                       released_counts.describe())
    assert counts.syncs_total == 1


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
