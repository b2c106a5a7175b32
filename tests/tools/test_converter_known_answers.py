"""The dataset converters on tiny hand-made inputs with known answers: image_labels.py on VOC
maps and on COCO-Stuff's fine maps (``--fine-labels``, read into the 27 classes), voc_aug.py's
XML labels and its SBD ``cls/<id>.mat`` reader."""
import json

import numpy as np
import pytest
import scipy.sparse
from PIL import Image
from scipy.io import savemat
from tool_modules import load_converter

from mmdiffseg.apis.io import UserInputError


def _png(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(values, dtype=np.uint8)).save(path)


def test_fine_labels_map_fine_ids_to_the_27_classes(tmp_path):
    """PNG value v is fine id v + 1 (class_names.COCOSTUFF27_FINE_IDS): 0 -> id 1 person,
    9 -> id 10 outdoor, 16 -> id 17 animal, 105 -> id 106 sky, 170 -> id 171 wall,
    179 -> id 180 window; 11 (id 12), 65 (id 66) are unused COCO ids, 182 is id 183 'other'
    and 255 unlabelled: none is a class. Map 'c' holds only values below 27, which read
    without --fine-labels would be electronic, person, vehicle, raw-material instead; alone, it
    looks like a 27-class map, and --fine-labels is refused."""
    root = tmp_path / 'stuffthingmaps'
    _png(root / 'a.png', [[0, 16], [105, 182], [255, 0]])
    _png(root / 'b.png', [[170, 179], [65, 11]])
    _png(root / 'c.png', [[0, 9], [16, 11]])
    out = tmp_path / 'labels.json'
    load_converter('image_labels').main([str(root), '--classes', 'cocostuff27', '--fine-labels',
                                         '--out', str(out)])
    assert json.loads(out.read_text()) == {'a': ['animal', 'person', 'sky'],
                                           'b': ['wall', 'window'],
                                           'c': ['animal', 'outdoor', 'person']}
    (root / 'a.png').unlink()
    (root / 'b.png').unlink()
    load_converter('image_labels').main([str(root), '--classes', 'cocostuff27', '--out', str(out)])
    assert json.loads(out.read_text()) == {
        'c': ['electronic', 'person', 'vehicle', 'raw-material']}
    # only maps of values 0..26 (27-class maps, as 'c' reads without --fine-labels): refused
    with pytest.raises(UserInputError, match=r'--fine-labels: the 1 label maps read of 1 .*c\.png'
                                             r'.* hold only values 0\.\.26 and 255.*leave out '
                                             '--fine-labels'):
        load_converter('image_labels').main([str(root), '--classes', 'cocostuff27',
                                             '--fine-labels', '--out', str(tmp_path / 'x.json')])
    assert not (tmp_path / 'x.json').exists()


def _sbd_mat(path, segmentation):
    """An SBD ``cls/<id>.mat``: struct GTcls with Boundaries (a cell of sparse maps per class),
    Segmentation and CategoriesPresent, as in the SBD release."""
    present = [v for v in np.unique(segmentation) if v]
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation.shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {'GTcls': {'Boundaries': boundaries, 'Segmentation': segmentation,
                             'CategoriesPresent': np.array(present, dtype=np.uint8)[:, None]}})


def test_sbd_mask_reads_the_segmentation_of_an_sbd_struct(tmp_path):
    """A 2 x 3 mask (not square: rows stay rows) with VOC's highest class 20 and one category
    present (a 1 x 1 CategoriesPresent) comes back as the same uint8 class indices, also from
    a mask stored as double, as MATLAB writes an unconverted array."""
    voc_aug = load_converter('voc_aug')
    mask = np.array([[0, 15, 15], [20, 0, 15]], dtype=np.uint8)
    _sbd_mat(tmp_path / 'a.mat', mask)
    got = voc_aug.sbd_mask(tmp_path / 'a.mat')
    assert got.dtype == np.uint8 and got.shape == (2, 3)
    np.testing.assert_array_equal(got, mask)
    one = np.array([[0, 7], [7, 7], [0, 0]], dtype=np.uint8)
    _sbd_mat(tmp_path / 'b.mat', one.astype(np.float64))
    got = voc_aug.sbd_mask(tmp_path / 'b.mat')
    assert got.dtype == np.uint8 and got.shape == (3, 2)
    np.testing.assert_array_equal(got, one)


def test_sbd_given_as_its_dataset_folder(tmp_path):
    """--sbd may name SBD's ``dataset`` folder itself (cls/, train.txt, val.txt in it): its
    images join the aug split and their masks come from the .mat files."""
    voc = tmp_path / 'VOCdevkit' / 'VOC2012'
    sbd = tmp_path / 'sbd_dataset'
    ids = ['i0', 'i1', 'i2']
    for image_id in ids:
        (voc / 'JPEGImages').mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(voc / 'JPEGImages' / f'{image_id}.jpg')
        _png(voc / 'SegmentationClass' / f'{image_id}.png', [[0, 1, 1], [0, 0, 1]])
    splits = voc / 'ImageSets' / 'Segmentation'
    splits.mkdir(parents=True)
    (splits / 'train.txt').write_text('i0\n')
    (splits / 'val.txt').write_text('i1\n')
    sbd_masks = {'i0': np.array([[3, 3, 0], [0, 0, 0]], np.uint8),
                 'i2': np.array([[0, 0, 0], [12, 12, 12]], np.uint8)}
    for image_id, mask in sbd_masks.items():
        _sbd_mat(sbd / 'cls' / f'{image_id}.mat', mask)
    (sbd / 'train.txt').write_text('i2\n')
    (sbd / 'val.txt').write_text('i0\n')
    load_converter('voc_aug').main([str(tmp_path / 'VOCdevkit'), '--sbd', str(sbd),
                                    '--labels-from', 'gt'])
    assert (splits / 'aug.txt').read_text().split() == ['i0', 'i2']
    for image_id, mask in sbd_masks.items():
        with Image.open(voc / 'SegmentationClassAug' / f'{image_id}.png') as png:
            np.testing.assert_array_equal(np.asarray(png), mask)
    labels = json.loads((voc / 'image_labels.json').read_text())
    assert labels == {'i0': ['bird'], 'i1': ['aeroplane'], 'i2': ['dog']}


def test_classes_present_sorted_by_id_background_and_255_left_out(tmp_path):
    """VOC ids 8 = cat, 15 = person, 1 = aeroplane; 0 and 255 are not labels. The file lists the
    ids in sorted order, whatever order the folders are read in."""
    root = tmp_path / 'maps'
    _png(root / 'a' / 'z.png', [[0, 8], [255, 8]])
    _png(root / 'b' / 'y.png', [[15, 1], [0, 0]])
    (root / 'b' / '._y.png').write_bytes(b'\0\5\26\7')  # macOS's AppleDouble: no label map
    out = tmp_path / 'labels.json'
    load_converter('image_labels').main([str(root), '--classes', 'voc', '--out', str(out)])
    text = out.read_text()
    assert json.loads(text) == {'z': ['cat'], 'y': ['aeroplane', 'person']}
    assert text.index('"y"') < text.index('"z"')


def test_one_id_twice_and_an_empty_folder_are_refused(tmp_path):
    """Two maps of one image id in sub-folders, or no map at all, is a named input error and
    nothing is written."""
    root = tmp_path / 'maps'
    _png(root / 'a' / 'x.png', [[8]])
    _png(root / 'b' / 'x.png', [[15]])
    out = tmp_path / 'labels.json'
    with pytest.raises(UserInputError, match="label maps of one image id 'x'"):
        load_converter('image_labels').main([str(root), '--classes', 'voc', '--out', str(out)])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserInputError, match=r'no \*\.png label maps in'):
        load_converter('image_labels').main([str(tmp_path / 'empty'), '--classes', 'voc',
                                             '--out', str(out)])
    assert not out.exists()


def test_cityscapes_fixes_name_this_tools_suffix_option_and_the_converter(tmp_path):
    """Cityscapes unzipped without mmseg's converter: the error named only --suffix, then, given
    the labelIds suffix, told the user to pass --gt-suffix, an option of other tools."""
    city = tmp_path / 'gtFine' / 'train' / 'aachen'
    _png(city / 'aachen_000000_000019_gtFine_labelIds.png', [[7, 26]])
    out, convert = tmp_path / 'labels.json', load_converter('image_labels').main
    with pytest.raises(UserInputError) as error:
        convert([str(tmp_path / 'gtFine' / 'train'), '--classes', 'cityscapes', '--out', str(out)])
    assert "mmseg's tools/dataset_converters/cityscapes.py writes them (docs/data.md" in \
        str(error.value)
    with pytest.raises(UserInputError) as error:
        convert([str(tmp_path / 'gtFine' / 'train'), '--classes', 'cityscapes', '--suffix',
                 '_gtFine_labelIds.png', '--out', str(out)])
    assert '(--suffix _gtFine_labelTrainIds.png;' in str(error.value)
    assert '--gt-suffix' not in str(error.value) and not out.exists()


def test_a_missing_label_folder_is_refused_as_not_found(tmp_path):
    """Not as a folder without maps, which sends the user to --suffix."""
    missing, out = tmp_path / 'no_such_maps', tmp_path / 'labels.json'
    with pytest.raises(UserInputError) as error:
        load_converter('image_labels').main([str(missing), '--classes', 'voc', '--out', str(out)])
    assert str(error.value) == (f'label map folder {missing} not found: give the folder that '
                                'holds the ground-truth label maps')
    assert not out.exists()


def test_voc_xml_labels_in_class_order_and_unknown_names_refused(tmp_path):
    """voc_aug's XML labels: each class once, in VOC class order (person after dog though
    listed first), difficult kept unless excluded; a name outside VOC is an input error."""
    voc_aug = load_converter('voc_aug')
    objects = [('person', 0), ('dog', 1), ('person', 0)]
    xml = tmp_path / 'a.xml'
    xml.write_text('<annotation>' + ''.join(
        f'<object><name>{n}</name><difficult>{d}</difficult></object>' for n, d in objects)
        + '</annotation>')
    assert voc_aug.xml_labels(xml) == ['dog', 'person']
    assert voc_aug.xml_labels(xml, exclude_difficult=True) == ['person']
    xml.write_text('<annotation><object><name>unicorn</name></object></annotation>')
    with pytest.raises(UserInputError, match="unknown class 'unicorn'"):
        voc_aug.xml_labels(xml)


def test_the_releases_tagclip_indices_become_class_names_in_its_order(tmp_path):
    """The iSeg release's OVS image labels (ovs/tagCLIP/output/*_tagclip.txt: 0-based indices,
    background excluded, the release's class order): its Context line '2008_000002 10 19 26 27
    38 44 57' is table, tvmonitor, ceiling, cloth, light, plate, window (mmseg's alphabetical
    order would read building, cow, ...); COCO's index 0 is person (not background), 62 tv; an
    index past the classes is refused, naming the line; blank lines are skipped, and a label map
    given as the file is named as no text."""
    (tmp_path / 'ctx.txt').write_text('2008_000002 10 19 26 27 38 44 57\n\n2008_000003 14\n\n')
    load_converter('image_labels').main([str(tmp_path / 'ctx.txt'), '--classes', 'context59',
                                         '--out', str(tmp_path / 'ctx.json')])
    assert json.loads((tmp_path / 'ctx.json').read_text()) == {
        '2008_000002': ['table', 'tvmonitor', 'ceiling', 'cloth', 'light', 'plate', 'window'],
        '2008_000003': ['person']}
    (tmp_path / 'coco.txt').write_text('COCO_val2014_000000000042 0 62 16\n')
    load_converter('image_labels').main([str(tmp_path / 'coco.txt'), '--classes', 'coco_object',
                                         '--out', str(tmp_path / 'coco.json')])
    assert json.loads((tmp_path / 'coco.json').read_text()) == {
        'COCO_val2014_000000000042': ['person', 'tv', 'dog']}
    (tmp_path / 'voc.txt').write_text('a 0 19\nb 20\n')
    with pytest.raises(UserInputError, match=r"voc.txt:2: \['20'\] are no class index of voc "
                                             r"\(0\.\.19 in the release's order\)"):
        load_converter('image_labels').main([str(tmp_path / 'voc.txt'), '--classes', 'voc',
                                             '--out', str(tmp_path / 'voc.json')])
    with pytest.raises(UserInputError, match='--classes must name its order'):
        load_converter('image_labels').main([str(tmp_path / 'voc.txt'), '--classes', 'ade20k',
                                             '--out', str(tmp_path / 'x.json')])
    label_map = tmp_path / 'voc_val_0.png'
    Image.fromarray(np.full((4, 4), 15, np.uint8)).save(label_map)
    with pytest.raises(UserInputError, match=r'voc_val_0.png is no text file: give the folder '
                                             r'that holds the label maps, or a TagCLIP .txt'):
        load_converter('image_labels').main([str(label_map), '--classes', 'voc',
                                             '--out', str(tmp_path / 'x.json')])
