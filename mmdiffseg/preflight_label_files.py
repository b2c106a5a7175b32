"""Pre-flight: how a dataset reads its label files. Its ``LoadAnnotations`` must not force the other
zero-label convention than the dataset's, and a plain mask dataset (not one of the
generated-label datasets, which check this themselves) pointed at a folder the tools wrote must
read it as written: the classes its manifest records, without mmseg's ``label_map`` and in its
zero-label convention."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import List, Optional

from .preflight_classes import _same, dataset_classes, describe
from .preflight_data import Missing, reads_generated_labels
from .registry import config_type


def _reduces_zero_label(dataset: dict) -> Optional[bool]:
    """The ``reduce_zero_label`` a dataset config reads its masks with: its own, else its class's
    default (ADE20KDataset's True; mmseg's BaseSegDataset's False); None for an unknown type."""
    from mmseg.registry import DATASETS
    if 'reduce_zero_label' in dataset:
        return bool(dataset['reduce_zero_label'])
    kind = dataset.get('type')
    cls = DATASETS.get(kind) if isinstance(kind, str) else kind if isinstance(kind, type) else None
    for klass in getattr(cls, '__mro__', ()):
        param = inspect.signature(klass.__init__).parameters.get('reduce_zero_label')
        if param is not None and param.default is not inspect.Parameter.empty:
            return bool(param.default)
    return None


def check_label_convention(dataset: dict, where: str) -> List[Missing]:
    """A ``LoadAnnotations(reduce_zero_label=...)`` of the pipeline against the dataset's: mmseg
    stops at the first mask it loads (at the first validation, hours in, for a val set), and
    following its message's fix for the dataset would read class k + 1 as k."""
    own = _reduces_zero_label(dataset)
    missing = []
    for index, step in enumerate(dataset.get('pipeline') or []):
        forced = step.get('reduce_zero_label') if isinstance(step, dict) and \
            config_type(step) == 'LoadAnnotations' else None
        if own is not None and forced is not None and bool(forced) != own:
            key = f'{where}.pipeline.{index}'
            missing.append(Missing(
                f'{key} (LoadAnnotations) reads the masks with reduce_zero_label={forced}, but '
                f"the dataset ({dataset.get('type')}) with reduce_zero_label={own}: mmseg stops "
                'at the first mask it loads', f'remove {key}.reduce_zero_label (the dataset '
                f"applies its own); the dataset's ({where}.reduce_zero_label) is True for masks "
                "whose 0 is no class (ADE20K's), False where 0 is a class (generated labels, "
                "VOC's background)", [f'{key}.reduce_zero_label']))
    return missing


def _stock_classes(dataset: dict) -> Optional[List[str]]:
    """The classes of a dataset config's registered class (``METAINFO``), which mmseg maps
    masks from where ``metainfo`` gives others (its ``label_map``)."""
    return dataset_classes(dict(type=dataset.get('type')))


def check_tool_label_folder(dataset: dict, where: str) -> List[Missing]:
    """A mask dataset whose label folder (or its parent) holds a tool's manifest of other classes
    than the dataset's (or of unlabelled segment ids), or that the dataset would read through
    mmseg's label_map or the other zero-label convention: label k would train or score as
    another class, and a value past the classes stop the run in the loss."""
    from .datasets.generated import read_manifest_header
    seg_dir = (dataset.get('data_prefix') or {}).get('seg_map_path')
    classes = dataset_classes(dataset)
    if reads_generated_labels(dataset) or not isinstance(seg_dir, str) or not classes or not any(
            config_type(step) == 'LoadAnnotations' for step in dataset.get('pipeline') or []
            if isinstance(step, dict)):
        return []
    folder = Path(dataset.get('data_root') or '', seg_dir)
    try:
        header = next((h for h in map(read_manifest_header, (folder, folder.parent)) if h), None)
    except ValueError:   # a file of that name that is not a tool's manifest
        return []
    if not isinstance(header, dict) or header.get('manifest') != 'mmdiffseg' or \
            'classes' not in header:   # (another program's manifest: nothing known)
        return []
    written, stock = header['classes'], _stock_classes(dataset)
    remapped = stock is not None and not _same(stock, classes)   # mmseg's label_map
    reduced, written_reduced = _reduces_zero_label(dataset), bool(header.get('reduce_zero_label'))
    shifted = reduced is not None and reduced != written_reduced
    if written is not None and _same(written, classes) and not remapped and not shifted:
        return []
    what = ('unlabelled segment ids (made without class names)' if written is None else
            f'the classes {describe(written)}')
    how = (f"through mmseg's label_map from {dataset.get('type')}'s own classes" if remapped
           else f'with reduce_zero_label={reduced} (the files: {written_reduced}; class k read '
           f'as k {"- 1" if reduced else "+ 1"})' if shifted
           else f'as its classes {describe(classes)}')
    return [Missing(
        f"{where} ({dataset.get('type')}) reads {folder}, whose manifest records {what}, {how}"
        ': a label would train or score as another class',
        "read a tool's folder with type='PseudoLabelDataset' (SyntheticDataset for "
        "synthesize.py's), which checks its manifest, given the classes it records "
        f'({where}.metainfo=dict(classes=[...])), or label the images again with the '
        "dataset's classes", [f'{where}.type'])]
