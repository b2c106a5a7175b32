"""tools/dataset_converters/image_labels.py on tiny hand-made VOC label maps (known answers)."""
import json

import numpy as np
import pytest
from PIL import Image
from tool_modules import load_converter

from mmdiffseg.apis.io import UserInputError


def _mask(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.array(values, dtype=np.uint8)).save(path)


def test_classes_present_sorted_by_id_background_and_255_left_out(tmp_path):
    """VOC ids 8 = cat, 15 = person, 1 = aeroplane; 0 and 255 are not labels. The file lists the
    ids in sorted order, whatever order the folders are read in."""
    root = tmp_path / 'maps'
    _mask(root / 'a' / 'z.png', [[0, 8], [255, 8]])
    _mask(root / 'b' / 'y.png', [[15, 1], [0, 0]])
    out = tmp_path / 'labels.json'
    load_converter('image_labels').main([str(root), '--classes', 'voc', '--out', str(out)])
    text = out.read_text()
    assert json.loads(text) == {'z': ['cat'], 'y': ['aeroplane', 'person']}
    assert text.index('"y"') < text.index('"z"')


def test_one_id_twice_and_an_empty_folder_are_refused(tmp_path):
    """Two maps of one image id in sub-folders, or no map at all, is a named input error and
    nothing is written."""
    root = tmp_path / 'maps'
    _mask(root / 'a' / 'x.png', [[8]])
    _mask(root / 'b' / 'x.png', [[15]])
    out = tmp_path / 'labels.json'
    with pytest.raises(UserInputError, match="label maps of one image id 'x'"):
        load_converter('image_labels').main([str(root), '--classes', 'voc', '--out', str(out)])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(UserInputError, match=r'no \*\.png label maps in'):
        load_converter('image_labels').main([str(tmp_path / 'empty'), '--classes', 'voc',
                                             '--out', str(out)])
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
