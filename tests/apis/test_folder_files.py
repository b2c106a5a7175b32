"""Which files the offline tools take as images and how they name them: suffixes in any case,
no folders, a same-name image of another suffix, 16-bit netpbm images, recorded paths that lead
nowhere, and inputs given by a relative path inside the output folder."""
import numpy as np
import pytest

from mmdiffseg.apis.folders import (check_inputs_outside_output, list_images, read_rgb,
                                    resolve_record_path, same_name_image)
from mmdiffseg.apis.io import UserInputError, WorkItem


def test_image_files_are_listed_by_suffix_in_any_case_and_folders_are_not(tmp_path):
    for name in ('A.JPG', 'b.Png', 'c.txt'):
        (tmp_path / name).write_bytes(b'x')
    (tmp_path / 'album.jpg').mkdir()  # a folder named like an image
    assert [p.name for p in list_images(tmp_path)] == ['A.JPG', 'b.Png']


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
