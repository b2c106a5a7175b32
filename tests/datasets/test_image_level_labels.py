"""LoadImageLevelLabels reading ground truth as mmseg's LoadAnnotations does (label_map, the
class-count bound) and annotation files keyed by image names that hold dots."""
import json

import numpy as np
import pytest
from PIL import Image

from mmdiffseg.datasets import LoadImageLevelLabels
from mmdiffseg.datasets.transforms import mapped_labels


def label_png(path, values):
    """A 1-row label PNG holding ``values``."""
    Image.fromarray(np.array([values], np.uint8)).save(path)
    return str(path)


def test_mapped_labels_maps_file_values_to_classes():
    """label_map is {file value: class}: mapped values move, the others stay."""
    label = np.array([[0, 1, 2, 3, 255]], np.uint8)
    assert mapped_labels(label, {1: 5, 3: 0}).tolist() == [[0, 5, 2, 0, 255]]


def test_image_level_labels_apply_the_label_map(tmp_path):
    seg = label_png(tmp_path / 'gt.png', [0, 3, 3, 5, 255])
    sample = dict(img_path='x.png', seg_map_path=seg, reduce_zero_label=False)
    plain = LoadImageLevelLabels(classes='voc')(dict(sample))['image_labels']
    assert plain == ['bird', 'bottle']
    mapped = LoadImageLevelLabels(classes='voc')(dict(sample, label_map={3: 8, 5: 12}))
    assert mapped['image_labels'] == ['cat', 'dog']


def test_a_label_value_equal_to_the_class_count_is_refused(tmp_path):
    """Values 0..n-1 name the n classes; n itself is outside them (an error, not an IndexError)."""
    classes = ['background', 'cat']
    inside = dict(img_path='x.png', seg_map_path=label_png(tmp_path / 'a.png', [0, 1]))
    assert LoadImageLevelLabels(classes=classes)(inside)['image_labels'] == ['cat']
    outside = dict(img_path='x.png', seg_map_path=label_png(tmp_path / 'b.png', [1, 2]))
    with pytest.raises(ValueError, match=r'values \[2\] outside the 2 classes'):
        LoadImageLevelLabels(classes=classes)(outside)


def test_annotation_keys_are_file_names_without_the_last_extension(tmp_path):
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'frame.001': ['cat'], 'frame': ['dog']}))
    t = LoadImageLevelLabels(classes='voc', ann_file=str(ann))
    assert t(dict(img_path='/data/frame.001.png'))['image_labels'] == ['cat']


def test_an_image_given_as_an_array_is_refused_with_what_to_give_instead(tmp_path):
    """mmseg's inference_model / MMSegInferencer on an array load it with
    LoadImageFromNDArray (img_path None): no name to look its classes up by; mmseg has changed
    the model's test_pipeline to read arrays, so a path given to the same model failed (KeyError
    'img'): the advice builds it anew."""
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'frame': ['dog']}))
    array = dict(img=np.zeros((4, 4, 3), np.uint8), img_path=None)
    with pytest.raises(ValueError, match=r"looks an image's classes up in .*labels.json by its "
                                         r"file name, and an image given as an array has none: "
                                         r"give its path \(inference_model\(model, 'x.jpg'\) "
                                         r"with a model built anew by init_model from the config "
                                         r"file or a fresh Config: mmseg has set the config of "
                                         r"this one to read arrays\)"):
        LoadImageLevelLabels(classes='voc', ann_file=str(ann))(array)


def test_annotation_keys_match_names_in_either_unicode_form(tmp_path):
    """A file copied from macOS is named in decomposed form (NFD: 'e' + combining accent), a
    label file written elsewhere in composed form (NFC): they look alike and are one name;
    'café' was 'no entry' for café.jpg."""
    import unicodedata
    ann = tmp_path / 'labels.json'
    for written, named in (('NFC', 'NFD'), ('NFD', 'NFC')):
        ann.write_text(json.dumps({unicodedata.normalize(written, 'café'): ['cat']}))
        t = LoadImageLevelLabels(classes='voc', ann_file=str(ann))
        image = f"/data/{unicodedata.normalize(named, 'café')}.jpg"
        assert t(dict(img_path=image))['image_labels'] == ['cat']
    # as the prompt-length pre-flight and pseudo_label look them up
    from mmdiffseg.datasets.transforms import ImageLabels
    labels = ImageLabels({unicodedata.normalize('NFC', 'café'): ['cat']})
    assert labels.get(unicodedata.normalize('NFD', 'café'), []) == ['cat']
    assert labels.get('tea', []) == [] and unicodedata.normalize('NFD', 'café') in labels


def test_annotation_names_written_without_mmseg_spaces_are_accepted(tmp_path):
    """ADE20K's class is spelled 'bed ' by mmseg; an annotation file saying 'bed' names it (the
    check of unknown names goes by that spelling) and the sample lists it as mmseg spells it."""
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'room': ['bed', 'wall']}))
    t = LoadImageLevelLabels(classes='ade20k', ann_file=str(ann))
    assert t(dict(img_path='/data/room.jpg'))['image_labels'] == ['bed ', 'wall']
    ann.write_text(json.dumps({'room': ['bed', 'beds']}))
    with pytest.raises(KeyError, match=r"unknown class name\(s\) \['beds'\] for image 'room'"):
        LoadImageLevelLabels(classes='ade20k', ann_file=str(ann))(dict(img_path='room.jpg'))


@pytest.mark.parametrize('ann_file', ['', 'missing.json'])
def test_a_missing_label_file_is_named_with_the_ground_truth_alternative(tmp_path, ann_file):
    """An absent file (an empty setting included, which ``None`` is not) names the setting as
    given, quoted, and how to read the labels from the ground truth instead."""
    step = LoadImageLevelLabels(classes='voc', ann_file=ann_file and str(tmp_path / ann_file))
    with pytest.raises(FileNotFoundError) as err:
        step(dict(img_path='x.png'))
    assert repr(step.ann_file) in str(err.value)
    assert 'None takes the labels from the ground truth' in str(err.value)


def test_annotation_file_names_drop_the_excluded_classes(tmp_path):
    """'background' listed in an annotation file is dropped as from ground truth (generators
    label it themselves); ``exclude=()`` keeps it, in the file's order."""
    ann = tmp_path / 'labels.json'
    ann.write_text(json.dumps({'room': ['dog', 'background', 'cat']}))
    sample = dict(img_path='/data/room.jpg')
    default = LoadImageLevelLabels(classes='voc', ann_file=str(ann))(dict(sample))
    assert default['image_labels'] == ['dog', 'cat']
    kept = LoadImageLevelLabels(classes='voc', ann_file=str(ann), exclude=())(dict(sample))
    assert kept['image_labels'] == ['dog', 'background', 'cat']


def test_a_ground_truth_pixel_of_the_ignore_index_names_no_class(tmp_path):
    """Ground-truth values 255 (ignored) are no class; with ``exclude=()`` background (0) is
    listed, classes in index order whatever their pixel order."""
    seg = label_png(tmp_path / 'gt.png', [255, 12, 0, 8, 255])
    sample = dict(img_path='x.png', seg_map_path=seg, reduce_zero_label=False)
    out = LoadImageLevelLabels(classes='voc', exclude=())(sample)
    assert out['image_labels'] == ['background', 'cat', 'dog']


@pytest.mark.parametrize('mode, values, why', [
    ('I;16', [0, 271], r'label values up to 271; label maps hold 0\.\.255'),
    ('RGB', [0, 15], 'a label map must be a palette or grey PNG')])
def test_a_16_bit_or_colour_label_file_is_refused_not_wrapped(tmp_path, mode, values, why):
    """A 16-bit label of value 271 was read as 271 mod 256 = 15 ('person', an image label the
    image does not have), a colour one as an (H, W, 3) map: both refused, naming the file, as
    the offline tools' reader refuses them (one reader, ``apis.folders.label_indices``)."""
    path = tmp_path / 'gt.png'
    array = np.array([values], np.uint16)
    image = (Image.fromarray(array.astype(np.uint8)).convert('RGB') if mode == 'RGB'
             else Image.fromarray(array.astype(np.int32)).convert('I;16'))
    image.save(path)
    sample = dict(img_path='x.png', seg_map_path=str(path))
    with pytest.raises(ValueError, match=f'{path}: {why}'):
        LoadImageLevelLabels(classes='voc')(sample)
