"""Class lists of the datasets mmdiffseg labels, resolved by name or given as a list.

The lists are mmseg's own ``METAINFO`` (so labels index the same classes as the stock datasets),
plus the 27-class sets of DiffSeg's unsupervised protocol and iSeg's COCO-Object and Context 59
vocabularies.
"""
from __future__ import annotations

from typing import List, Sequence, Union

from mmseg.datasets import ADE20KDataset, CityscapesDataset, PascalVOCDataset

from ..generators.class_names import COCO_OBJECT_CLASSES, CONTEXT59_CLASSES

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

#: COCO-Stuff's fine class ids in each COCO-Stuff-27 class: COCO's thing supercategories, then
#: COCO-Stuff's stuff supercategories (its ``stuff_*2017.json``); 183 ('other') is in none.
#: ``stuffthingmaps_trainval2017`` PNGs hold ``id - 1`` (255: unlabelled)
COCOSTUFF27_FINE_IDS = {
    'electronic': (72, 73, 74, 75, 76, 77), 'appliance': (78, 79, 80, 81, 82),
    'food-things': tuple(range(52, 62)), 'furniture-things': (62, 63, 64, 65, 67, 70),
    'indoor': (84, 85, 86, 87, 88, 89, 90), 'kitchen': (44, 46, 47, 48, 49, 50, 51),
    'accessory': (27, 28, 31, 32, 33), 'animal': tuple(range(16, 26)),
    'outdoor': (10, 11, 13, 14, 15), 'person': (1,), 'sports': tuple(range(34, 44)),
    'vehicle': tuple(range(2, 10)), 'ceiling': (102, 103),
    'floor': (101, 114, 115, 116, 117, 118), 'food-stuff': (121, 122, 153, 170),
    'furniture-stuff': (98, 107, 108, 110, 112, 123, 130, 133, 156, 161, 165),
    'raw-material': (100, 132, 139, 143),
    'textile': (92, 93, 104, 105, 109, 131, 137, 141, 152, 167, 168),
    'wall': tuple(range(171, 178)), 'window': (180, 181),
    'building': (95, 96, 128, 151, 158, 166),
    'ground': (111, 125, 126, 136, 140, 144, 145, 147, 149, 154, 159),
    'plant': (94, 97, 119, 124, 129, 134, 142, 163, 169), 'sky': (106, 157),
    'solid': (127, 135, 150, 160, 162, 182), 'structural': (99, 113, 138, 146, 164),
    'water': (120, 148, 155, 178, 179),
}

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
    'coco_object': COCO_OBJECT_CLASSES,  # iSeg's COCO tasks: background + COCO's 80 objects
    'context59': CONTEXT59_CLASSES,
}

#: class sets to synthesise (``tools/synthesize.py --classes``), by name: SeeDiff's VOC and
#: Cityscapes settings, ADE20K's 150
SYNTH_CLASS_SETS = {
    'voc': DATASET_CLASSES['voc'][1:],  # the 20 object classes
    'cityscapes': CITYSCAPES_HUMAN_VEHICLE_CLASSES[1:],  # human, vehicle
    'ade20k': DATASET_CLASSES['ade20k'],  # no background class: other pixels are 255
}
#: the class sets whose masks index their dataset's own classes (else background + the names)
OWN_LABEL_SETS = ('voc', 'ade20k')


def synthesis_label_set(name: str) -> List[str]:
    """The mask indices of synthesising the class set ``name`` (:data:`SYNTH_CLASS_SETS`)."""
    names = list(SYNTH_CLASS_SETS[name])
    return list(DATASET_CLASSES[name]) if name in OWN_LABEL_SETS else ['background', *names]


def synthesize_options(classes: Sequence[str]) -> str:
    """``tools/synthesize.py``'s options whose masks index ``classes``: a class set's name, else
    the names (background is added as class 0), with ``--label-set`` where there is none."""
    classes = list(classes)
    name = next((n for n in SYNTH_CLASS_SETS if synthesis_label_set(n) == classes), None)
    if name:
        return f'--classes {name}'
    if classes[:1] == ['background']:
        return f'--classes "{",".join(classes[1:])},"'
    return f'--classes "{",".join(classes)}," --label-set "{",".join(classes)},"'


def resolve_classes(classes: Union[str, Sequence[str]]) -> List[str]:
    """A class list given as a list, or by dataset name (one of :data:`DATASET_CLASSES`)."""
    if isinstance(classes, str):
        if classes not in DATASET_CLASSES:
            raise KeyError(f'unknown class set {classes!r}; known: {sorted(DATASET_CLASSES)} '
                           '(or give the list of class names)')
        return list(DATASET_CLASSES[classes])
    return list(classes)


def spelled_as(names: Sequence[str], classes: Sequence[str]) -> List[str]:
    """Each of ``names`` as ``classes`` spell it where the two differ only by surrounding spaces
    (mmseg's ADE20K class ``'bed '``: a user writes ``bed``); other names are kept as given."""
    spelling = {c.strip(): c for c in classes}
    return [n if n in classes else spelling.get(n.strip(), n) for n in names]
