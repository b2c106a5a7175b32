"""Which files the offline tools take as images and how they name them: suffixes in any case,
no folders, a same-name image of another suffix, 16-bit netpbm images, recorded paths that lead
nowhere, inputs given by a relative path inside the output folder or its label folder, the
labelled share a manifest records, the JPEG quality of written images and the shape a label
PNG takes."""
import io

import numpy as np
import pytest
from PIL import Image

from mmdiffseg.apis.folders import (MASK_DIR, check_inputs_outside_output, encode_jpeg,
                                    encode_label_png, labelled_share, list_images, read_rgb,
                                    resolve_record_path, same_name_image)
from mmdiffseg.apis.io import ItemFailed, UserInputError, WorkItem


def test_image_files_are_listed_by_suffix_in_any_case_and_folders_are_not(tmp_path):
    for name in ('A.JPG', 'b.Png', 'c.txt'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'album.jpg').mkdir()  # a folder named like an image
    assert [p.name for p in list_images(tmp_path)] == ['A.JPG', 'b.Png']


def test_a_link_to_an_image_that_is_gone_is_listed_and_named_as_unreadable(tmp_path):
    """A link whose target is gone (an unmounted drive) was left out unsaid ('made 1, failed
    0' for three photos): listed, so the tools count it as failed, naming the target."""
    Image.new('RGB', (3, 2)).save(tmp_path / 'here.png')
    (tmp_path / 'gone.jpg').symlink_to(tmp_path / 'drive' / 'gone.jpg')
    (tmp_path / 'linked.png').symlink_to(tmp_path / 'here.png')
    assert [p.name for p in list_images(tmp_path)] == ['gone.jpg', 'here.png', 'linked.png']
    with pytest.raises(ItemFailed) as failed:
        read_rgb(tmp_path / 'gone.jpg')
    assert str(failed.value) == (f'cannot read image {tmp_path}/gone.jpg: it links to '
                                 f'{tmp_path}/drive/gone.jpg, which is not there (a drive not '
                                 'mounted, a folder moved?)')
    assert read_rgb(tmp_path / 'linked.png').shape == (2, 3, 3)


def test_a_missing_image_is_matched_to_the_image_of_its_name_with_another_suffix(tmp_path):
    """x[1].jpg missing, x[1].JPG there: found (glob characters in the name taken literally);
    a file of that name that is no image is not."""
    (tmp_path / 'x[1].JPG').write_bytes(b'x')
    (tmp_path / 'x1.jpg').write_bytes(b'x')
    assert same_name_image(tmp_path / 'x[1].jpg') == tmp_path / 'x[1].JPG'
    (tmp_path / 'y.txt').write_bytes(b'x')
    assert same_name_image(tmp_path / 'y.jpg') is None


def test_a_16_bit_netpbm_image_is_read_as_opencv_reads_it(tmp_path):
    """A 16-bit PGM (Pillow mode 'I', not a TIFF) is one OpenCV reads: not refused as 32-bit,
    read as mmseg's loader reads it (the high byte)."""
    import cv2
    import mmcv
    grey = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
    cv2.imwrite(str(tmp_path / 'g.pgm'), grey)
    rgb = read_rgb(tmp_path / 'g.pgm')
    np.testing.assert_array_equal(rgb, mmcv.imread(str(tmp_path / 'g.pgm'), flag='color',
                                                   channel_order='rgb'))
    np.testing.assert_array_equal(rgb[..., 0], grey >> 8)


def test_a_signed_16_bit_tiff_is_read_as_opencv_reads_it(tmp_path):
    """Pillow opens a signed 16-bit TIFF in its 32-bit mode 'I', but OpenCV, so training,
    reads it: not refused as 32-bit (its BitsPerSample tag says 16), read as mmseg reads it."""
    import cv2
    import mmcv
    scan = np.random.default_rng(0).integers(-30000, 30000, (4, 5)).astype(np.int16)
    cv2.imwrite(str(tmp_path / 's.tif'), scan)
    assert Image.open(tmp_path / 's.tif').mode == 'I'
    np.testing.assert_array_equal(read_rgb(tmp_path / 's.tif'), mmcv.imread(
        str(tmp_path / 's.tif'), flag='color', channel_order='rgb'))


def test_a_recorded_path_found_nowhere_is_taken_beside_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_record_path('images/a.png', tmp_path / 'out') == tmp_path / 'out/images/a.png'


def test_inputs_given_by_a_relative_path_inside_the_output_folder_are_refused(tmp_path,
                                                                              monkeypatch):
    """Paths compare resolved: 'imgs/a.png' with --out <abs path>/imgs is the output folder."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'imgs').mkdir()
    items = [WorkItem('a', dict(image='imgs/a.png'))]
    with pytest.raises(UserInputError, match='lie in a folder this run writes'):
        check_inputs_outside_output(items, tmp_path / 'imgs', 'labels')
    check_inputs_outside_output(items, tmp_path / 'out', 'labels')


def test_inputs_in_the_label_folder_of_the_output_are_refused_with_another_out(tmp_path):
    """Images in <out>/SegmentationClass would be overwritten by the label PNGs."""
    inside = tmp_path / 'out' / MASK_DIR
    inside.mkdir(parents=True)
    items = [WorkItem('a', dict(image=str(inside / 'a.png')))]
    with pytest.raises(UserInputError) as error:
        check_inputs_outside_output(items, tmp_path / 'out', 'labels')
    assert f'input images in {inside} lie in a folder this run writes' in str(error.value)
    assert f'--out {inside.resolve()}_labels' in str(error.value)


def test_labelled_share_rounds_to_4_decimals_but_never_to_0_for_a_labelled_pixel():
    """1 labelled pixel of 100 000 is 0.00001, recorded as 0.0001; all unsure is 0.0."""
    few = np.full((100, 1000), 255, dtype=np.uint8)
    few[0, 0] = 3
    assert labelled_share(few) == 0.0001
    assert labelled_share(np.full((2, 2), 255, dtype=np.uint8)) == 0.0
    assert labelled_share(np.array([[0, 255, 255], [1, 2, 255]], dtype=np.uint8)) == 0.5
    assert labelled_share(np.array([[1, 1, 255]], dtype=np.uint8)) == 0.6667


def test_images_are_written_as_jpeg_of_quality_95():
    """The default quality is 95: the same bytes as Pillow's JPEG at quality 95, not 90."""
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)

    def pillow_jpeg(quality):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format='JPEG', quality=quality)
        return buf.getvalue()
    assert encode_jpeg(rgb) == pillow_jpeg(95) != pillow_jpeg(90)


@pytest.mark.parametrize('shape', [(1, 2, 3), (2, 3, 3), (6,)])
def test_a_label_png_is_made_only_of_an_h_w_array(shape):
    """A batch of one or an RGB array would be written as a wrong image (or fail in PIL): the
    shape is named instead."""
    with pytest.raises(ValueError) as error:
        encode_label_png(np.zeros(shape, np.uint8), [[0, 0, 0]])
    assert str(error.value) == f'labels must be (H, W), got shape {shape}'
