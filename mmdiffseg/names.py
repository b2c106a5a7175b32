"""The name a user most likely meant, for the "did you mean" of a fix: another dataset's word
for the same class, else the closest spelling."""
from __future__ import annotations

import difflib
from collections import Counter
from typing import List, Optional, Sequence


def nearest(name: str, classes: Sequence[str]) -> Optional[str]:
    """The entry of ``classes`` naming ``name``'s class in another dataset's words
    (:func:`~mmdiffseg.generators.class_names.other_spellings`: 'tvmonitor' -> 'tv'), else the
    closest (difflib; case ignored as a second try); none for 'background', which is no class
    where ``classes`` lack it (its pixels are those of no listed class)."""
    from .generators.class_names import other_spellings
    if name.strip().lower() == 'background' and 'background' not in map(str.lower, classes):
        return None
    same = [c for c in other_spellings(name) if c in classes]
    if same:
        return same[0]
    close = difflib.get_close_matches(name, classes, n=1) or \
        difflib.get_close_matches(name.lower(), [c.lower() for c in classes], n=1)
    return next((c for c in classes if c.lower() == close[0].lower()), None) if close else None


def repeated_names(names: Sequence[str]) -> List[str]:
    """The names given more than once (sorted): class ``i`` is the ``i``-th name, so a repeat
    would merge two classes under one name or shift the others."""
    return sorted(name for name, count in Counter(list(names)).items() if count > 1)
