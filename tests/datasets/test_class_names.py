"""Class lists by name: copies of the stock lists, a clear error for an unknown name, and the
Cityscapes human / vehicle groups of SeeDiff's setting."""
import pytest

from mmdiffseg.datasets import DATASET_CLASSES, resolve_classes
from mmdiffseg.datasets.class_names import CITYSCAPES_GROUPS


def test_a_named_class_set_is_a_fresh_list():
    classes = resolve_classes('voc')
    assert isinstance(classes, list) and classes[:2] == ['background', 'aeroplane']
    classes.append('extra')
    assert resolve_classes('voc') == list(DATASET_CLASSES['voc']) and len(classes) == 22


def test_an_unknown_class_set_name_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown class set 'pascal'; known: \['ade20k', "
                                       r"'cityscapes', .*give the list of class names"):
        resolve_classes('pascal')


def test_cityscapes_groups_take_train_ids_11_12_as_human_and_13_to_18_as_vehicle():
    """Cityscapes trainIds: person 11, rider 12; car, truck, bus, train, motorcycle,
    bicycle 13-18."""
    ids = {name: DATASET_CLASSES['cityscapes'].index(name)
           for group in CITYSCAPES_GROUPS.values() for name in group}
    assert sorted(ids[n] for n in CITYSCAPES_GROUPS['human']) == [11, 12]
    assert sorted(ids[n] for n in CITYSCAPES_GROUPS['vehicle']) == list(range(13, 19))
