"""Recursive listing of a dataset's image folder that follows linked folders, but not in a
cycle."""
from __future__ import annotations

import os
import os.path as osp
from typing import Dict, FrozenSet, List


def files_below(folder: str) -> List[str]:
    """Paths relative to ``folder`` of the files in it and its sub-folders (sorted; names
    starting with ``.`` and broken links left out, as mmengine's ``list_dir_or_file`` does).
    Linked folders are followed (datasets are often assembled from links; a folder reached by
    two names is listed under both, as mmseg lists it), except a link back to a folder of its
    own path: a link to a parent folder would otherwise be walked until the system's "Too many
    levels of symbolic links"."""
    found: List[str] = []
    on_path: Dict[str, FrozenSet[str]] = {folder: frozenset({osp.realpath(folder)})}
    for root, dirs, files in os.walk(folder, followlinks=True):
        above = on_path.pop(root)
        kept = []
        for name in dirs:
            real = osp.realpath(osp.join(root, name))
            if real not in above:
                kept.append(name)
                on_path[osp.join(root, name)] = above | {real}
        dirs[:] = kept
        rel = osp.relpath(root, folder)
        found += [name if rel == '.' else osp.join(rel, name) for name in files
                  if not name.startswith('.') and osp.isfile(osp.join(root, name))]
    return sorted(found)
