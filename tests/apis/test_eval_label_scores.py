"""evaluate_labels / evaluate_segments from Python as the tool scores: a class set's name reads
its dataset's ground truth (ADE20K's reduce_zero_label), labels without ground truth are left out
and listed, nothing labelled is no accuracy (NaN), and the fixes named for Cityscapes' labelIds
and for 16-bit segment ids."""
import math

import numpy as np
import pytest
from PIL import Image

from mmdiffseg.apis import UserInputError, evaluate_labels, evaluate_segments
from mmdiffseg.apis.eval_labels import format_report


def save(path, values, dtype=np.uint8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(values, dtype)).save(path)


def test_a_class_set_name_reads_its_datasets_ground_truth(tmp_path):
    """ADE20K's annotations hold 0 = other, k = class k-1: by hand, wall (0) 1/2, building (1)
    1/2, aAcc 2/3; scored as plain class indices (a list of names) every class is one off."""
    save(tmp_path / 'gt' / 'a.png', [[0, 1], [2, 2]])        # other, wall / building, building
    save(tmp_path / 'labels' / 'a.png', [[5, 0], [1, 0]])
    report = evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', 'ade20k')
    assert report['per_class_iou']['wall'] == report['per_class_iou']['building'] == 50.0
    assert report['aAcc'] == pytest.approx(66.67) and report['images'] == 1
    names = evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', 'ade20k')['per_class_iou']
    assert len(names) == 150
    with pytest.raises(UserInputError, match=r"classes='ade': a list of class names, or the name "
                                             r"of a class set: voc, "):
        evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', 'ade')
    plain = evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', names)
    assert plain['per_class_iou']['wall'] == 0.0  # ground truth 1 read as building

    # PASCAL Context 59 (iSeg's OVS task) reads mmseg's annotations as its dataset: 0 is
    # background, ignored; k is class k-1 (aeroplane 1 -> 0, bag 2 -> 1: mmseg's order)
    save(tmp_path / 'ctx_gt' / 'a.png', [[0, 1], [2, 2]])
    save(tmp_path / 'ctx' / 'a.png', [[7, 0], [1, 0]])
    context = evaluate_labels(tmp_path / 'ctx', tmp_path / 'ctx_gt', 'context59')
    assert context['per_class_iou']['aeroplane'] == context['per_class_iou']['bag'] == 50.0
    assert len(context['per_class_iou']) == 59


def test_labels_without_ground_truth_are_left_out_and_listed(tmp_path):
    """VOC's 10,582 aug labels against the 2,913 masks of SegmentationClass: the labels that
    have ground truth are scored, the others listed (they stopped the run); none: refused."""
    save(tmp_path / 'gt' / 'a.png', [[0, 1]])
    for name in ('a', 'b', 'c'):
        save(tmp_path / 'labels' / f'{name}.png', [[0, 1]])
    report = evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', ['background', 'cat'])
    assert report['images'] == 1 and report['mIoU'] == 100.0 and report['unscored'] == ['b', 'c']
    assert format_report(report).endswith('\nnot scored: 2 label(s) without ground truth, e.g. '
                                          'b, c')
    segments = evaluate_segments(tmp_path / 'labels', tmp_path / 'gt', ['background', 'cat'])
    assert segments['images'] == 1 and segments['unscored'] == ['b', 'c']
    (tmp_path / 'other').mkdir()
    with pytest.raises(UserInputError, match=r"no ground truth for 3 label\(s\)"):
        evaluate_labels(tmp_path / 'labels', tmp_path / 'other', ['background', 'cat'])


def test_no_labelled_pixel_is_no_accuracy(tmp_path):
    """Ground truth all 255: aAcc / ACC are 0 / 0, NaN (as mmseg's IoUMetric), not 0."""
    save(tmp_path / 'gt' / 'a.png', [[255, 255]])
    save(tmp_path / 'labels' / 'a.png', [[0, 1]])
    assert math.isnan(evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', ['a', 'b'])['aAcc'])
    assert math.isnan(evaluate_segments(tmp_path / 'labels', tmp_path / 'gt', ['a', 'b'])['ACC'])


def test_cityscapes_label_ids_without_train_ids_name_the_converter(tmp_path):
    save(tmp_path / 'gt' / 'val' / 'x' / 'x_000000_000019_gtFine_labelIds.png', [[7]])
    save(tmp_path / 'labels' / 'x_000000_000019_leftImg8bit.png', [[0]])
    with pytest.raises(UserInputError, match=r"holds \*_gtFine_labelIds\.png but no "
                                             r"\*_gtFine_labelTrainIds\.png: mmseg's "
                                             r"tools/dataset_converters/cityscapes\.py writes"):
        evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', 'cityscapes')


def test_16_bit_segment_ids_name_the_renumbering(tmp_path):
    save(tmp_path / 'gt' / 'a.png', [[0, 1]])
    save(tmp_path / 'labels' / 'a.png', [[300, 2]], np.uint16)
    with pytest.raises(UserInputError, match=r'label values up to 300; label maps hold 0\.\.255, '
                                             r'255 = unsure \(.*segment ids: renumber them below '
                                             r'255, np\.unique\(ids, return_inverse=True\)\)'):
        evaluate_segments(tmp_path / 'labels', tmp_path / 'gt', ['a', 'b'])


def test_ground_truth_without_a_label_and_labels_scored_against_themselves_are_named(tmp_path):
    """A pseudo-label run whose failed images wrote no label scored the rest silently (mIoU of
    2 of 3 images, nothing said); a --gt that holds the labels themselves gave 100%, silently."""
    for name in ('a', 'b', 'c'):
        save(tmp_path / 'gt' / 'val' / f'{name}.png', [[0, 1]])
    for name in ('a', 'b'):
        save(tmp_path / 'labels' / f'{name}.png', [[0, 0]])
    report = evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', ['background', 'cat'])
    assert report['images'] == 2 and report['unlabelled'] == ['val/c.png']
    assert report['unscored'] == report['own_ground_truth'] == []
    assert format_report(report).endswith(
        '\nnot scored: 1 ground-truth file(s) under --gt without a label, e.g. val/c.png')
    assert evaluate_segments(tmp_path / 'labels', tmp_path / 'gt',
                             ['background', 'cat'])['unlabelled'] == ['val/c.png']
    itself = evaluate_labels(tmp_path / 'labels', tmp_path / 'labels', ['background', 'cat'])
    assert itself['mIoU'] == 100.0 and itself['own_ground_truth'] == ['a', 'b']
    assert format_report(itself).endswith(
        '\nscored against themselves: 2 label file(s) that are their ground truth (--gt holds '
        'the labels), e.g. a, b')


def test_the_python_api_refuses_a_class_named_twice(tmp_path):
    """evaluate_labels(..., classes=[...]) keyed two classes' IoU under one name (21 names, 20
    IoUs), as --classes a,a,b did in the tool."""
    save(tmp_path / 'gt' / 'a.png', [[0, 1]])
    save(tmp_path / 'labels' / 'a.png', [[0, 1]])
    for evaluate in (evaluate_labels, evaluate_segments):
        with pytest.raises(UserInputError, match=r'^classes names cat more than once'):
            evaluate(tmp_path / 'labels', tmp_path / 'gt', ['background', 'cat', 'cat'])
