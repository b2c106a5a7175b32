"""iSeg's class tables (``generators.class_names``): the dataset class lists (counts, order, known
entries, as mmseg's datasets list them), the words iSeg's released name tables prompt them with,
and the sub-tokens it reads of multi-word names."""
import pytest
from mmseg.datasets import COCOStuffDataset, PascalContextDataset59, PascalVOCDataset

from mmdiffseg.generators.class_names import (COCO_OBJECT_CLASSES, CONTEXT59_CLASSES,
                                              READABLE_NAMES, VOC_CLASSES, VOCABULARIES,
                                              prompt_name, prompt_names)


def test_voc_lists_background_and_the_20_classes_in_mmsegs_order():
    assert VOC_CLASSES == tuple(PascalVOCDataset.METAINFO['classes'])
    assert len(VOC_CLASSES) == 21
    assert VOC_CLASSES[:3] == ('background', 'aeroplane', 'bicycle')
    assert VOC_CLASSES[-1] == 'tvmonitor' and VOC_CLASSES.index('person') == 15


def test_coco_objects_are_background_and_the_80_things_without_stuff():
    assert len(COCO_OBJECT_CLASSES) == 81 and len(set(COCO_OBJECT_CLASSES)) == 81
    assert COCO_OBJECT_CLASSES[:3] == ('background', 'person', 'bicycle')
    assert COCO_OBJECT_CLASSES[-1] == 'toothbrush'  # the last thing; 'banner' (stuff) follows
    assert 'banner' not in COCO_OBJECT_CLASSES
    assert COCO_OBJECT_CLASSES[1:] == tuple(COCOStuffDataset.METAINFO['classes'])[:80]


def test_context59_has_59_classes_and_no_background():
    assert CONTEXT59_CLASSES == tuple(PascalContextDataset59.METAINFO['classes'])
    assert len(CONTEXT59_CLASSES) == 59 and 'background' not in CONTEXT59_CLASSES
    assert (CONTEXT59_CLASSES[0], CONTEXT59_CLASSES[-1]) == ('aeroplane', 'wood')


def renamed(vocabulary):
    classes = VOCABULARIES[vocabulary]['classes']
    return {n: prompt_name(n, vocabulary) for n in classes if prompt_name(n, vocabulary) != n}


def test_each_vocabulary_renames_exactly_the_released_words():
    """The words of iSeg's released VOC / COCO / Context tables that differ from the dataset's
    class names; every other class is prompted by its own name."""
    assert renamed('voc') == {'aeroplane': 'plane', 'diningtable': 'dining table',
                              'pottedplant': 'potted plant', 'tvmonitor': 'tv monitor'}
    assert renamed('coco_object') == {'person': 'people', 'motorcycle': 'motorbike',
                                      'airplane': 'plane', 'couch': 'sofa', 'tv': 'tv monitor'}
    assert renamed('context59') == {'aeroplane': 'plane', 'bedclothes': 'bedding',
                                    'computer': 'laptop', 'pottedplant': 'plant',
                                    'tvmonitor': 'monitor'}
    for vocabulary in VOCABULARIES:  # one word per class: no two classes share a prompt
        words = prompt_names(VOCABULARIES[vocabulary]['classes'], vocabulary)
        assert len(set(words)) == len(words), vocabulary


def test_token_offsets_name_prompt_words_and_read_the_released_sub_tokens():
    """Offsets are keyed by words the vocabulary prompts with; every word of two or more parts
    has an entry; VOC reads both tokens of 'dining table' and the second of 'potted plant' and
    'tv monitor'; COCO reads the whole of 'hydrant' (fire|hydr|ant) and the head noun of
    'traffic light', 'baseball bat' / 'glove', 'tennis racket', 'wine glass'."""
    for vocabulary, vocab in VOCABULARIES.items():
        words = set(prompt_names(vocab['classes'], vocabulary))
        offsets = vocab['token_offsets']
        assert set(offsets) <= words, vocabulary
        # Context's and our ADE20K words read every token
        assert all(w in offsets for w in words if ' ' in w) or vocabulary in ('context59', 'ade20k')
        assert all(o == sorted(set(o)) and o[0] >= 0 for o in offsets.values())
    assert VOCABULARIES['voc']['token_offsets'] == {'dining table': [0, 1],
                                                    'potted plant': [1], 'tv monitor': [1]}
    coco = VOCABULARIES['coco_object']['token_offsets']
    assert coco['fire hydrant'] == [1, 2]
    assert all(coco[w] == [1] for w in ('traffic light', 'baseball bat', 'baseball glove',
                                        'tennis racket', 'wine glass', 'potted plant',
                                        'tv monitor'))
    assert all(coco[w] == [0, 1] for w in ('stop sign', 'hot dog', 'dining table', 'teddy bear',
                                           'hair drier', 'cell phone', 'surfboard'))
    assert VOCABULARIES['context59']['token_offsets'] == {}


def test_prompt_name_falls_back_to_readable_words_and_refuses_unknown_vocabularies():
    assert READABLE_NAMES == {'diningtable': 'dining table', 'pottedplant': 'potted plant',
                              'tvmonitor': 'tv monitor'}
    assert prompt_names(['aeroplane', 'diningtable', 'tvmonitor']) == [
        'aeroplane', 'dining table', 'tv monitor']
    # a vocabulary's own word wins over the readable one, which fills in for the rest
    assert prompt_name('tvmonitor', 'context59') == 'monitor'
    assert prompt_name('diningtable', 'coco_object') == 'dining table'
    assert prompt_names(['aeroplane', 'cat'], 'voc') == ['plane', 'cat']
    with pytest.raises(KeyError, match=r"prompt_name: unknown vocabulary 'ade'; known: "
                                       r"\['ade20k', 'coco_object', 'context59', 'voc'\]"):
        prompt_name('cat', 'ade')
