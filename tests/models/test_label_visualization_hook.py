"""OnlineLabelVisualizationHook draws what the model is trained on: the packed (BGR) training
image, in RGB, blended with its label's palette colour where the label has a class, and with the
tools' unsure colour where it is 255 (mmseg's visualizer left it dark, as VOC's black background);
every ``interval`` iterations, at most
``max_images`` images, rank 0 only. ModelInputVisualizationHook draws test predictions on the
same packed image, resized to the prediction where the pipeline resized the image."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from mmdiffseg.apis.folders import IGNORE_COLOR
from mmdiffseg.evaluation import HungarianMatchedIoU
from mmdiffseg.models import ModelInputVisualizationHook, OnlineLabelVisualizationHook

PALETTE = [[0, 0, 0], [200, 40, 10]]


@pytest.fixture
def runner():
    visualizer = SegLocalVisualizer(name='online-label-hook-test', alpha=0.5)
    visualizer.dataset_meta = dict(classes=('background', 'sheep'), palette=PALETTE)
    drawn = []
    visualizer.add_image = lambda name, image, step=0: drawn.append((name, step, image))
    return SimpleNamespace(visualizer=visualizer, iter=0, drawn=drawn)


def batch(images=3):
    rgb = np.zeros((16, 24, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 30, 90, 150
    label = torch.full((1, 16, 24), 255, dtype=torch.long)
    label[:, :, 12:] = 1
    samples = []
    for _ in range(images):
        sample = SegDataSample(metainfo=dict(img_shape=(16, 24)))
        sample.gt_sem_seg = PixelData(data=label.clone())
        samples.append(sample)
    bgr = torch.from_numpy(rgb[..., ::-1].copy()).permute(2, 0, 1)
    return dict(inputs=[bgr] * images, data_samples=samples), rgb


def test_draws_the_rgb_image_tinted_where_labelled(runner):
    """Each picture is named by its image file (a sample without a path: by its place)."""
    hook = OnlineLabelVisualizationHook(interval=2, max_images=2)
    data, rgb = batch()
    data['data_samples'][0].set_metainfo(dict(img_path='/voc/JPEGImages/2007_000032.jpg'))
    for it in range(4):
        runner.iter = it
        hook.after_train_iter(runner, it, data)
    assert [(name, step) for name, step, _ in runner.drawn] == [
        ('online_label_2007_000032.jpg', 2), ('online_label_1', 2),
        ('online_label_2007_000032.jpg', 4), ('online_label_1', 4)]
    picture = runner.drawn[0][2]
    assert picture.shape == (16, 24, 3)
    image = rgb.astype(float)
    unsure = 0.5 * image[:, :10] + 0.5 * np.array(IGNORE_COLOR)
    assert np.abs(picture[2:6, :2] - unsure[2:6, :2]).max() <= 1   # 255: the unsure colour
    tinted = 0.5 * image[:, 14:] + 0.5 * np.array(PALETTE[1])
    assert np.abs(picture[2:6, 14:16] - tinted[2:6, :2]).max() <= 1   # away from the name box
    assert runner.visualizer.dataset_meta['palette'] == PALETTE  # the run's meta is kept


def test_off_without_labels_or_batch_and_checks_its_options(runner):
    hook = OnlineLabelVisualizationHook(interval=1, draw=False)
    runner.iter = 0
    hook.after_train_iter(runner, 0, batch()[0])
    data, _ = batch(1)
    del data['data_samples'][0].gt_sem_seg
    OnlineLabelVisualizationHook(interval=1).after_train_iter(runner, 0, data)
    OnlineLabelVisualizationHook(interval=1).after_train_iter(runner, 0, None)
    assert runner.drawn == []
    with pytest.raises(ValueError, match='interval and max_images must be >= 1'):
        OnlineLabelVisualizationHook(interval=0)
    with pytest.raises(ValueError, match='got 1 and 0'):
        OnlineLabelVisualizationHook(interval=1, max_images=0)


# -- ModelInputVisualizationHook: test predictions drawn on the model's input --------------------
def predicted(pred, gt=None):
    """A test output on the 16x24 image of :func:`batch`."""
    sample = SegDataSample(metainfo=dict(img_shape=(16, 24), img_path='/data/x_leftImg8bit.png'))
    sample.pred_sem_seg = PixelData(data=torch.tensor(pred)[None])
    if gt is not None:
        sample.gt_sem_seg = PixelData(data=torch.tensor(gt)[None])
    return sample


def halves(left, right):
    return np.concatenate([np.full((16, 12), left), np.full((16, 12), right)], axis=1)


def test_input_hook_draws_segments_in_their_matched_classes(runner):
    """Unsupervised ids (a HungarianMatchedIoU evaluator) are drawn as the classes they are matched
    to: the prediction half of the picture equals the ground-truth half; the output is unchanged."""
    runner.test_evaluator = SimpleNamespace(metrics=[HungarianMatchedIoU(num_classes=2)])
    data, rgb = batch(1)
    sample = predicted(halves(7, 3), gt=halves(0, 1))
    ModelInputVisualizationHook(draw=True).after_test_iter(runner, 0, data, [sample])
    [(name, step, picture)] = runner.drawn
    assert (name, step, picture.shape) == ('test_x_leftImg8bit.png', 1, (16, 48, 3))
    assert np.array_equal(picture[:, :24], picture[:, 24:])
    image = rgb[4:].astype(float)                                       # under the names
    assert np.abs(picture[4:, 24:36] - 0.5 * image[:, :12]).max() <= 1  # class 0: black
    assert np.abs(picture[4:, 36:] - (0.5 * image[:, 12:] + 0.5 * np.array(PALETTE[1]))).max() <= 1
    assert sample.pred_sem_seg.data.unique().tolist() == [3, 7]
    named = np.abs(picture[:, 36:].astype(float) - (0.5 * rgb[:, 12:] + 0.5 * np.array(
        PALETTE[1]))).max(-1) > 60   # the class name written in the matched 'sheep' half
    assert named.any() and not named[4:].any()


def test_input_hook_draws_classes_as_predicted_and_segments_without_truth(runner):
    """With a class metric the prediction is drawn as it is (here: swapped classes); unsupervised
    ids without ground truth take the colour of id mod classes, without names."""
    runner.test_evaluator = SimpleNamespace(metrics=[])
    data, rgb = batch(1)
    hook = ModelInputVisualizationHook(draw=True)
    hook.after_test_iter(runner, 0, data, [predicted(halves(1, 0), gt=halves(0, 1))])
    picture = runner.drawn[0][2]
    assert not np.array_equal(picture[:, :24], picture[:, 24:])
    runner.test_evaluator = SimpleNamespace(metrics=[HungarianMatchedIoU(num_classes=2)])
    hook.after_test_iter(runner, 1, data, [predicted(halves(4, 5))])
    name, step, picture = runner.drawn[1]
    assert step == 2 and picture.shape == (16, 24, 3)
    image = rgb.astype(float)
    assert np.abs(picture[:, :12] - 0.5 * image[:, :12]).max() <= 1             # 4 mod 2 = 0
    assert np.abs(picture[:, 12:] - (0.5 * image[:, 12:] + 0.5 * np.array(PALETTE[1]))).max() <= 1


def test_input_hook_draws_unsure_class_labels_in_their_colour_not_as_background(runner):
    """A class prediction's 255 (iSeg's unsure pixels) is drawn in the unsure colour, as the
    online-label pictures and the tools' overlays draw it, not left undrawn like background
    (black at alpha 0.5); the run's meta is kept."""
    runner.test_evaluator = SimpleNamespace(metrics=[])
    data, rgb = batch(1)
    ModelInputVisualizationHook(draw=True).after_test_iter(
        runner, 0, data, [predicted(halves(0, 255))])
    picture = runner.drawn[0][2].astype(float)
    image = rgb.astype(float)
    assert np.abs(picture[4:, :12] - 0.5 * image[4:, :12]).max() <= 1      # background: black
    unsure = 0.5 * image[4:, 12:] + 0.5 * np.array(IGNORE_COLOR)
    assert np.abs(picture[4:, 14:] - unsure[:, 2:]).max() <= 1
    assert runner.visualizer.dataset_meta['palette'] == PALETTE


def test_input_hook_leaves_the_ground_truths_ignored_pixels_undrawn(runner):
    """The ground truth's 255 (VOC's object boundaries) is ignored, not unsure: it was drawn
    and named 'unsure' beside the prediction; the prediction's 255 still is, and the sample the
    metric reads keeps its ground truth."""
    runner.test_evaluator = SimpleNamespace(metrics=[])
    data, rgb = batch(1)
    sample = predicted(halves(255, 255), gt=halves(0, 255))
    ModelInputVisualizationHook(draw=True).after_test_iter(runner, 0, data, [sample])
    picture = runner.drawn[0][2].astype(float)
    image = rgb.astype(float)
    assert np.abs(picture[4:, 14:24] - 0.5 * image[4:, 14:]).max() <= 1   # gt 255: undrawn
    unsure = 0.5 * image[4:, 14:] + 0.5 * np.array(IGNORE_COLOR)
    assert np.abs(picture[4:, 38:] - unsure).max() <= 1                   # prediction 255
    assert sample.gt_sem_seg.data.unique().tolist() == [0, 255]


def test_input_hook_draws_a_framed_centre_square_on_the_square_it_shows(runner):
    """Without ground truth the DiffSeg protocol's prediction comes in its 16x32 frame, 255
    around the 16x16 centre square the input (resized to 32x32) shows: drawn over that square
    (the square's labels, not the frame squeezed onto it); a prediction of a whole image
    resized without keeping its ratio is drawn as it is."""
    runner.test_evaluator = SimpleNamespace(metrics=[])
    square = torch.zeros(3, 32, 32, dtype=torch.uint8)
    framed = np.full((16, 32), 255)
    framed[:, 8:24] = np.concatenate([np.zeros((16, 8)), np.ones((16, 8))], 1)
    sample = SegDataSample(metainfo=dict(img_shape=(32, 32), scale_factor=(2.0, 2.0),
                                         ori_shape=(16, 32), img_path='/data/x.jpg'))
    sample.pred_sem_seg = PixelData(data=torch.tensor(framed)[None])
    hook = ModelInputVisualizationHook(draw=True)
    hook.after_test_iter(runner, 0, dict(inputs=[square]), [sample])
    picture = runner.drawn[0][2].astype(float)
    assert picture.shape == (16, 16, 3)
    assert np.abs(picture[8:, 10:] - 0.5 * np.array(PALETTE[1])).max() <= 1    # class 1
    assert np.abs(picture[8:, :6]).max() <= 1                                   # class 0
    assert sample.pred_sem_seg.shape == (16, 32)                                # output kept
    whole = sample.clone()
    whole.set_metainfo(dict(scale_factor=(1.0, 2.0)))        # 16x32 resized to 32x32
    hook.after_test_iter(runner, 1, dict(inputs=[square]), [whole])
    assert runner.drawn[1][2].shape == (16, 32, 3)


def test_input_hook_interval_and_switches(runner):
    runner.test_evaluator = runner.val_evaluator = SimpleNamespace(metrics=[])
    data, _ = batch(1)
    outputs = [predicted(halves(0, 1))]
    hook = ModelInputVisualizationHook(draw=True, interval=2)
    for i in range(4):
        hook.after_val_iter(runner, i, data, outputs)
    assert [(name, step) for name, step, _ in runner.drawn] == [
        ('val_x_leftImg8bit.png', 1), ('val_x_leftImg8bit.png', 2)]
    ModelInputVisualizationHook().after_test_iter(runner, 0, data, outputs)   # draw=False
    assert len(runner.drawn) == 2
    with pytest.raises(ValueError, match='interval must be >= 1'):
        ModelInputVisualizationHook(interval=0)


def test_input_hook_leaves_ignored_segments_undrawn_without_truth(runner):
    """Without ground truth a segment id becomes class id mod classes, but the ignore index
    (255) stays ignored (darkened), not class 255 mod 2 = 1."""
    runner.test_evaluator = SimpleNamespace(metrics=[HungarianMatchedIoU(num_classes=2)])
    data, rgb = batch(1)
    ModelInputVisualizationHook(draw=True).after_test_iter(
        runner, 0, data, [predicted(halves(255, 3))])
    picture = runner.drawn[0][2].astype(float)
    image = rgb.astype(float)
    assert np.abs(picture[:, :12] - 0.5 * image[:, :12]).max() <= 1
    assert np.abs(picture[:, 12:] - (0.5 * image[:, 12:] + 0.5 * np.array(PALETTE[1]))).max() <= 1


def test_input_hook_reads_the_validation_evaluator_and_shows_when_asked(runner):
    """Validation pictures match segments by the val evaluator's metric (the test one differs);
    ``show`` puts each picture in a window for ``wait_time`` seconds."""
    runner.val_evaluator = SimpleNamespace(metrics=[HungarianMatchedIoU(num_classes=2)])
    runner.test_evaluator = SimpleNamespace(metrics=[])
    shown = []
    runner.visualizer.show = lambda image, win_name='', wait_time=0., **_: shown.append(
        (win_name, wait_time))
    data, _ = batch(1)
    hook = ModelInputVisualizationHook(draw=True, show=True, wait_time=2)
    hook.after_val_iter(runner, 0, data, [predicted(halves(7, 3), gt=halves(0, 1))])
    [(name, _, picture)] = runner.drawn
    assert name == 'val_x_leftImg8bit.png' and np.array_equal(picture[:, :24], picture[:, 24:])
    assert shown == [('val_x_leftImg8bit.png', 2.0)]


def test_input_hook_draws_a_prediction_made_before_the_pipelines_resize(runner):
    """A test pipeline that resizes before LoadAnnotations (mmseg's own order): the prediction
    comes at the ground truth's size, the image's, and mmseg's visualizer stopped with an
    IndexError on the smaller model input; the input is drawn at the prediction's size."""
    runner.test_evaluator = SimpleNamespace(metrics=[])
    data, rgb = batch(1)
    big = np.kron(halves(1, 0), np.ones((2, 2), np.int64))        # 32x48, as the image file
    ModelInputVisualizationHook(draw=True).after_test_iter(runner, 0, data,
                                                           [predicted(big, gt=big)])
    picture = runner.drawn[0][2]
    assert picture.shape == (32, 96, 3)
    image = rgb[0, 0].astype(float)                                   # a uniform image
    assert np.abs(picture[20:, 72:] - 0.5 * image).max() <= 1         # class 0: black
    assert np.abs(picture[20:, 48:72] - (0.5 * image + 0.5 * np.array(PALETTE[1]))).max() <= 1
