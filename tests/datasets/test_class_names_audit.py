"""Mutation audit of class_names.py: Cityscapes-27's names against a real frame's labelIds and
trainIds, and the list / spelling helpers (COCO-Stuff-27's fine ids: test_generated_datasets)."""
import numpy as np
from PIL import Image
from sample_data import shared_path

from mmdiffseg.datasets import DATASET_CLASSES, resolve_classes
from mmdiffseg.datasets.class_names import (CITYSCAPES27_CLASSES, CITYSCAPES27_FIRST_LABEL_ID,
                                            spelled_as)


def test_a_given_class_list_comes_back_as_a_new_list():
    """resolve_classes returns a list for a tuple too, and a copy the caller may change."""
    given = ('a', 'b')
    assert resolve_classes(given) == ['a', 'b']
    names = ['a']
    resolved = resolve_classes(names)
    resolved.append('c')
    assert names == ['a']


def test_names_take_the_spelling_of_the_classes_with_spaces():
    """mmseg's ADE20K class 'bed ': 'bed' and ' bed' become 'bed '; names
    that are classes already or are no class stay as given."""
    ade = DATASET_CLASSES['ade20k']
    assert 'bed ' in ade
    assert spelled_as(['bed', ' bed', 'wall', 'unicorn'], ade) == ['bed ', 'bed ', 'wall',
                                                                   'unicorn']


def test_cityscapes_27_names_the_class_of_each_label_id():
    """In a real Cityscapes frame, the pixels of labelId L mostly have trainId T (the two maps
    were downsampled apart: edges differ): the 27-class list names at L - 7 the train class T
    (road 7, sidewalk 8, building 11, ...)."""
    folder = shared_path('cityscapes_val_sample', 'gtFine', 'val', 'frankfurt')
    frame = 'frankfurt_000000_000294_gtFine_'
    ids = np.array(Image.open(folder / f'{frame}labelIds.png')).ravel()
    train = np.array(Image.open(folder / f'{frame}labelTrainIds.png')).ravel()
    train_classes = DATASET_CLASSES['cityscapes']
    named = {}
    for label_id in np.unique(ids[train != 255]):
        counts = np.bincount(train[(ids == label_id) & (train != 255)])
        named[int(label_id)] = train_classes[int(counts.argmax())]
    assert {7: 'road', 8: 'sidewalk', 11: 'building'}.items() <= named.items()
    for label_id, name in named.items():
        if label_id >= CITYSCAPES27_FIRST_LABEL_ID:
            assert CITYSCAPES27_CLASSES[label_id - CITYSCAPES27_FIRST_LABEL_ID] == name


def test_the_class_sets_to_synthesise_are_their_datasets_objects():
    """synthesize.py --classes voc is VOC's 20 object classes (a set shifted by one refused
    background as a user's class, or left aeroplane out silently), Cityscapes' SeeDiff set
    human and vehicle, ADE20K's all 150."""
    from mmdiffseg.datasets.class_names import (CITYSCAPES_HUMAN_VEHICLE_CLASSES,
                                                DATASET_CLASSES, SYNTH_CLASS_SETS)
    assert list(SYNTH_CLASS_SETS['voc']) == list(DATASET_CLASSES['voc'][1:])
    assert 'background' not in SYNTH_CLASS_SETS['voc'] and len(SYNTH_CLASS_SETS['voc']) == 20
    assert list(SYNTH_CLASS_SETS['cityscapes']) == ['human', 'vehicle'] == list(
        CITYSCAPES_HUMAN_VEHICLE_CLASSES[1:])
    assert list(SYNTH_CLASS_SETS['ade20k']) == list(DATASET_CLASSES['ade20k'])
