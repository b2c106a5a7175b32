"""Class lists of the datasets mmdiffseg labels, resolved by name or given as a list.

The lists are mmseg's own ``METAINFO`` (so labels index the same classes as the stock datasets),
plus the 27-class sets of DiffSeg's unsupervised protocol.
"""
from __future__ import annotations

from typing import List, Sequence, Union

from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset

#: Cityscapes labelIds 7..33 in order (the 27 classes of the unsupervised protocol, PiCIE / DiffSeg)
CITYSCAPES27_CLASSES = (
    'road', 'sidewalk', 'parking', 'rail track', 'building', 'wall', 'fence', 'guard rail',
    'bridge', 'tunnel', 'pole', 'polegroup', 'traffic light', 'traffic sign', 'vegetation',
    'terrain', 'sky', 'person', 'rider', 'car', 'truck', 'bus', 'caravan', 'trailer', 'train',
    'motorcycle', 'bicycle')
#: first Cityscapes labelId of :data:`CITYSCAPES27_CLASSES`
CITYSCAPES27_FIRST_LABEL_ID = 7

#: COCO-Stuff-27 coarse classes in the usual order (IIC / PiCIE / STEGO / DiffSeg)
COCOSTUFF27_CLASSES = (
    'electronic', 'appliance', 'food-things', 'furniture-things', 'indoor', 'kitchen',
    'accessory', 'animal', 'outdoor', 'person', 'sports', 'vehicle', 'ceiling', 'floor',
    'food-stuff', 'furniture-stuff', 'raw-material', 'textile', 'wall', 'window', 'building',
    'ground', 'plant', 'sky', 'solid', 'structural', 'water')

#: SeeDiff's / DiffuMask's Cityscapes setting: two groups of train-id classes, plus background
CITYSCAPES_GROUPS = {
    'human': ('person', 'rider'),
    'vehicle': ('car', 'truck', 'bus', 'train', 'motorcycle', 'bicycle'),
}
CITYSCAPES_HUMAN_VEHICLE_CLASSES = ('background', 'human', 'vehicle')

DATASET_CLASSES = {
    'voc': tuple(PascalVOCDataset.METAINFO['classes']),
    'cityscapes': tuple(CityscapesDataset.METAINFO['classes']),
    'ade20k': tuple(ADE20KDataset.METAINFO['classes']),
    'cityscapes27': CITYSCAPES27_CLASSES,
    'cityscapes_human_vehicle': CITYSCAPES_HUMAN_VEHICLE_CLASSES,
    'cocostuff27': COCOSTUFF27_CLASSES,
}


def resolve_classes(classes: Union[str, Sequence[str]]) -> List[str]:
    """A class list given as a list, or by dataset name (one of :data:`DATASET_CLASSES`)."""
    if isinstance(classes, str):
        if classes not in DATASET_CLASSES:
            raise KeyError(f'unknown class set {classes!r}; known: {sorted(DATASET_CLASSES)} '
                           '(or give the list of class names)')
        return list(DATASET_CLASSES[classes])
    return list(classes)
