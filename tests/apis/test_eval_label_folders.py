"""eval_labels' refusals of the folders it is given: a label folder or ground-truth folder that is
not there, a label folder without PNGs, and a label folder whose manifest header is damaged;
each one line naming the folder (or file) and, for the ground truth, the option."""
import numpy as np
import pytest
from PIL import Image

from mmdiffseg.apis.eval_labels import evaluate_labels, label_files
from mmdiffseg.apis.folders import MASK_DIR
from mmdiffseg.apis.ground_truth import GroundTruthFormat, find_ground_truth
from mmdiffseg.apis.io import UserInputError

CLASSES = ['background', 'cat']


def _label(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(path)


def test_a_ground_truth_folder_that_is_not_there_is_named_with_its_option(tmp_path):
    """tools/pseudo_label.py passes --labels-from-gt as the option; eval_labels' default --gt."""
    missing = tmp_path / 'gt'
    with pytest.raises(UserInputError) as error:
        find_ground_truth(['a'], missing, GroundTruthFormat(), '--labels-from-gt')
    assert str(error.value) == f'ground-truth folder {missing} (--labels-from-gt) not found'
    _label(tmp_path / 'labels' / 'a.png')
    with pytest.raises(UserInputError) as error:
        evaluate_labels(tmp_path / 'labels', missing, CLASSES)
    assert str(error.value) == f'ground-truth folder {missing} (--gt) not found'


@pytest.mark.parametrize('label_form, gt_form', [('NFD', 'NFC'), ('NFC', 'NFD')])
def test_ground_truth_is_found_under_a_name_in_the_other_unicode_form(
        tmp_path, label_form, gt_form):
    """Files copied from macOS are named in decomposed form (NFD): 'café' of a label was 'no
    ground truth' beside a ground truth 'café.png' that printed alike."""
    import unicodedata
    gt = tmp_path / 'gt'
    _label(gt / f"{unicodedata.normalize(gt_form, 'café')}.png")
    found = find_ground_truth([unicodedata.normalize(label_form, 'café')], gt, GroundTruthFormat())
    assert list(found.values()) == [gt / f"{unicodedata.normalize(gt_form, 'café')}.png"]


def test_ground_truth_in_the_folder_and_in_its_sub_folders_is_all_found(tmp_path):
    """Some ground truth at the top, some in a city's sub-folder: those below are looked up
    too, not only when none is at the top."""
    _label(tmp_path / 'gt' / 'a.png')
    _label(tmp_path / 'gt' / 'city' / 'b.png')
    found = find_ground_truth(['a', 'b'], tmp_path / 'gt', GroundTruthFormat(), allow_missing=True)
    assert found == {'a': tmp_path / 'gt' / 'a.png', 'b': tmp_path / 'gt' / 'city' / 'b.png'}


def test_ground_truth_whose_suffix_differs_in_case_names_the_suffix_to_pass(tmp_path):
    """VOC masks copied as .PNG: the error said only that no 'x.png' was found."""
    gt = tmp_path / 'gt'
    gt.mkdir()
    (gt / 'voc_val_0.PNG').write_bytes(b'')
    with pytest.raises(UserInputError) as error:
        find_ground_truth(['voc_val_0'], gt, GroundTruthFormat(), '--gt')
    assert str(error.value).endswith('It holds voc_val_0.PNG: pass --gt-suffix .PNG (file names '
                                     'are case-sensitive)')


def test_labels_unscored_beside_ground_truth_of_another_suffix_case_are_explained(
        tmp_path, monkeypatch):
    """Ground truth partly .png, partly .PNG: the .PNG ones' labels were counted 'not scored'
    without why (the case hint came only when no ground truth was found at all)."""
    import mmdiffseg.apis.eval_labels as module
    logged = []
    monkeypatch.setattr(module, 'print_log', lambda msg, **kwargs: logged.append(msg))
    for name in ('a', 'b'):
        _label(tmp_path / 'labels' / f'{name}.png')
    _label(tmp_path / 'gt' / 'a.png')
    _label(tmp_path / 'gt' / 'b.PNG')
    report = evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', CLASSES)
    assert (report['images'], report['unscored']) == (1, ['b'])
    assert logged == [f"note: 1 label(s) have no ground truth ending in '.png' under "
                      f"{tmp_path / 'gt'}, which holds b.PNG (file names are case-sensitive): "
                      'give the ground-truth files one ending, e.g. rename it b.png']
    (tmp_path / 'gt' / 'b.PNG').rename(tmp_path / 'gt' / 'b.png')
    logged.clear()
    assert evaluate_labels(tmp_path / 'labels', tmp_path / 'gt', CLASSES)['images'] == 2
    assert logged == []


def test_a_label_folder_that_is_not_there_or_holds_no_pngs_is_named(tmp_path):
    """A tool's output folder is read in its SegmentationClass/, which the message names."""
    with pytest.raises(UserInputError) as error:
        label_files(tmp_path / 'nothing')
    assert str(error.value) == f'label folder {tmp_path / "nothing"} not found'
    (tmp_path / 'out' / MASK_DIR).mkdir(parents=True)
    (tmp_path / 'out' / MASK_DIR / 'a.jpg').write_bytes(b'x')  # not a label PNG
    with pytest.raises(UserInputError) as error:
        label_files(tmp_path / 'out')
    assert str(error.value) == f'no label PNGs in {tmp_path / "out" / MASK_DIR}'
    _label(tmp_path / 'out' / MASK_DIR / 'b.png')
    assert label_files(tmp_path / 'out') == {'b': tmp_path / 'out' / MASK_DIR / 'b.png'}
    (tmp_path / 'out' / MASK_DIR / '._b.png').write_bytes(b'\0\5\26\7')  # macOS AppleDouble
    (tmp_path / 'out' / MASK_DIR / 'd.png').mkdir(parents=True)  # a folder is no label
    _label(tmp_path / 'out' / MASK_DIR / 'C.PNG')  # a camera's or Windows' upper case
    assert label_files(tmp_path / 'out') == {'C': tmp_path / 'out' / MASK_DIR / 'C.PNG',
                                             'b': tmp_path / 'out' / MASK_DIR / 'b.png'}
    _label(tmp_path / 'out' / MASK_DIR / 'b.PNG')   # one was scored, the other dropped unsaid
    with pytest.raises(UserInputError) as error:
        label_files(tmp_path / 'out')
    assert str(error.value) == (f"two labels of image 'b' in {tmp_path / 'out' / MASK_DIR}: "
                                'b.PNG and b.png; remove one')


@pytest.mark.parametrize('where', ['.', MASK_DIR])
def test_a_damaged_manifest_header_is_one_line_naming_the_file(tmp_path, where):
    """The manifest beside the labels, or in the output folder above its SegmentationClass/: a
    header that is not JSON stops the scoring with its path, not a traceback."""
    labels = tmp_path / 'out' / where
    _label(labels / 'a.png')
    _label(tmp_path / 'gt' / 'a.png')
    manifest = tmp_path / 'out' / 'manifest.jsonl'
    manifest.write_text('{"classes": ["background", \n')
    with pytest.raises(UserInputError, match=f'^{manifest}: the manifest header is not JSON '):
        evaluate_labels(labels, tmp_path / 'gt', CLASSES)
    manifest.write_text('{"classes": ["background", "cat"]}\n')  # repaired: scored
    assert evaluate_labels(labels, tmp_path / 'gt', CLASSES)['images'] == 1


@pytest.mark.parametrize('mode', ['1', 'L', 'P', 'I;16'])
def test_ground_truth_is_read_as_mmseg_reads_it_for_training(tmp_path, mode):
    """eval_labels scores against what LoadAnnotations gives training, for each PNG kind a
    label map comes in (a 1-bit mask is classes 0 and 1 there, and was refused here)."""
    from mmseg.datasets.transforms import LoadAnnotations
    values = np.array([[0, 1], [1, 0]], np.uint8)
    path = tmp_path / 'gt.png'
    image = Image.fromarray(values.astype(bool) if mode == '1' else values)
    (image.convert('P') if mode == 'P' else image if mode == '1' else
     Image.fromarray(values.astype(np.uint16)) if mode == 'I;16' else image).save(path)
    loaded = LoadAnnotations()(dict(seg_map_path=str(path), reduce_zero_label=False,
                                    seg_fields=[]))['gt_seg_map']
    np.testing.assert_array_equal(GroundTruthFormat().read(path, CLASSES), loaded)
    np.testing.assert_array_equal(loaded, values)


def test_label_maps_are_read_up_to_opencvs_size_and_a_larger_one_is_named(tmp_path,
                                                                          monkeypatch):
    """Pillow's own limit (179M pixels) is below the images' (OpenCV's 2^30): a large ground
    truth was a DecompressionBombError traceback; past 2^30 (here scaled down) a one-line
    refusal naming the file."""
    from mmdiffseg.apis import folders
    path = tmp_path / 'gt.png'
    Image.fromarray(np.ones((100, 100), np.uint8)).save(path)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 16)  # as if 10,000 pixels were Pillow's 179M
    assert GroundTruthFormat().read(path, CLASSES).shape == (100, 100)
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 16)
    monkeypatch.setattr(folders, 'MAX_IMAGE_PIXELS', 64)  # and 64 OpenCV's 2^30
    with pytest.raises(UserInputError, match=f'^cannot read ground truth {path}: more than the '):
        GroundTruthFormat().read(path, CLASSES)


def test_a_file_that_is_no_image_is_named_without_pillows_buffer(tmp_path):
    """Pillow's message names the in-memory buffer the file was read into, not the file."""
    path = tmp_path / 'gt.png'
    path.write_text('not a png')
    with pytest.raises(UserInputError) as error:
        GroundTruthFormat().read(path, CLASSES)
    assert str(error.value) == (f'cannot read ground truth {path} (not an image Pillow can '
                                'identify): the file is damaged or not a PNG; replace it or '
                                'remove it')
