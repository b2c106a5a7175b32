"""label_images: the one path from images to uint8 labels (online labels, tools, segmentor)."""
import numpy as np
import pytest
import torch

import mmdiffseg  # noqa: F401
from mmdiffseg.attention import AttentionMaps, CaptureRequest, CaptureSpec
from mmdiffseg.attention.images import WORK_SIZE
from mmdiffseg.attention.testing import tiny_engine
from mmdiffseg.generators import MaskGenerator
from mmdiffseg.models.online_labeler import label_images
from sample_data import shared_path


class QuadrantLabels(MaskGenerator):
    """Labels ``value`` on the top-left quadrant of the working image, 0 elsewhere."""

    def __init__(self, value):
        super().__init__()
        self.value = value

    @property
    def capture_spec(self):
        return CaptureSpec((CaptureRequest('self', 8),))

    def extract_kwargs(self, class_names):
        return {}

    def forward(self, maps, images, class_names):
        b, _, h, w = images.shape
        labels = torch.zeros(b, h, w, dtype=torch.int64)
        labels[:, :h // 2, :w // 2] = self.value
        return labels


@pytest.fixture(scope='module')
def engine():
    return tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))


def test_labels_come_back_at_each_image_size(engine):
    images = [np.zeros((40, 60, 3), np.uint8), np.zeros((100, 50, 3), np.uint8)]
    labels = label_images(engine, QuadrantLabels(7), images, None)
    assert [lab.shape for lab in labels] == [(40, 60), (100, 50)]
    assert all(lab.dtype == np.uint8 for lab in labels)
    expected = np.zeros((100, 50), np.uint8)
    expected[:50, :25] = 7
    np.testing.assert_array_equal(labels[1], expected)
    resized = label_images(engine, QuadrantLabels(7), images, None, out_sizes=[(8, 8), (4, 6)])
    np.testing.assert_array_equal(resized[1], np.pad(np.full((2, 3), 7, np.uint8), ((0, 2), (0, 3))))


def test_labels_are_resized_by_pixel_centres():
    """A generator without its own labels_at: label pixel d of an output of side n reads working
    pixel floor((d + 0.5) * 512 / n), the nearest centre (torch's 'nearest' read floor(d * 512 / n),
    a neighbour's row or column at VOC sizes)."""
    class Stripes(QuadrantLabels):
        def forward(self, maps, images, class_names):
            b, _, h, w = images.shape
            rows = torch.arange(h)[:, None].expand(h, w)
            return (rows * 7 + torch.arange(w)[None] % 5).expand(b, h, w) % 251
    work = torch.zeros(1, 3, 512, 512)
    maps = AttentionMaps({'self8': torch.zeros(1, 64, 64)}, [''], [{}], (512, 512))
    full = Stripes(0)(maps, work, None)[0]
    for size in [(375, 500), (333, 500), (281, 500), (512, 512), (700, 1024)]:
        label = Stripes(0).labels_at(maps, work, None, [size])[0]
        rows = ((torch.arange(size[0]) + 0.5) * 512 / size[0]).long()
        cols = ((torch.arange(size[1]) + 0.5) * 512 / size[1]).long()
        assert torch.equal(label, full[rows][:, cols]), size


def test_labels_beyond_uint8_are_refused_not_wrapped(engine):
    with pytest.raises(ValueError, match='made label 300'):
        label_images(engine, QuadrantLabels(300), [np.zeros((64, 64, 3), np.uint8)], None)


class AttentionAndBrightness(QuadrantLabels):
    """On the offline tools' loaded batch (a uint8 ``(B, 3, H, W)`` tensor, pinned on CUDA):
    a label that depends on the attention and on the image: the key each 8x8 query attends
    to most (0..63), plus 64 where the working image is bright."""

    def forward(self, maps, images, class_names):
        attention = next(iter(maps.maps.values()))
        strongest = attention.argmax(-1).reshape(-1, 1, 8, 8).float()
        grid = torch.nn.functional.interpolate(strongest, size=images.shape[-2:],
                                               mode='nearest')[:, 0].long()
        return grid + 64 * (images.mean(1) > 127).long()


def test_a_batch_tensor_gives_the_labels_of_the_arrays(engine):
    rng = np.random.RandomState(0)
    arrays = [rng.randint(0, 256, (64, 64, 3)).astype(np.uint8) for _ in range(3)]
    arrays[1][:32] = 255  # a bright half
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    sizes = [(30, 50), (64, 20), (7, 7)]
    from_arrays = label_images(engine, AttentionAndBrightness(0), arrays, None, sizes)
    from_batch = label_images(engine, AttentionAndBrightness(0), batch, None, sizes)
    assert [lab.shape for lab in from_batch] == sizes
    assert all(lab.dtype == np.uint8 for lab in from_batch)
    for a, b in zip(from_arrays, from_batch):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(from_batch[1])) > 2 and from_batch[1][:15].min() >= 64


def segmentor_batch(engine, sizes, **preprocessor):
    """A DiffusionSegmentor on ``engine`` labelling with ``QuadrantLabels(7)``, and a test batch
    of black images of ``sizes`` as the dataloader packs it."""
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    from mmdiffseg.models import DiffusionSegmentor
    init_default_scope('mmseg')
    segmentor = DiffusionSegmentor('tiny', QuadrantLabels(7), data_preprocessor=dict(
        type='SegDataPreProcessor', bgr_to_rgb=True, **preprocessor))
    segmentor.labeler.engine = engine
    samples = []
    for size in sizes:
        sample = SegDataSample(metainfo=dict(img_shape=size, ori_shape=size))
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *size, dtype=torch.long))
        samples.append(sample)
    return segmentor, dict(inputs=[torch.zeros(3, *size, dtype=torch.uint8) for size in sizes],
                           data_samples=samples)


def labelled_alone(engine, size):
    [label] = label_images(engine, QuadrantLabels(7), [np.zeros((*size, 3), np.uint8)], None)
    return label


def test_segmentor_labels_each_image_without_the_preprocessors_padding(engine):
    """DiffusionSegmentor cuts the data preprocessor's test padding (``test_cfg`` size_divisor,
    as Mask2Former configs set) off each image before labelling: the generator sees the
    40x60 image, not the 64x64 canvas (whose quadrant would be 32x32, not 20x30)."""
    segmentor, batch = segmentor_batch(engine, [(40, 60)], test_cfg=dict(size_divisor=32))
    data = segmentor.data_preprocessor(batch, False)
    assert data['inputs'].shape[-2:] == (64, 64)
    [predicted] = segmentor.predict(**data)
    alone = labelled_alone(engine, (40, 60))
    assert np.array_equal(predicted.pred_sem_seg.data[0].numpy(), alone)
    assert alone[:20, :30].min() == 7 == alone.max() and alone[20:].max() == 0


def test_segmentor_passes_the_pipelines_float_pixels_unrounded(engine, monkeypatch):
    """DiffSeg's evaluation resizes the image in float32 and keeps it unrounded, as TF's
    resize (``ResizeHalfPixelLabels``): the labeler gets those values, not uint8 ones."""
    segmentor, batch = segmentor_batch(engine, [(8, 8)])
    data = segmentor.data_preprocessor(batch, False)
    data['inputs'] = data['inputs'] + 0.3
    seen = []
    monkeypatch.setattr(segmentor.labeler, 'generate',
                        lambda images, *args: seen.extend(images) or [np.zeros((8, 8), np.uint8)])
    segmentor.predict(**data)
    assert seen[0].dtype == np.float32 and np.allclose(seen[0], 0.3)


def test_segmentor_gives_a_uint8_pipelines_pixels_as_uint8_as_the_tools_do(engine, monkeypatch):
    """The data preprocessor casts each image to float; a uint8 pipeline's image reached the
    labeler as float32 and was resized by torch's float bilinear, not as the tools, the online
    labels and the Python API resize uint8 (OpenCV, as iSeg's release): the iSeg evaluation
    config scored other masks than tools/pseudo_label.py made. test_step gives it back as the
    same uint8 RGB pixels; a float pipeline's image stays float."""
    segmentor, batch = segmentor_batch(engine, [(40, 60), (8, 8)])
    bgr = torch.randint(0, 256, (3, 40, 60), generator=torch.Generator().manual_seed(0),
                        dtype=torch.uint8)
    batch['inputs'] = [bgr, torch.full((3, 8, 8), 0.3)]
    seen = []
    monkeypatch.setattr(segmentor.labeler, 'generate',
                        lambda images, *args: seen.extend(images) or
                        [np.zeros(im.shape[:2], np.uint8) for im in images])
    segmentor.test_step(batch)
    assert seen[0].dtype == np.uint8 and np.array_equal(seen[0], bgr.flip(0).permute(1, 2, 0))
    assert seen[1].dtype == np.float32 and np.allclose(seen[1], 0.3)


def test_segmentor_tests_a_batch_of_images_of_different_sizes(engine):
    """``test_dataloader.batch_size`` > 1 on images of different sizes (VOC): mmseg's
    SegDataPreProcessor refuses such a test batch ('The image size in a batch should be the
    same'); DiffusionSegmentor.test_step labels each image at its own size, as alone."""
    sizes = [(40, 60), (50, 30)]
    segmentor, data = segmentor_batch(engine, sizes)
    for step in (segmentor.test_step, segmentor.val_step):
        predicted = [s.pred_sem_seg.data[0].numpy() for s in step(data)]
        assert [p.shape for p in predicted] == sizes
        for p, size in zip(predicted, sizes):
            np.testing.assert_array_equal(p, labelled_alone(engine, size))


def test_segmentor_predicts_without_data_samples_and_checks_the_ones_given(engine):
    """predict(images) failed in zip(inputs, None); two images with one sample gave one
    prediction; a missing image_labels was a bare KeyError."""
    sizes = [(40, 60), (50, 30)]
    segmentor, data = segmentor_batch(engine, sizes)
    predicted = segmentor.predict([image.float() for image in data['inputs']])
    assert [s.pred_sem_seg.data[0].numpy().shape for s in predicted] == sizes
    np.testing.assert_array_equal(predicted[1].pred_sem_seg.data[0].numpy(),
                                  labelled_alone(engine, sizes[1]))
    with pytest.raises(ValueError, match='1 data_samples for 2 images'):
        segmentor.predict(data['inputs'], data['data_samples'][:1])
    segmentor.use_image_labels = True
    with pytest.raises(ValueError, match=r'data_samples \[0, 1\] have no image_labels.*'
                                         'LoadImageLevelLabels and PackPseudoLabelInputs'):
        segmentor.predict(data['inputs'], data['data_samples'])
    with pytest.raises(ValueError, match=r'predict needs data_samples.*image_labels'):
        segmentor.predict(data['inputs'])


@pytest.mark.parametrize('steps, size', [
    ([dict(type='Resize', scale=(64, 64), keep_ratio=True)], (30, 60)),    # the image's own
    ([dict(type='Resize', scale=(64, 64), keep_ratio=False)], (30, 60)),   # (w, h) factors
    ([dict(type='CenterSquareCrop')], (30, 30)),                             # the crop
    ([dict(type='CenterSquareCrop'),                                         # the crop, not the
      dict(type='ResizeHalfPixelLabels', scale=(64, 64), keep_ratio=False)], (30, 30))])  # frame
def test_segmentor_predicts_before_the_resize_without_ground_truth(engine, steps, size):
    """mmseg's segmentors predict at ``ori_shape``; without a ground truth (mmseg's
    ``inference_model``, ``--out`` with ``format_only`` on unlabelled images) the prediction
    came at the pipeline's resized size, misplaced under the visualizer. It comes at the size
    before the resize: the image's where the pipeline only resizes; where it crops (DiffSeg's
    protocol) the crop's labels, never the crop stretched over the frame, put in place in the
    frame with 255 around, so mmseg's visualizer and inferencer draw it on the image."""
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    pipeline = Compose([dict(type='LoadImageFromNDArray'), *steps, dict(type='PackSegInputs')])
    packed = pipeline(dict(img=np.zeros((30, 60, 3), np.uint8)))
    segmentor, _ = segmentor_batch(engine, [(8, 8)])
    [predicted] = segmentor.predict([packed['inputs'].flip(0).float()], [packed['data_samples']])
    [expected] = label_images(engine, QuadrantLabels(7), [np.zeros((*size, 3), np.uint8)], None)
    assert predicted.pred_sem_seg.data.shape == (1, 30, 60)
    prediction = predicted.pred_sem_seg.data[0].numpy()
    left = (60 - size[1]) // 2
    np.testing.assert_array_equal(prediction[:, left:left + size[1]], expected)
    assert (prediction[:, :left] == 255).all() and (prediction[:, left + size[1]:] == 255).all()


def test_mmsegs_init_model_and_inference_model_run_the_segmentor(engine):
    """mmseg's ``init_model`` sets ``model.pretrained`` and ``model.train_cfg`` to None: a
    TypeError ('unexpected keyword argument pretrained'); ``inference_model`` (its pipeline
    resizes, no ground truth) then predicts at the image's own size, and ``show_result_pyplot``
    draws it with the model's ``dataset_meta`` (an AttributeError: a segmentor without a
    checkpoint has none)."""
    from mmengine import Config
    from mmseg.apis import inference_model, init_model, show_result_pyplot
    from mmseg.registry import MODELS
    cfg = Config(dict(
        model=dict(type='DiffusionSegmentor', sd_model='tiny', generator=dict(type='DiffSeg')),
        test_pipeline=[dict(type='LoadImageFromFile'),
                       dict(type='Resize', scale=(64, 64), keep_ratio=True),
                       dict(type='LoadAnnotations'), dict(type='PackSegInputs')]))
    model = init_model(cfg, device='cpu')
    model.labeler.engine, model.labeler.generator = engine, QuadrantLabels(7)
    result = inference_model(model, np.zeros((30, 60, 3), np.uint8))
    assert result.img_shape == (32, 64) and result.pred_sem_seg.data.shape == (1, 30, 60)
    assert result.pred_sem_seg.data[0, :15, :30].min() == 7 == result.pred_sem_seg.data.max()
    drawn = show_result_pyplot(model, np.zeros((30, 60, 3), np.uint8), result, opacity=1.0,
                               show=False, with_labels=False)  # had no dataset_meta to draw with
    palette = model.dataset_meta['palette']
    assert list(drawn[0, 0]) == palette[7] and list(drawn[-1, -1]) == palette[0] != palette[7]
    cfg.model.pretrained = 'weights.pth'
    with pytest.raises(ValueError, match=r"pretrained='weights.pth'.*training-free.*leave both"):
        MODELS.build(cfg.model)


def test_mmsegs_visualizer_draws_the_protocols_crop_on_a_non_square_image(engine):
    """DiffSeg's protocol pipeline crops the centre square: show_result_pyplot on the image
    given to inference_model (an IndexError before: a 30x30 prediction on a 30x60 image) draws
    the crop's labels in place and the sides (255) in the unsure colour."""
    from mmdiffseg.apis.folders import IGNORE_COLOR
    from mmengine import Config
    from mmseg.apis import inference_model, init_model, show_result_pyplot
    cfg = Config(dict(
        model=dict(type='DiffusionSegmentor', sd_model='tiny', generator=dict(type='DiffSeg')),
        test_pipeline=[dict(type='LoadImageFromFile'), dict(type='CenterSquareCrop'),
                       dict(type='ResizeHalfPixelLabels', scale=(64, 64), keep_ratio=False),
                       dict(type='PackSegInputs')]))
    model = init_model(cfg, device='cpu')
    model.labeler.engine, model.labeler.generator = engine, QuadrantLabels(7)
    image = np.full((30, 60, 3), 100, np.uint8)
    result = inference_model(model, image)
    assert result.pred_sem_seg.data.shape == (1, 30, 60)
    drawn = show_result_pyplot(model, image, result, opacity=1.0, show=False, with_labels=False)
    palette = model.dataset_meta['palette']
    assert list(drawn[0, 15]) == palette[7] and list(drawn[0, 0]) == list(IGNORE_COLOR)


def test_grey_rgba_and_pil_images_are_labelled_as_their_rgb(engine):
    """label_images takes what the engine takes: a grey array, an RGBA array and a PIL image get
    the labels (attention and brightness) of the same picture given as RGB, at their sizes."""
    from PIL import Image as PILImage
    rgb = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    rgb[:20] = 255  # a bright half
    grey = rgb[..., 0]
    rgba = np.concatenate([rgb, np.full((40, 60, 1), 255, np.uint8)], axis=-1)
    generator = AttentionAndBrightness(0)
    expected = label_images(engine, generator, [rgb, np.repeat(grey[..., None], 3, -1)], None)
    got = label_images(engine, generator, [PILImage.fromarray(rgb), grey, rgba], None)
    for a, b in zip(got, expected + expected[:1]):
        np.testing.assert_array_equal(a, b)
    assert got[2].shape == (40, 60) and got[0][:10].min() >= 64


def test_arrays_get_the_labels_of_the_tools_loaded_batch(engine):
    """The online labeler and the Python API (arrays of any size) and the offline tools
    (read_work_image: OpenCV to the working size in a loader, a uint8 batch) give one image the
    same label: both resize with resize_rgb (before, torch resized the arrays in float, and 2.8%
    of the tiny model's iSeg pixels differed from pseudo_label.py's)."""
    from mmdiffseg.apis.pseudo_label import stack_work_images
    from mmdiffseg.attention.images import resize_rgb
    rng = np.random.RandomState(1)
    arrays = [rng.randint(0, 256, (375, 500, 3)).astype(np.uint8), np.full((90, 70, 3), 9, np.uint8)]
    arrays[0][:100] = 250
    batch, sizes = stack_work_images([(resize_rgb(a), a.shape[:2]) for a in arrays])
    generator = AttentionAndBrightness(0)
    from_arrays = label_images(engine, generator, arrays, None)
    for a, b in zip(from_arrays, label_images(engine, generator, batch, None, sizes)):
        np.testing.assert_array_equal(a, b)
    assert len(np.unique(from_arrays[0])) > 2


def test_a_16_bit_pil_image_is_read_by_its_high_byte_as_the_tools_read_its_file(tmp_path):
    from PIL import Image as PILImage
    from mmdiffseg.apis.folders import read_rgb
    from mmdiffseg.attention.images import image_list
    grey16 = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 31)
    PILImage.fromarray(grey16).save(tmp_path / 'g16.png')
    with PILImage.open(tmp_path / 'g16.png') as img:
        [rgb] = image_list(img)
    np.testing.assert_array_equal(rgb.permute(1, 2, 0).numpy(), read_rgb(tmp_path / 'g16.png'))
    assert rgb.max() < 255 and len(rgb.unique()) > 100  # scaled, not clipped to 255


def test_unsure_pixels_255_pass_as_255(engine):
    """255 is the ignore index ('unsure'), a valid uint8 label; only values above it are refused."""
    [label] = label_images(engine, QuadrantLabels(255), [np.zeros((8, 8, 3), np.uint8)], None)
    assert label[:4, :4].min() == 255 and label[4:].max() == 0


class Bright(QuadrantLabels):
    """1 where the working image's red channel is above 127, and its value where above 255."""

    def forward(self, maps, images, class_names):
        red = images[:, 0].round().long()
        return torch.where(red > 255, red, (red > 127).long())


def test_segmentor_crops_padding_of_a_bright_image_and_clamps_its_values(engine):
    """A white 40x60 image padded (black) to 64x64: the generator sees white only, not the
    canvas; float pixels above 255 (a float resize's overshoot) reach it as 255."""
    segmentor, batch = segmentor_batch(engine, [(40, 60)], test_cfg=dict(size_divisor=32))
    segmentor.labeler.generator = Bright(0)
    batch['inputs'] = [torch.full((3, 40, 60), 255, dtype=torch.uint8)]
    data = segmentor.data_preprocessor(batch, False)
    [predicted] = segmentor.predict(**data)
    assert (predicted.pred_sem_seg.data == 1).all()
    [predicted] = segmentor.predict([data['inputs'][0, :, :40, :60] + 45.0],
                                    [predicted.clone()])
    assert (predicted.pred_sem_seg.data == 1).all()


def test_segmentor_predicts_at_the_ground_truths_size_in_batches_of_one(engine):
    """Each prediction has its ground truth's size (not its image's), also when the labeler
    runs one image per engine call."""
    from mmengine.structures import PixelData
    segmentor, data = segmentor_batch(engine, [(40, 60), (50, 30)])
    segmentor.labeler.batch_size = 1
    truth_sizes = [(20, 30), (100, 60)]
    for sample, size in zip(data['data_samples'], truth_sizes):
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *size, dtype=torch.long))
    predicted = [s.pred_sem_seg.data[0].numpy() for s in segmentor.test_step(data)]
    assert [p.shape for p in predicted] == truth_sizes
    expected = np.zeros((100, 60), np.uint8)
    expected[:50, :30] = 7
    np.testing.assert_array_equal(predicted[1], expected)


class CountNames(QuadrantLabels):
    """Labels every pixel with the number of class names its image was given (0 without)."""

    def forward(self, maps, images, class_names):
        counts = [len(names) for names in class_names] if class_names else [0] * len(images)
        return torch.tensor(counts)[:, None, None].expand(len(images), *images.shape[-2:])


def test_segmentor_gives_the_generator_each_images_class_names(engine):
    segmentor, data = segmentor_batch(engine, [(8, 8), (8, 8)])
    segmentor.labeler.generator, segmentor.use_image_labels = CountNames(0), True
    for sample, names in zip(data['data_samples'], (['cat'], ['cat', 'dog', 'person'])):
        sample.set_metainfo(dict(image_labels=names))
    predicted = segmentor.test_step(data)
    assert [s.pred_sem_seg.data.unique().tolist() for s in predicted] == [[1], [3]]


def test_a_label_of_256_is_refused(engine):
    """The first value a uint8 map cannot hold (it would wrap to 0) is refused."""
    with pytest.raises(ValueError, match='QuadrantLabels made label 256; uint8 label maps'):
        label_images(engine, QuadrantLabels(256), [np.zeros((8, 8, 3), np.uint8)], None)


class Names(QuadrantLabels):
    """Records the class names the engine is asked for."""

    def extract_kwargs(self, class_names):
        self.asked = class_names
        return {}


def test_a_batch_tensor_at_the_working_size_gives_a_label_per_image(engine):
    """A loaded ``(B, 3, 512, 512)`` batch without ``out_sizes``: one 512x512 label per image;
    without class names the engine gets an empty list per image."""
    generator = Names(7)
    batch = torch.zeros(2, 3, WORK_SIZE, WORK_SIZE, dtype=torch.uint8)
    labels = label_images(engine, generator, batch, None)
    assert [lab.shape for lab in labels] == [(WORK_SIZE, WORK_SIZE)] * 2
    assert labels[1][0, 0] == 7 and labels[1][-1, -1] == 0
    assert generator.asked == [[], []]


def test_a_segmentor_built_with_image_labels_asks_for_them():
    from mmseg.registry import MODELS
    segmentor = MODELS.build(dict(type='DiffusionSegmentor', sd_model='tiny',
                                  generator=dict(type='ISeg'), use_image_labels=True))
    assert segmentor.use_image_labels is True
    with pytest.raises(ValueError, match=r'use_image_labels=True\)\.predict needs data_samples'):
        segmentor.predict([torch.zeros(3, 8, 8)])
