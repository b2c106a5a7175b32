"""Which prompt tokens iSeg reads and enhances for each class: the released token tables, whose
positions are counted, not looked up (linsun449/iseg.code ``wsss/iSeg.py:test_step``).

The release places the first class at token 4 and each next one at previous start + 1 + the
table's token count of the previous word (``data/*/*_name*.py``), then takes the table's sub-token
offsets from there. Where the count is short of the tokenizer's, every later class of the prompt
is read (and enhanced) that many tokens early: COCO's table counts 'fire hydrant' as 2 tokens,
CLIP makes fire|hydr|ant, so a class after it is read at the 'and' before it. The engine places
class names by their tokens; such a class is given to it as ``'and <word>'``, with the word's
offsets, which lands on the released positions.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

__all__ = ['RELEASED_TOKEN_MISCOUNTS', 'TOKEN_TABLES', 'token_names']

TOKEN_TABLES = ('released', 'tokenizer')

#: per vocabulary, the words its released table counts short, with the sub-token offsets the release
#: reads of them (``coco_name80.py``: ``'fire hydrant': [2, [1]]``, i.e. 'hydr' only); each is one
#: token short. In every released table, a word without offsets is one token (the tests check them
#: against the real tokenizer), so a class read early takes offset 0: the 'and'.
RELEASED_TOKEN_MISCOUNTS: Dict[str, Dict[str, List[int]]] = {
    'coco_object': {'fire hydrant': [1]},
}


def token_names(words: Sequence[str], offsets: Mapping[str, Sequence[int]],
                miscounted: Sequence[str] = ()) -> Tuple[List[str], Dict[str, List[int]]]:
    """The names under which the engine places an image's prompt ``words`` (in prompt order), and
    the sub-token offsets of each name that has some.

    Args:
        words: the classes' prompt words, in prompt order.
        offsets: word -> sub-token offsets read (a word not listed: all its tokens).
        miscounted: words the released table counts one token short; each later word becomes
            ``'and <word>'`` with the word's offsets (offset 0 for a word without: the 'and').
    """
    names, early = [], False
    table = {w: list(o) for w, o in offsets.items()}
    for word in words:
        name = f'and {word}' if early else word
        if early:
            table[name] = list(offsets.get(word, [0]))
        names.append(name)
        if word in miscounted:
            if early:
                raise ValueError(f'ISeg: two miscounted words in one prompt ({list(words)}); the '
                                 "released table's shift of 2 tokens is not reproduced")
            early = True
    return names, table
