"""Recursive listing of a dataset's image folder that follows linked folders once each."""
from __future__ import annotations

import os
import os.path as osp
from typing import List


def files_below(folder: str) -> List[str]:
    """Paths relative to ``folder`` of the files in it and its sub-folders (sorted; names
    starting with ``.`` and broken links left out, as mmengine's ``list_dir_or_file`` does).
    Linked folders are followed (datasets are often assembled from links), but a folder already
    walked is not entered again: a link to a parent folder would otherwise be walked until the
    system's "Too many levels of symbolic links"."""
    seen, found = set(), []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = osp.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        rel = osp.relpath(root, folder)
        found += [name if rel == '.' else osp.join(rel, name) for name in files
                  if not name.startswith('.') and osp.isfile(osp.join(root, name))]
    return sorted(found)
