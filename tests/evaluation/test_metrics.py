"""Pseudo-label quality (IoU + coverage) and DiffSeg's Hungarian-matched protocol."""
import inspect

import numpy as np
import pytest
import torch
from mmseg.registry import METRICS
from PIL import Image
from scipy.optimize import linear_sum_assignment

import mmdiffseg  # noqa: F401
import mmdiffseg.evaluation  # noqa: F401
from mmdiffseg.evaluation import HungarianMatchedIoU, match_segments, matched_classes


def sample(pred, gt):
    return dict(pred_sem_seg=dict(data=torch.tensor(pred)[None]),
                gt_sem_seg=dict(data=torch.tensor(gt)[None]))


def test_match_segments_hand_computed():
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 2, 255]])
    # segment 7 covers class 0 and one pixel of class 2; segments 3 and 9 split class 1;
    # segment 5 covers the rest of class 2
    pred = np.array([[7, 7, 3, 9],
                     [7, 7, 3, 9],
                     [7, 5, 5, 5]])
    tp, fp, fn = match_segments(gt, pred, num_classes=3)
    # confusion rows (0,1,2) x segments (3,5,7,9): [[0,0,4,0],[2,0,0,2],[0,2,1,0]]
    # best matching: 0->7 (4), 1->3 or 9 (2), 2->5 (2)
    assert tp.tolist() == [4, 2, 2]
    assert fp.tolist() == [1, 0, 0]
    assert fn.tolist() == [0, 2, 1]   # the unmatched segment's pixels are FN of class 1


def test_match_segments_more_classes_than_segments_and_unassigned():
    gt = np.array([[0, 1, 2, 2]])
    pred = np.array([[4, 4, 255, 4]])  # one segment, one unassigned pixel
    tp, fp, fn = match_segments(gt, pred, num_classes=3)
    assert tp.sum() == 1 and tp[[0, 1]].sum() == 1
    assert fn[2] == 2 and fp.sum() == 2


def test_matched_classes_paints_each_segment_with_its_matched_class():
    """The drawing of unsupervised predictions: the matching match_segments scores, as labels."""
    gt = np.array([[0, 0, 1, 1],
                   [0, 0, 1, 1],
                   [2, 2, 2, 255]])
    pred = np.array([[7, 7, 3, 3],
                     [7, 7, 3, 9],      # 9: one pixel of class 1, loses to 3
                     [5, 5, 5, 255]])   # 255: unassigned stays so
    tp, _, _ = match_segments(gt, pred, num_classes=3)
    assert tp.tolist() == [4, 3, 3]
    assert matched_classes(gt, pred, num_classes=3).tolist() == [[0, 0, 1, 1],
                                                                  [0, 0, 1, 255],
                                                                  [2, 2, 2, 255]]
    # more classes than segments; a segment seen only where the ground truth is unlabelled
    gt, pred = np.array([[0, 1, 255]]), np.array([[4, 4, 8]])
    assert matched_classes(gt, pred, num_classes=3).tolist() in ([[0, 0, 255]], [[1, 1, 255]])
    assert matched_classes(gt, np.full((1, 3), 255), 3).tolist() == [[255, 255, 255]]


def test_hungarian_metric_accumulates_over_images():
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=3))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    gt1, pred1 = [[0, 0, 1, 1]], [[5, 5, 6, 6]]          # perfect
    # image 2: 2 -> segment 1 (TP 2, FP 1), 0 -> segment 2 (TP 1, FN 1), 1 -> padding
    gt2, pred2 = [[2, 2, 0, 0]], [[1, 1, 2, 1]]
    metric.process({}, [sample(pred1, gt1), sample(pred2, gt2)])
    result = metric.evaluate(2)
    # TP = [3, 2, 2], FP = [0, 0, 1], FN = [1, 0, 0], 8 labelled pixels
    assert result['ACC'] == pytest.approx(round(100 * 7 / 8, 2))
    assert result['mIoU'] == pytest.approx(round(100 * (3 / 4 + 1 + 2 / 3) / 3, 2))


def test_a_class_absent_everywhere_is_left_out_of_the_mean():
    """A class in neither the ground truth nor the matches has no IoU (NaN) and is left out of
    mIoU, as mmseg does: counted as 0 it would lower the score of a perfect prediction."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=3))
    metric.process({}, [sample([[5, 5, 6, 6]], [[0, 0, 1, 1]])])
    assert metric.evaluate(1)['mIoU'] == 100.0  # class 2 never appears: NaN, not 0


def test_no_labelled_pixel_scores_nan_as_eval_labels_does(recwarn):
    """Ground truth wholly ignored (255): ACC and mIoU are undefined (NaN, as evaluate_segments
    and mmseg's IoUMetric give 0 / 0), not an ACC of 0, and numpy warns nothing."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=3))
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process({}, [sample([[5, 5, 6, 6]], [[255, 255, 255, 255]])])
    result = metric.evaluate(1)
    assert np.isnan(result['ACC']) and np.isnan(result['mIoU'])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_segment_seen_only_on_unlabelled_pixels_takes_no_class():
    """matched_classes paints a class only on segments the matching saw on labelled pixels: a
    segment lying wholly on ignored ground truth has no evidence and stays unassigned (255)."""
    gt, pred = np.array([[0, 0, 255]]), np.array([[1, 1, 0]])
    assert matched_classes(gt, pred, num_classes=3).tolist() == [[0, 0, 255]]


def test_hungarian_metric_size_mismatch_is_an_error():
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=3))
    with pytest.raises(ValueError, match='differ in size'):
        metric.process({}, [sample([[0, 1]], [[0, 1, 1]])])


def test_pseudo_label_metric_iou_and_coverage():
    metric = METRICS.build(dict(type='PseudoLabelMetric', iou_metrics=['mIoU']))
    metric.dataset_meta = dict(classes=('background', 'cat'))
    gt = [[0, 0, 1, 1], [0, 0, 1, 1]]
    pred = [[0, 255, 1, 1], [0, 0, 255, 0]]   # 2 unsure pixels of 8
    metric.process({}, [sample(pred, gt)])
    result = metric.evaluate(1)
    assert result['coverage'] == 75.0
    # background: TP 3, pred 4, gt 4 -> IoU 3/5; cat: TP 2, pred 2, gt 4 -> IoU 2/4
    assert result['mIoU'] == pytest.approx(round(100 * (3 / 5 + 2 / 4) / 2, 2))


def test_pseudo_label_metric_with_one_class_does_not_score_unsure_pixels():
    """One class (``--classes cat,``): 2 of 4 pixels right, 2 unsure -> IoU 2 / 4, as with more
    classes (mmseg's ``histc`` counted the unsure pixels as predictions of the class: 2 / 6)."""
    metric = METRICS.build(dict(type='PseudoLabelMetric', iou_metrics=['mIoU']))
    metric.dataset_meta = dict(classes=('cat',))
    metric.process({}, [sample([[0, 0], [255, 255]], [[0, 0], [0, 0]])])
    result = metric.evaluate(1)
    assert result['mIoU'] == 50.0 and result['aAcc'] == 50.0 and result['coverage'] == 50.0


@pytest.mark.parametrize('num_classes', [2, 3, 5])
def test_pseudo_label_areas_equal_mmseg_iou_metric_from_two_classes(num_classes):
    from mmseg.evaluation import IoUMetric
    from mmdiffseg.evaluation import PseudoLabelMetric
    gen = torch.Generator().manual_seed(num_classes)
    pred = torch.randint(0, num_classes + 1, (32, 32), generator=gen)
    label = torch.randint(0, num_classes + 1, (32, 32), generator=gen)
    pred[pred == num_classes], label[label == num_classes] = 255, 255
    for ours, theirs in zip(PseudoLabelMetric.intersect_and_union(pred, label, num_classes, 255),
                            IoUMetric.intersect_and_union(pred, label, num_classes, 255)):
        assert torch.equal(ours, theirs)


def released_counts(gt, pred, num_classes):
    """TP, FP, FN of google/diffseg's ``hungarian_matching`` for one image, restated: the ids are
    the columns, ``max(num_classes, largest id + 1)`` of them."""
    width = max(num_classes, int(pred.max()) + 1)
    labelled = gt != 255
    hist = np.bincount(width * gt[labelled] + pred[labelled],
                       minlength=num_classes * width).reshape(num_classes, width)
    rows, cols = linear_sum_assignment(hist, maximize=True)
    tp = hist[rows, cols]
    return np.stack([tp, hist[:, cols].sum(0) - tp, hist.sum(1) - tp])


@pytest.mark.parametrize('pred', [[[0, 0, 3, 1, 1, 1]],     # proposal 2 won no pixel
                                  [[0, 0, 2, 1, 1, 1]],     # the same segments, no gap
                                  [[5, 5, 2, 1, 1, 9]]])
def test_match_segments_lays_out_the_ids_as_released(pred):
    """The absent class 2 takes a left-over column at zero gain: with the ids 0, 1, 3 the released
    layout (4 columns) leaves the one-pixel segment 3 unmatched, so it costs class 2 nothing; with
    0, 1, 2 (3 columns) every column is matched and class 2 is charged its pixel as FP."""
    gt, pred = np.array([[0, 0, 0, 1, 1, 255]]), np.array(pred)
    ours = match_segments(gt, pred, num_classes=3)
    np.testing.assert_array_equal(ours, released_counts(gt, pred, 3))
    assert ours[0].tolist() == [2, 2, 0]
    if pred.max() == 3:
        assert ours[1].tolist() == [0, 0, 0]
    elif pred.max() == 2:
        assert ours[1].tolist() == [0, 0, 1]


def test_acc_divides_by_labelled_pixels_not_by_matched_segment_pixels():
    """ACC = sum TP / labelled pixels: the pixels of a segment left unmatched (here segment 6 on
    one class-0 pixel) count as misses, so a prediction with an extra segment is not perfect."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2))
    metric.process({}, [sample([[5, 5, 6, 7]], [[0, 0, 0, 1]])])
    result = metric.evaluate(1)
    # 0 -> 5 (TP 2, FN 1: the pixel of 6), 1 -> 7 (TP 1): TP 3 of 4 labelled pixels
    assert result['ACC'] == 75.0
    assert result['mIoU'] == pytest.approx(round(100 * (2 / 3 + 1) / 2, 2))


def test_match_segments_refuses_negative_ids_and_classes_out_of_range():
    """A negative segment id would alias another (class, id) cell of the flattened confusion
    (class 1, id -1 = class 0, id 1) and a ground-truth value of num_classes does not fit its
    rows: both are refused with the reason, not scored."""
    with pytest.raises(ValueError, match='segment ids must be non-negative, got -1'):
        match_segments(np.array([[0, 1]]), np.array([[0, -1]]), num_classes=2)
    with pytest.raises(ValueError, match=r'outside 0\.\.2 \(and 255\): \[3\]'):
        match_segments(np.array([[0, 3]]), np.array([[0, 255]]), num_classes=3)


def test_segment_ids_past_16_bits_are_refused_not_allocated():
    """A column per id up to the largest: ids past 65535 are refused with the fix (an id of
    2**40 asked numpy for 216 TiB); 65535 itself is scored."""
    tp, _, _ = match_segments(np.array([[0, 1]]), np.array([[7, 65535]]), num_classes=2)
    assert tp.tolist() == [1, 1]
    for big in (65536, 2 ** 40):
        with pytest.raises(ValueError, match=f'segment ids up to 65535 are scored .* got {big}: '
                                             'renumber'):
            match_segments(np.array([[0, 1]]), np.array([[0, big]]), num_classes=2)


def test_saved_predictions_refuse_ids_past_255(tmp_path):
    """output_dir holds 8-bit PNGs: segment id 256 would be written as 0, another segment, so it
    is refused; 255 (unassigned) is written as it is."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2,
                                output_dir=str(tmp_path), format_only=True))
    with pytest.raises(ValueError, match='segment ids up to 256 do not fit'):
        metric.process({}, [dict(sample([[0, 256]], [[0, 1]]), img_path='a.jpg')])
    metric.process({}, [dict(sample([[0, 255], [3, 3]], [[0, 1], [1, 1]]), img_path='b.jpg')])
    assert np.array(Image.open(tmp_path / 'b.png')).tolist() == [[0, 255], [3, 3]]


def test_scoring_images_without_ground_truth_names_format_only():
    """A test pipeline without LoadAnnotations: a bare KeyError 'gt_sem_seg' after the model ran;
    format_only writes the predictions and scores nothing."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2))
    unlabelled = sample([[0, 1]], [[0, 1]])
    del unlabelled['gt_sem_seg']
    with pytest.raises(ValueError, match=r'^HungarianMatchedIoU: a.jpg has no ground truth to '
                                         r'match segments against .*format_only=True'):
        metric.process({}, [dict(unlabelled, img_path='a.jpg')])


def test_pseudo_label_coverage_adds_up_over_batches():
    """Coverage is counted for every image of every batch (process called once per batch, as the
    evaluator and tools/eval_labels.py do), not only the first batch's."""
    metric = METRICS.build(dict(type='PseudoLabelMetric', iou_metrics=['mIoU']))
    metric.dataset_meta = dict(classes=('background', 'cat'))
    metric.process({}, [sample([[0, 255]], [[0, 0]])])
    metric.process({}, [sample([[1, 1]], [[1, 1]]), sample([[255, 255]], [[1, 1]])])
    result = metric.evaluate(3)
    assert result['coverage'] == 50.0   # 3 of 6 pixels have a class
    # background: TP 1, GT 2 -> 1/2; cat: TP 2, GT 4 -> 2/4
    assert result['mIoU'] == 50.0


def test_fewer_ids_than_classes_still_laid_out_num_classes_wide():
    """With ids 0..2 and 4 classes the confusion keeps the released 4 columns (a padding column
    3): the absent classes 0 and 1 take the left-over columns, so absent class 1 is charged the
    pixel of segment 1 as FP and class 3 is matched to the mixed segment 2. Dropping the padding
    changes which class pays, and the image's mIoU (1/3 instead of (0 + 1/2 + 1/3) / 3)."""
    gt, pred = np.array([[2, 3, 2, 3]]), np.array([[0, 2, 2, 1]])
    counts = match_segments(gt, pred, num_classes=4)
    np.testing.assert_array_equal(counts, released_counts(gt, pred, 4))
    assert counts.tolist() == [[0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1]]
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=4))
    metric.process({}, [sample(pred.tolist(), gt.tolist())])
    assert metric.evaluate(1) == dict(ACC=50.0, mIoU=round(100 * (0 + 1 / 2 + 1 / 3) / 3, 2))


def test_match_segments_of_8_bit_maps_as_read_from_pngs():
    """Label PNGs are read as uint8 (tools/eval_labels.py --hungarian): class 26 of 27 must not
    wrap around in the flattened confusion index (26 * 27 = 702 > 255); the counts equal those
    of the same maps as int64."""
    gt = np.array([[26, 26, 26, 0], [0, 13, 255, 13]], dtype=np.uint8)
    pred = np.array([[3, 3, 3, 200], [200, 255, 7, 5]], dtype=np.uint8)
    counts = match_segments(gt, pred, num_classes=27)
    np.testing.assert_array_equal(counts, match_segments(gt.astype(np.int64),
                                                         pred.astype(np.int64), 27))
    tp, fp, fn = counts
    assert (tp[26], tp[0], tp[13]) == (3, 2, 1) and tp.sum() == 6
    assert fp.sum() == 0 and fn.sum() == 1   # the unassigned pixel of class 13


def test_hungarian_metric_rounds_to_two_decimals_and_refuses_transposed_maps():
    """ACC / mIoU are percentages to 2 decimals; a prediction with the ground truth's pixel
    count but another shape (transposed) is refused, not compared pixel by pixel."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2))
    metric.process({}, [sample([[4, 4, 5]], [[0, 0, 0]])])   # 0 -> 4 (TP 2, FN 1)
    assert metric.evaluate(1) == dict(ACC=66.67, mIoU=66.67)
    with pytest.raises(ValueError, match='differ in size'):
        metric.process({}, [sample([[0, 1, 1], [0, 1, 1]], [[0, 1], [0, 1], [0, 1]])])


def test_hungarian_metric_writes_predictions_and_scores(tmp_path):
    """output_dir without format_only (tools/test.py --out on a labelled set): the segment ids
    are written and the images are scored."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2,
                                output_dir=str(tmp_path)))
    metric.process({}, [dict(sample([[9, 9], [4, 4]], [[1, 1], [0, 0]]), img_path='d/x.jpg')])
    assert np.array(Image.open(tmp_path / 'x.png')).tolist() == [[9, 9], [4, 4]]
    assert metric.evaluate(1) == dict(ACC=100.0, mIoU=100.0)


def test_hungarian_predictions_are_refused_when_scored_as_classes(tmp_path):
    """tools/test.py --out of segment ids, scored by eval_labels.py without --hungarian, were
    read as class indices (mIoU 0.20 on ADE20K, and a hint about the zero-label convention):
    the folder says what it holds, so they are refused with the fix."""
    from mmdiffseg.apis.eval_labels import evaluate_labels, evaluate_segments
    from mmdiffseg.apis.io import UserInputError
    preds, gt = tmp_path / 'preds', tmp_path / 'gt'
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2, output_dir=str(preds),
                                format_only=True))
    metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor([[[9, 4], [9, 4]]])),
                             img_path='d/x.jpg')])
    gt.mkdir()
    Image.fromarray(np.array([[1, 0], [1, 0]], np.uint8)).save(gt / 'x.png')
    with pytest.raises(UserInputError, match='unlabelled segment ids .*score them with '
                                             '--hungarian'):
        evaluate_labels(preds, gt, ['a', 'b'])
    assert evaluate_segments(preds, gt, ['a', 'b'])['mIoU'] == 100.0   # as segments: scored
    # class labels in a sub-folder of it are not its segment ids
    (preds / 'classes').mkdir()
    Image.fromarray(np.array([[1, 0], [1, 0]], np.uint8)).save(preds / 'classes' / 'x.png')
    assert evaluate_labels(preds / 'classes', gt, ['a', 'b'])['mIoU'] == 100.0


def test_a_later_class_metric_in_the_same_folder_forgets_the_segment_ids(tmp_path):
    """tools/test.py --out with a class metric (mmseg's IoUMetric) into a folder a Hungarian run
    wrote: its manifest would call the class labels segment ids, and the refusal's fix
    (--hungarian) would score them optimistically. The manifest goes; another's stays."""
    import json
    from mmdiffseg.apis.eval_labels import evaluate_labels
    from mmdiffseg.evaluation.unsupervised_metric import forget_segment_ids
    preds, gt = tmp_path / 'preds', tmp_path / 'gt'
    METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2, output_dir=str(preds)))
    forget_segment_ids(str(preds))
    assert not (preds / 'manifest.json').exists()
    gt.mkdir()
    for folder in (preds, gt):
        Image.fromarray(np.array([[1, 0]], np.uint8)).save(folder / 'x.png')
    assert evaluate_labels(preds, gt, ['a', 'b'])['mIoU'] == 100.0
    other = dict(manifest='mmdiffseg', tool='segment', classes=None)
    (preds / 'manifest.json').write_text(json.dumps(other))
    forget_segment_ids(str(preds))
    assert json.loads((preds / 'manifest.json').read_text()) == other
    forget_segment_ids(str(tmp_path / 'nowhere'))


def test_pseudo_label_coverage_follows_ignore_index_and_rounds():
    """Coverage counts the pixels that are not the metric's ignore_index (here 254, so 255 is
    a class value), as a percentage to 2 decimals."""
    classes = tuple(f'c{i}' for i in range(256))
    metric = METRICS.build(dict(type='PseudoLabelMetric', iou_metrics=['mIoU'], ignore_index=254))
    metric.dataset_meta = dict(classes=classes)
    metric.process({}, [sample([[254, 255, 254]], [[0, 255, 0]])])
    assert metric.evaluate(1)['coverage'] == 33.33


def test_pseudo_label_metric_format_only_writes_labels_and_scores_nothing(tmp_path):
    """format_only (labels without ground truth): the labels are written, as IoUMetric does,
    and no score is reported (no coverage of 0 for images that were never counted)."""
    metric = METRICS.build(dict(type='PseudoLabelMetric', format_only=True,
                                output_dir=str(tmp_path)))
    metric.dataset_meta = dict(classes=('background', 'cat'))
    metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor([[[0, 1], [1, 255]]])),
                             img_path='d/y.jpg')])
    assert np.array(Image.open(tmp_path / 'y.png')).tolist() == [[0, 1], [1, 255]]
    assert metric.evaluate(1) == {}


def test_unassigned_pixels_stay_unassigned_when_segment_0_is_matched():
    """An unsure (255) prediction is drawn as 255 even where segment 0, matched to class 0,
    exists: it is not read as segment 0 (hand-matched: 0 -> class 0, 1 -> class 1)."""
    gt = np.array([[0, 0, 1, 1]])
    pred = np.array([[0, 255, 1, 255]])
    assert matched_classes(gt, pred, num_classes=2).tolist() == [[0, 255, 1, 255]]


def test_format_only_needs_no_ground_truth(tmp_path):
    """format_only (images without ground truth): samples without ``gt_sem_seg`` are written,
    not matched, and nothing is scored."""
    metric = METRICS.build(dict(type='HungarianMatchedIoU', num_classes=2,
                                output_dir=str(tmp_path), format_only=True))
    metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor([[[3, 3], [0, 1]]])),
                             img_path='a/b.jpg')])
    assert metric.results == []
    assert np.array(Image.open(tmp_path / 'b.png')).tolist() == [[3, 3], [0, 1]]
    assert metric.compute_metrics(metric.results) == {}


def test_the_class_count_is_the_datasets_and_another_is_refused():
    """The default was 27 whatever the dataset: a 3-class dataset scored mIoU over 27 classes
    (4.76 where the 3 classes give 12.7) and printed 3 of them. As mmseg's IoUMetric, the
    class count is the dataset's; a given count the dataset's differs from is refused."""
    default = inspect.signature(HungarianMatchedIoU).parameters['num_classes'].default
    assert default is None
    metric = HungarianMatchedIoU()
    with pytest.raises(ValueError, match='no num_classes and no dataset classes.*27 for'):
        metric.num_classes
    metric.dataset_meta = dict(classes=tuple(f'c{i}' for i in range(27)))
    assert metric.num_classes == 27
    metric = HungarianMatchedIoU(num_classes=27)
    metric.dataset_meta = dict(classes=('road', 'car', 'sky'))
    with pytest.raises(ValueError, match=r'^HungarianMatchedIoU\(num_classes=27\), but the '
                                         'dataset has 3 classes: set num_classes=3, or leave '
                                         'it out'):  # the metric's setting, not the image's
        metric.process({}, [sample([[0, 1]], [[0, 1]])])
    metric = HungarianMatchedIoU()
    metric.dataset_meta = dict(classes=('road', 'car', 'sky'))
    metric.process({}, [sample([[4, 4, 5]], [[0, 1, 2]])])
    assert metric.results[0].shape == (3, 3)
    with pytest.raises(ValueError, match=r'a/x.png: ground truth holds values outside 0\.\.2 '
                                         r'\(and 255\): \[7\]; .*label_map'):
        metric.process({}, [dict(sample([[0]], [[7]]), img_path='a/x.png')])
