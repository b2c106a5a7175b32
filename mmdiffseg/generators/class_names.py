"""Class names of the datasets iSeg was released for, and the words its prompts use for them.

Labels use the dataset's names (mmseg's ``METAINFO['classes']`` order: ``'pottedplant'``,
``'tvmonitor'``); prompts use readable words (``'potted plant'``). :func:`prompt_name` maps one to
the other. The per-dataset vocabularies reproduce the words of iSeg's released name tables
(``data/voc/voc_name20.py``, ``data/coco14/coco_name80.py``, ``data/voc_context/context_name59.py``
of linsun449/iseg.code), e.g. VOC ``'aeroplane'`` is prompted as ``'plane'`` and COCO ``'person'`` as
``'people'``. Token offsets (ALGORITHMS.md 3.3) say which of a word's CLIP sub-tokens iSeg reads and
enhances (``'potted plant': [1]`` = only ``plant``); a word not listed uses all of its tokens.
"""
from __future__ import annotations

from typing import Dict, List, Optional

from mmseg.datasets import (ADE20KDataset, COCOStuffDataset, PascalContextDataset59,
                            PascalVOCDataset)

__all__ = [
    'VOC_CLASSES', 'COCO_OBJECT_CLASSES', 'CONTEXT59_CLASSES', 'ADE20K_CLASSES', 'READABLE_NAMES',
    'VOCABULARIES',
    'prompt_name', 'prompt_names', 'other_spellings'
]

#: mmseg's class lists, so labels index the same classes as the stock datasets.
VOC_CLASSES = tuple(PascalVOCDataset.METAINFO['classes'])
#: background + the 80 COCO object classes (the things of mmseg's COCO-Stuff list, in order).
COCO_OBJECT_CLASSES = ('background', ) + tuple(COCOStuffDataset.METAINFO['classes'][:80])
#: PASCAL Context 59 (mmseg ``PascalContextDataset59``; background is ignored there, not a class).
CONTEXT59_CLASSES = tuple(PascalContextDataset59.METAINFO['classes'])
#: ADE20K's 150 classes (mmseg ``ADE20KDataset``; no background: its 0, "other", is ignored).
ADE20K_CLASSES = tuple(ADE20KDataset.METAINFO['classes'])

#: dataset names written as one word -> the words (any dataset, any method).
READABLE_NAMES = {
    'diningtable': 'dining table',
    'pottedplant': 'potted plant',
    'tvmonitor': 'tv monitor',
}

VOCABULARIES: Dict[str, Dict] = {
    'voc': dict(
        classes=VOC_CLASSES,
        prompt_names={'aeroplane': 'plane', 'diningtable': 'dining table',
                      'pottedplant': 'potted plant', 'tvmonitor': 'tv monitor'},
        token_offsets={'dining table': [0, 1], 'potted plant': [1], 'tv monitor': [1]}),
    'coco_object': dict(
        classes=COCO_OBJECT_CLASSES,
        prompt_names={'person': 'people', 'motorcycle': 'motorbike', 'airplane': 'plane',
                      'couch': 'sofa', 'tv': 'tv monitor'},
        # The released table assumes 2 tokens for 'fire hydrant' and reads the second; CLIP
        # splits it into fire|hydr|ant, so [1, 2] reads the whole of 'hydrant' as intended.
        token_offsets={'traffic light': [1], 'fire hydrant': [1, 2], 'stop sign': [0, 1],
                       'parking meter': [0, 1], 'sports ball': [0, 1], 'baseball bat': [1],
                       'baseball glove': [1], 'surfboard': [0, 1], 'tennis racket': [1],
                       'wine glass': [1], 'hot dog': [0, 1], 'potted plant': [1],
                       'dining table': [0, 1], 'tv monitor': [1], 'cell phone': [0, 1],
                       'teddy bear': [0, 1], 'hair drier': [0, 1]}),
    'context59': dict(
        classes=CONTEXT59_CLASSES,
        prompt_names={'aeroplane': 'plane', 'bedclothes': 'bedding', 'computer': 'laptop',
                      'pottedplant': 'plant', 'tvmonitor': 'monitor'},
        token_offsets={}),
    # not released (iSeg has no ADE20K task): mmseg's names as the words, every token read
    'ade20k': dict(classes=ADE20K_CLASSES, prompt_names={}, token_offsets={}),
}


def other_spellings(name: str) -> List[str]:
    """The names other datasets give ``name``'s class, linked through the released prompt words
    of :data:`VOCABULARIES` and :data:`READABLE_NAMES` (``'tvmonitor'``: ``'tv monitor'``,
    ``'tv'``, ``'monitor'``; ``'sofa'``: ``'couch'``), for a label file written with another
    dataset's names."""
    pairs = [*READABLE_NAMES.items()]
    for vocabulary in VOCABULARIES.values():
        pairs += vocabulary['prompt_names'].items()
    group, grown = {name}, True
    while grown:
        linked = {b if a in group else a for a, b in pairs if a in group or b in group}
        grown = not linked <= group
        group |= linked
    return sorted(group - {name})


def prompt_name(dataset_name: str, vocabulary: Optional[str] = None) -> str:
    """The words naming ``dataset_name`` in a prompt.

    Args:
        dataset_name: a class name as the dataset spells it (``'pottedplant'``).
        vocabulary: ``'voc'``, ``'coco_object'`` or ``'context59'`` for iSeg's released words of
            that dataset; ``None`` for plain readable words (:data:`READABLE_NAMES`).
    """
    if vocabulary is not None:
        if vocabulary not in VOCABULARIES:
            raise KeyError(f'prompt_name: unknown vocabulary {vocabulary!r}; '
                           f'known: {sorted(VOCABULARIES)}')
        words = VOCABULARIES[vocabulary]['prompt_names'].get(dataset_name)
        if words is not None:
            return words
    return READABLE_NAMES.get(dataset_name, dataset_name)


def prompt_names(dataset_names, vocabulary: Optional[str] = None) -> List[str]:
    """:func:`prompt_name` of each name."""
    return [prompt_name(n, vocabulary) for n in dataset_names]
