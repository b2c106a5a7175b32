"""An image whose attention maps hold NaN or inf (a float16 overflow in the U-Net) fails alone,
named and counted: it stopped the whole offline job, and every resume stopped at it again."""
from dataclasses import replace

import numpy as np
import torch
from sample_data import shared_path

from mmdiffseg.apis.io import ItemFailed, OverflowGuard
from mmdiffseg.apis.pseudo_label import labels_or_failures
from mmdiffseg.attention.testing import tiny_engine
from mmdiffseg.generators import DiffSeg


def _overflowing(engine, monkeypatch):
    """``engine`` whose maps are inf for every all-black image of a batch."""
    extract = engine.extract

    def extract_overflowing(images, **kwargs):
        maps = extract(images, **kwargs)
        black = images.flatten(1).float().amax(1) == 0
        return replace(maps, maps={k: torch.where(black.view(-1, *[1] * (v.dim() - 1)),
                                                  torch.inf, v) for k, v in maps.maps.items()})
    monkeypatch.setattr(engine, 'extract', extract_overflowing)


def test_an_image_with_overflowing_maps_fails_alone_and_the_rest_are_labelled(monkeypatch):
    torch.set_num_threads(1)
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    generator = DiffSeg(kl_thresholds=[1.1] * 4)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(1, 255, (3, 3, 512, 512), dtype=np.uint8))
    images[1] = 0
    sizes = [(20, 30), (20, 30), (16, 16)]
    alone = [labels_or_failures(engine, generator, images[i:i + 1], None, sizes[i:i + 1],
                                OverflowGuard())[0] for i in (0, 2)]
    _overflowing(engine, monkeypatch)
    got = labels_or_failures(engine, generator, images, None, sizes, OverflowGuard())
    assert isinstance(got[1], ItemFailed) and str(got[1]) == (
        "AttentionMaps['self64'] contains NaN or inf: the U-Net overflowed (float16: run in "
        'float32 or bfloat16), or an input held NaN; in float32: --dtype float32')
    for label, expected in zip((got[0], got[2]), alone):
        np.testing.assert_array_equal(label, expected)


def test_items_are_redone_alone_and_a_batch_overflowing_on_every_image_stops_the_run():
    """synthesize.py (float16 by default on CUDA) stopped at an overflowing item, a traceback,
    and at it again on every resume: the tools share one rule. Every item of a batch overflowing
    alone is the setting's doing (float16 on this model): the run stops, naming the fix."""
    import pytest

    from mmdiffseg.apis.io import UserInputError, each_alone_on_overflow
    from mmdiffseg.attention.maps import NonFiniteMaps
    calls = []

    def run(index, bad=(1,)):
        calls.append(index)
        if any(i in bad for i in index):
            raise NonFiniteMaps("AttentionMaps['cross16'] contains NaN or inf")
        return [f'label {i}' for i in index]
    got = each_alone_on_overflow(run, 3)
    assert got[0::2] == ['label 0', 'label 2'] and isinstance(got[1], ItemFailed)
    assert calls == [[0, 1, 2], [0], [1], [2]]
    assert each_alone_on_overflow(run, 1) == ['label 0']
    with pytest.raises(UserInputError, match=r"contains NaN or inf, for every image of a batch of "
                                             r'2: the setting, not an image .*--dtype float32'):
        each_alone_on_overflow(lambda index: run(index, bad=(0, 1)), 2)


def test_a_run_whose_first_images_all_overflow_one_at_a_time_stops_naming_the_fix():
    """Batches of one never showed that every image overflows (float16 on this model): each
    was a failed item (exit status 0, 'made 0'), or an all-unsure training label, to the end.
    The run's first items all overflowing alone stop it; once one was made, failures are
    images' and the run goes on."""
    import pytest

    from mmdiffseg.apis.io import SETTING_OVERFLOW_ITEMS, UserInputError
    from mmdiffseg.attention.maps import NonFiniteMaps

    def overflowing(index):
        raise NonFiniteMaps("AttentionMaps['cross16'] contains NaN or inf")
    guard = OverflowGuard('--cfg-options model.engine_dtype=float32')
    for _ in range(SETTING_OVERFLOW_ITEMS - 1):
        (failed,) = guard(overflowing, 1)
        assert str(failed).endswith('; in float32: --cfg-options model.engine_dtype=float32')
    with pytest.raises(UserInputError, match=rf"contains NaN or inf, for each of the first "
                                             rf"{SETTING_OVERFLOW_ITEMS} images of this run: the "
                                             r"setting, .*run in float32 \(--cfg-options "
                                             r"model.engine_dtype=float32\)$"):
        guard(overflowing, 1)
    guard = OverflowGuard()
    assert guard(lambda index: ['label'], 1) == ['label']
    assert all(isinstance(guard(overflowing, 1)[0], ItemFailed) for _ in range(10))


def test_online_labels_of_an_overflowing_image_fail_and_the_others_are_made(monkeypatch):
    """Training with online labels stopped at such an image, hours in: it fails alone (the
    labeler gives its ItemFailed; the preprocessor trains it as all unsure, uncached), the
    other images' labels as made alone."""
    from mmdiffseg.models.online_labeler import AttentionLabeler
    torch.set_num_threads(1)
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    labeler = AttentionLabeler('tiny', DiffSeg(kl_thresholds=[1.1] * 4), batch_size=3)
    monkeypatch.setattr(labeler, 'load_engine', lambda device: engine)
    rng = np.random.default_rng(1)
    images = [rng.integers(1, 255, (24, 40, 3), dtype=np.uint8) for _ in range(3)]
    images[1] = np.zeros((20, 30, 3), np.uint8)
    alone = [labeler.generate([images[i]], None, 'cpu')[0] for i in (0, 2)]
    _overflowing(engine, monkeypatch)
    labels = labeler.generate(images, None, 'cpu')
    assert isinstance(labels[1], ItemFailed)
    for label, expected in zip((labels[0], labels[2]), alone):
        np.testing.assert_array_equal(label, expected)


def test_generated_images_holding_nan_are_refused_not_saved_black():
    """A float16 overflow in the VAE decoder (or the last steps) gave NaN pixels, which the
    uint8 conversion made black: synthesize.py wrote black images with object masks, counted
    made. generate() raises the overflow, which the tools' each-alone rule counts as failed."""
    import pytest

    from mmdiffseg.attention.maps import NonFiniteMaps
    torch.set_num_threads(1)
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    images, _ = engine.generate(['a photo of a cat'], steps=1, height=64, width=64)
    assert images.dtype == torch.uint8 and images.float().std() > 0
    hook = engine.vae.decoder.register_forward_hook(lambda module, args, out: out * float('nan'))
    try:
        with pytest.raises(NonFiniteMaps, match=r'^the generated images hold NaN or inf: the VAE '
                                                r'or the U-Net overflowed \(float16: run in '
                                                r'float32 or bfloat16\)$'):
            engine.generate(['a photo of a cat'], steps=1, height=64, width=64)
    finally:
        hook.remove()


def test_generators_refuse_float_images_holding_nan_as_the_engine_does():
    """SeeDiff's PAMR reads the image: NaN pixels gave all-background labels, silently, where
    the engine refuses them. Either form of images is checked, naming the image by its place
    in the caller's list; uint8 batches (the tools') need no check."""
    import pytest

    from mmdiffseg.generators import SeeDiff
    torch.set_num_threads(1)
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    generator = SeeDiff(classes=['background', 'cat'], resolutions=(2, 4, 8), pamr_iter=2,
                        steps=1)
    kwargs = generator.generate_kwargs(['cat', 'cat'])
    made, maps = engine.generate(kwargs['prompts'], class_names=kwargs['class_names'], steps=1,
                                 capture=generator.capture_spec, height=64, width=64)
    images = torch.full((2, 3, 64, 64), 100.0)
    images[1, :, :4] = float('nan')
    with pytest.raises(ValueError, match=r'^images\[1\] holds NaN or inf values'):
        generator(maps, images, [['cat'], ['cat']])
    with pytest.raises(ValueError, match=r'^images\[1\] holds NaN or inf values'):
        generator(maps, [images[0, :, :, :30], images[1]], [['cat'], ['cat']])
    assert generator(maps, made, [['cat'], ['cat']]).shape == (2, 64, 64)


def test_a_dark_uint8_photo_is_labelled_not_taken_for_a_0_1_image():
    """A night photo whose brightest pixel is 1 (uint8), made float by the labelling path, was
    refused as a [0, 1] image by the generators' float check: the job stopped with a traceback
    naming no file, and again on every resume. Only images given as floats are checked."""
    from mmdiffseg.generators import SeeDiff
    from mmdiffseg.models.online_labeler import label_images
    torch.set_num_threads(1)
    engine = tiny_engine(shared_path('sd_configs', 'stable-diffusion-2-1-base'))
    dark = np.zeros((40, 60, 3), np.uint8)
    dark[5:10, 5:10] = 1
    generator = SeeDiff(classes=['background', 'cat'], pamr_iter=2)
    [label] = label_images(engine, generator, [dark], [['cat']])
    assert label.shape == (40, 60) and set(np.unique(label).tolist()) <= {0, 1, 255}
