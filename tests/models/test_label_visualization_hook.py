"""OnlineLabelVisualizationHook draws what the model is trained on: the packed (BGR) training
image, in RGB, blended with its label's palette colour where the label has a class (with black
where it is ignored, 255, as mmseg's visualizer draws); every ``interval`` iterations, at most
``max_images`` images, rank 0 only."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from mmseg.visualization import SegLocalVisualizer

from mmdiffseg.models import OnlineLabelVisualizationHook

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
    hook = OnlineLabelVisualizationHook(interval=2, max_images=2)
    data, rgb = batch()
    for it in range(4):
        runner.iter = it
        hook.after_train_iter(runner, it, data)
    assert [(name, step) for name, step, _ in runner.drawn] == [
        ('online_label_0', 2), ('online_label_1', 2), ('online_label_0', 4), ('online_label_1', 4)]
    picture = runner.drawn[0][2]
    assert picture.shape == (16, 24, 3)
    image = rgb.astype(float)
    assert np.abs(picture[:, :10] - 0.5 * image[:, :10]).max() <= 1   # ignored: darkened
    tinted = 0.5 * image[:, 14:] + 0.5 * np.array(PALETTE[1])
    assert np.abs(picture[2:6, 14:16] - tinted[2:6, :2]).max() <= 1   # away from the name box


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
