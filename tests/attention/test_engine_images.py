"""Images given to the engine (:func:`preprocess_images`): known values after conversion and
resizing, PIL / numpy / tensor forms, and bad input refused with the reason and the fix."""
import re

import numpy as np
import pytest
import torch

from test_engine import _image

from mmdiffseg.attention import preprocess_images
from mmdiffseg.attention.images import image_list


def test_preprocess_known_values_and_conversions():
    rgb = np.zeros((2, 3, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 0, 255, 51
    out = preprocess_images([rgb], 2)
    assert out.shape == (1, 3, 2, 2)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([-1.0, 1.0, -0.6]))
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], axis=-1)
    torch.testing.assert_close(preprocess_images([rgba], 2), out)
    gray = np.full((4, 4), 255, np.uint8)
    torch.testing.assert_close(preprocess_images([gray], 4), torch.ones(1, 3, 4, 4))
    as_tensor = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    torch.testing.assert_close(preprocess_images(as_tensor, 2), out)
    # bilinear, half-pixel centres: 2 -> 4 columns of [0, 255]; a uint8 image as the tools'
    # loaders resize it (OpenCV, rounded to uint8), a float one by torch
    ramp = np.zeros((1, 2, 3), np.uint8)
    ramp[0, 1] = 255
    row = preprocess_images([ramp], 4)[0, 0, 0]
    torch.testing.assert_close(row, torch.tensor([0.0, 64.0, 191.0, 255.0]) / 127.5 - 1)
    row = preprocess_images([ramp.astype(np.float32)], 4)[0, 0, 0]
    torch.testing.assert_close(row, torch.tensor([0.0, 63.75, 191.25, 255.0]) / 127.5 - 1)


@pytest.mark.parametrize('images, match', [
    (torch.zeros(64, 64, dtype=torch.uint8), 'ambiguous'),
    (torch.zeros(1, 5, 64, 64, dtype=torch.uint8), '5 channels'),
    ([np.zeros((64, 64, 2), np.uint8)], '2 channels'),
    ([np.zeros((64, 64, 3), np.int32)], 'dtype torch.int32'),
    ('image.png', 'expected a'),
    ([torch.zeros(64, 64)], r'^images\[0\]: expected an image \(C,H,W\) or \(H,W,C\), got shape '
                            r'\(64, 64\)$'),
    ([np.zeros((1, 64, 64, 3), np.uint8)], r'^images\[0\]: expected an HxWx3 array, got shape '
                                           r'\(1, 64, 64, 3\)$'),
    ([torch.zeros(3, 8, 8), 'b.png'], r'^images\[1\]: expected a numpy array, PIL image or '
                                      r'tensor, got str$'),
])
def test_bad_images_are_rejected_with_the_reason(images, match):
    with pytest.raises(ValueError, match=match):
        preprocess_images(images, 64)


@pytest.mark.parametrize('scale, fix', [(1 / 255, r'\[0, 1\] image.*images \* 255'),
                                        (2 / 255, r'\[-1, 1\] image.*\(images \+ 1\) \* 127\.5')])
def test_float_images_in_diffusers_ranges_are_refused_with_the_fix(scale, fix):
    """Read as 0..255, a [0, 1] or [-1, 1] image is black: refused, naming the conversion."""
    rgb = torch.from_numpy(_image(6)).permute(2, 0, 1)[None].float()
    image = rgb * scale - (1 if scale > 1 / 255 else 0)
    with pytest.raises(ValueError, match=fix):
        preprocess_images(image, 64)
    with pytest.raises(ValueError, match=fix):
        preprocess_images([image[0].permute(1, 2, 0).numpy()], 64)
    if scale > 1 / 255:   # a dark [-1, 1] image that reaches neither end is [-1, 1] too
        with pytest.raises(ValueError, match=fix):
            preprocess_images(image * 0.2 - 0.1, 64)   # in [-0.3, 0.1]
    undershoot = rgb.clone()
    undershoot[0, 0, 0, 0] = -3.0  # a bicubic resize's undershoot of a 0..255 image
    preprocess_images(undershoot, 64)
    preprocess_images(torch.zeros(1, 3, 8, 8), 8)  # black is black in every range


def test_normalised_and_16_bit_float_images_are_refused_with_the_fix():
    """A mean/std-normalised image (mmseg's data preprocessor output) read as 0..255 is black, a
    16-bit image given as floats white: refused, naming the conversion; a resize's overshoot of a
    0..255 image (bicubic: about 10%) is clamped as before."""
    rgb = torch.from_numpy(_image(6)).permute(2, 0, 1)[None].float()
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    with pytest.raises(ValueError, match=r'images\[0\]: float values in \[-2\.\d+, 2\.\d+\] '
                                         r'look like a mean/std-normalised image.*images \* std '
                                         r'\+ mean'):
        preprocess_images((rgb - mean) / std, 64)
    bright = ((rgb * 0.5 + 120) - mean) / std   # every value above -1: read as 0..255, black
    assert bright.min() > -1
    with pytest.raises(ValueError, match=r'images\[0\]: float values in \[-0\.\d+, 2\.\d+\] '
                                         r'look like a mean/std-normalised image'):
        preprocess_images(bright, 64)
    for dark in (rgb // 100, torch.full_like(rgb, 2.0)):  # 0..255 images darker than 3, cast
        preprocess_images(dark, 64)                      # to float: whole numbers, read
    snow = ((rgb * 0.5 + 128) - mean) / std   # every value above the mean: none below 0
    assert snow.min() > 0
    with pytest.raises(ValueError, match=r'look like a mean/std-normalised image'):
        preprocess_images(snow, 64)
    with pytest.raises(ValueError, match=r'a \[0, 1\] image resized with overshoot: images \* 255'):
        preprocess_images(rgb / 255 * 1.2 - 0.1, 64)
    with pytest.raises(ValueError, match=r'images\[0\]: .*go above 255, as a 16-bit image given '
                                         r'as floats does.*pass images / 257'):
        preprocess_images([rgb[0].permute(1, 2, 0).numpy() * 257], 64)
    overshoot = rgb.clone()
    overshoot[0, 0, 0, 0], overshoot[0, 1, 0, 0] = -25.0, 280.0
    out = preprocess_images(overshoot, 64)
    assert out[0, 0, 0, 0] == -1 and out[0, 1, 0, 0] == 1
    torch.testing.assert_close(out[0, 2], rgb[0, 2] / 127.5 - 1)


def test_masks_empty_images_and_channel_first_array_batches_are_named():
    """A bool array (a mask) was refused with advice for 16-bit images; a 0xW image failed in
    OpenCV; a (B, 3, H, W) array got the per-image transpose."""
    with pytest.raises(ValueError, match=r'images\[0\]: dtype bool \(a mask\?\).*'
                                         r'image\.astype\(np\.uint8\) \* 255'):
        preprocess_images([np.ones((8, 8), bool)], 8)
    with pytest.raises(ValueError, match=r'images\[0\]: dtype bool.*image\.to\(torch\.uint8\)'):
        preprocess_images(torch.ones(1, 3, 8, 8, dtype=torch.bool), 8)
    with pytest.raises(ValueError, match=r'images\[0\]: an empty image \(shape \(3, 0, 5\)'):
        preprocess_images([np.zeros((0, 5, 3), np.uint8)], 8)
    with pytest.raises(ValueError, match=r'BxCxHxW batch; arrays are HxWxC: pass '
                                         r'images\.transpose\(0, 2, 3, 1\)'):
        preprocess_images(np.zeros((2, 3, 16, 16), np.uint8), 8)
    assert preprocess_images(np.zeros((2, 16, 16, 3), np.uint8), 8).shape == (2, 3, 8, 8)


def test_each_float_image_is_range_checked_alone():
    """A [0, 1] image next to a 0..255 one (a uint8 array in a list, or another image of a float
    batch) is refused, naming it; a float 0..255 image next to a uint8 one is read as before."""
    rgb = _image(6)
    unit = rgb.astype(np.float32) / 255
    with pytest.raises(ValueError, match=r'images\[1\]: .*\[0, 1\] image.*images \* 255'):
        preprocess_images([rgb, unit], 64)
    batch = torch.from_numpy(np.stack([rgb, unit * 255])).permute(0, 3, 1, 2)
    batch[1] /= 255
    with pytest.raises(ValueError, match=r'images\[1\]: .*\[0, 1\] image'):
        preprocess_images(batch, 64)
    torch.testing.assert_close(preprocess_images([rgb, rgb.astype(np.float64)], 64),
                               preprocess_images([rgb, rgb], 64))


def test_pil_images_and_single_arrays_are_images():
    from PIL import Image
    rgb = _image(7, size=32)
    expected = preprocess_images([rgb], 32)
    for images in (Image.fromarray(rgb), [Image.fromarray(rgb)], rgb, rgb[None]):
        torch.testing.assert_close(preprocess_images(images, 32), expected)
    grey = Image.fromarray(rgb[..., 0])
    torch.testing.assert_close(preprocess_images(grey, 32), preprocess_images([rgb[..., 0]], 32))
    torch.testing.assert_close(preprocess_images(rgb[..., 0], 32),  # a bare HxW array
                               preprocess_images([rgb[..., 0]], 32))


@pytest.mark.parametrize('images, hint', [
    (torch.zeros(2, 64, 48, 3, dtype=torch.uint8), r'images\.permute\(0, 3, 1, 2\)'),
    ([np.zeros((3, 64, 48), np.uint8)], r'image\.transpose\(1, 2, 0\)'),
])
def test_channels_on_the_wrong_side_name_the_permutation(images, hint):
    with pytest.raises(ValueError, match=hint):
        preprocess_images(images, 64)


def test_a_dark_image_in_minus_one_to_zero_is_refused_and_an_undershoot_is_clamped():
    """A [-1, 1] image with nothing above 0 (a night shot) is still a [-1, 1] image; a 0..255
    image's undershoot below 0 (a bicubic resize's) becomes -1, not less."""
    rgb = torch.from_numpy(_image(6)).permute(2, 0, 1)[None].float()
    with pytest.raises(ValueError, match=r'\[-1, 1\] image'):
        preprocess_images(rgb / 255 - 1, 64)
    undershoot = rgb.clone()
    undershoot[0, 0, 0, 0] = -3.0
    undershoot[0, 1, 0, 0] = 260.0
    out = preprocess_images(undershoot, 64)
    assert out[0, 0, 0, 0] == -1 and out[0, 1, 0, 0] == 1


def test_fractional_float_images_keep_their_values():
    """A float image already at the working size, given in a list, is not rounded to uint8."""
    image = np.full((4, 4, 3), 100.5, np.float32)
    out = preprocess_images([image], 4)
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 100.5 / 127.5 - 1))


@pytest.mark.parametrize('empty', [[], ()])
def test_an_empty_image_list_is_refused_as_empty(empty):
    with pytest.raises(ValueError, match=rf'non-empty list of them, got {type(empty).__name__} '
                                         r'\(empty\)$'):
        preprocess_images(empty, 64)


@pytest.mark.parametrize('empty', [torch.empty(0, 3, 64, 64, dtype=torch.uint8),
                                   torch.empty(0, 3, 100, 100),
                                   np.empty((0, 100, 100, 3), np.uint8)])
def test_an_empty_batch_tensor_or_array_is_refused_as_empty(empty):
    """At the working size (the U-Net failed on a reshape) or another (a stack of nothing)."""
    for call in (lambda: preprocess_images(empty, 64), lambda: image_list(empty)):
        with pytest.raises(ValueError, match=rf'^images: an empty batch \(shape '
                                             rf'{re.escape(str(tuple(empty.shape)))}\); give at '
                                             r'least one image$'):
            call()


def test_a_single_chw_tensor_is_a_batch_of_one():
    batch = torch.from_numpy(_image(8, size=48)).permute(2, 0, 1)[None]
    for size in (48, 64):
        out = preprocess_images(batch[0], size)
        assert out.shape == (1, 3, size, size)
        torch.testing.assert_close(out, preprocess_images(batch, size))


def test_a_uint8_tensor_is_neither_range_checked_nor_resized_as_floats():
    """uint8 is 0..255 by construction: a dark one (values 0 and 1) is read as it is, and one of
    another size is resized as its array is (OpenCV), not by torch's float bilinear."""
    dark = torch.from_numpy(np.random.default_rng(0).integers(0, 2, (1, 3, 8, 8), np.uint8))
    torch.testing.assert_close(preprocess_images(dark, 8), dark.float() / 127.5 - 1)
    rgb = _image(9, size=48)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1)
    expected = preprocess_images([rgb], 64)
    assert torch.equal(preprocess_images(tensor[None], 64), expected)
    assert not torch.equal(preprocess_images(tensor[None].float(), 64), expected)


def test_a_float64_array_in_zero_to_one_is_refused():
    unit = _image(6).astype(np.float64) / 255
    with pytest.raises(ValueError, match=r'images\[0\]: .*\[0, 1\] image.*images \* 255'):
        preprocess_images([unit], 64)


def test_an_integer_tensor_at_the_working_size_is_refused_by_its_dtype():
    with pytest.raises(ValueError, match=r'images\[0\]: dtype torch\.int32; expected uint8 or '
                                         r'float in \[0, 255\]'):
        preprocess_images(torch.full((1, 3, 64, 64), 200, dtype=torch.int32), 64)


def test_work_images_return_the_original_sizes():
    from mmdiffseg.attention.images import work_images
    images = [np.zeros((40, 60, 3), np.uint8), torch.zeros(3, 20, 30), np.zeros((32, 32), np.uint8)]
    out, sizes = work_images(images, 32)
    assert sizes == [(40, 60), (20, 30), (32, 32)]
    assert [tuple(img.shape) for img in out] == [(3, 32, 32)] * 3
    assert [img.dtype for img in out] == [torch.uint8, torch.float32, torch.uint8]


def test_a_fractional_float_image_keeps_its_values_through_a_resize():
    image = np.full((2, 2, 3), 100.5, np.float32)
    out = preprocess_images([image], 4)
    torch.testing.assert_close(out, torch.full((1, 3, 4, 4), 100.5 / 127.5 - 1))


def test_a_16_bit_array_is_refused_naming_the_high_byte_its_pil_image_reads_as():
    """A 16-bit PIL image (``'I;16'``) is read as its high byte; the same array is refused
    (its bit depth is not in an integer dtype), naming that conversion."""
    from PIL import Image
    wide = np.random.default_rng(0).integers(0, 65536, (64, 64), dtype=np.uint16)
    with pytest.raises(ValueError, match=r'^images\[0\]: dtype torch\.uint16; expected uint8 or '
                                         r'float in \[0, 255\]: pass a 16-bit image as its high '
                                         r'byte, \(image >> 8\)\.astype\(np\.uint8\)'):
        preprocess_images([wide], 64)
    torch.testing.assert_close(preprocess_images([(wide >> 8).astype(np.uint8)], 64),
                               preprocess_images(Image.fromarray(wide), 64))


def test_a_32_bit_pil_image_made_in_memory_is_judged_as_its_array_and_one_read_from_a_file_not(
        tmp_path):
    """``Image.fromarray(int32 grey in 0..255)`` (mode 'I') was shifted as 16-bit data: black,
    silently. It is refused as the int32 array is; a 16-bit PNG that an older Pillow opens as
    'I' is still read as its high byte, as OpenCV reads the file."""
    from PIL import Image
    grey = np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.int32)
    with pytest.raises(ValueError, match=r'^images\[0\]: dtype torch\.int32; .*an integer '
                                         r'image in 0\.\.255 as image\.astype\(np\.uint8\)$'):
        preprocess_images(Image.fromarray(grey), 64)
    wide = (grey * 256).astype(np.uint16)
    Image.fromarray(wide).save(tmp_path / 'wide.png')
    as_i = Image.open(tmp_path / 'wide.png').convert('I')  # (its format dropped, as a crop's)
    torch.testing.assert_close(preprocess_images(as_i, 64),
                               preprocess_images(grey.astype(np.uint8), 64))
    as_i.format = 'PNG'  # (how Pillow before 10.? opened it)
    torch.testing.assert_close(preprocess_images(as_i, 64),
                               preprocess_images(grey.astype(np.uint8), 64))


@pytest.mark.parametrize('orientation', [3, 6, 8])
def test_a_photos_exif_rotation_is_applied_as_opencv_and_the_tools_apply_it(tmp_path,
                                                                           orientation):
    """A phone photo's pixels are stored unrotated with an EXIF orientation; a PIL image of it
    was read unrotated, so a label made in Python was rotated against the image mmseg trains on
    (and the tools' label of the same file)."""
    from PIL import Image

    from mmdiffseg.attention.images import decode_rgb
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / 'photo.png'
    Image.fromarray(pixels).save(path, exif=exif.tobytes())
    read = decode_rgb(path.read_bytes(), path)
    assert read.shape[:2] == ((40, 60) if orientation == 3 else (60, 40))
    torch.testing.assert_close(preprocess_images(Image.open(path), 32),
                               preprocess_images(read, 32))
    # a photo the user rotated keeps the tag: its pixels are taken as they are, not turned again
    turned = Image.open(path).rotate(90, expand=True)
    torch.testing.assert_close(preprocess_images(turned, 32),
                               preprocess_images(np.asarray(turned.convert('RGB')), 32))


@pytest.mark.parametrize('image, fix', [
    (np.full((64, 64, 3), 200, np.int64), r'image\.astype\(np\.uint8\)'),
    (torch.full((3, 64, 64), 200, dtype=torch.int64), r'image\.to\(torch\.uint8\)'),
])
def test_an_int64_image_is_refused_naming_the_conversion_of_values_in_0_to_255(image, fix):
    with pytest.raises(ValueError, match=r'^images\[0\]: dtype torch\.int64; .*an integer '
                                         rf'image in 0\.\.255 as {fix}$'):
        preprocess_images([image], 64)


def test_float_pil_images_and_nan_pixels_are_judged_as_float_images():
    """A PIL mode 'F' image in [0, 1] went through convert('RGB') (black, silently) and one in
    0..1000 wrapped modulo 256; a NaN pixel passed the range check and was refused after the
    U-Net, as an overflow. Both are refused before any work, naming the fix."""
    from PIL import Image

    from mmdiffseg.attention.images import preprocess_images
    unit = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    with pytest.raises(ValueError, match=r'look like a \[0, 1\] image.*images \* 255'):
        preprocess_images([Image.fromarray(unit, 'F')], 64)
    with pytest.raises(ValueError, match=r'go above 255'):
        preprocess_images([Image.fromarray(unit * 1000, 'F')], 64)
    grey = preprocess_images([Image.fromarray(unit * 255, 'F')], 64)
    expected = preprocess_images([np.repeat((unit * 255)[..., None], 3, axis=2)], 64)
    torch.testing.assert_close(grey, expected)
    for bad in (np.nan, np.inf):   # (+inf alone was read as a 16-bit image's white)
        rgb = np.full((64, 64, 3), 128, np.float32)
        rgb[3, 4, 1] = bad
        with pytest.raises(ValueError, match=r'^images\[0\] holds NaN or inf values'):
            preprocess_images([rgb], 64)


def test_a_read_only_array_of_a_pil_image_is_taken_without_torchs_warning(tmp_path):
    """``np.asarray(Image.open(path))``, the commonest notebook input, is read-only: torch warned
    'The given NumPy array is not writable' at every call."""
    import warnings

    from PIL import Image
    Image.fromarray(np.full((8, 8, 3), 7, np.uint8)).save(tmp_path / 'a.png')
    array = np.asarray(Image.open(tmp_path / 'a.png'))
    assert not array.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        out = preprocess_images([array], 8)
    torch.testing.assert_close(out, torch.full((1, 3, 8, 8), 7 / 127.5 - 1))
