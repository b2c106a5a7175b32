"""Image-level labels (``image_labels.json``) read off ground-truth label maps, for any dataset.

The file the weakly supervised configs (``LoadImageLevelLabels(ann_file=...)``) and
``tools/pseudo_label.py --labels`` read: ``{"<image id>": ["class", ...]}``, the classes present in
each label map, 255 and ``background`` left out. For PASCAL VOC, ``voc_aug.py`` writes it from VOC's
own XML object annotations (the standard weak labels) or from the masks.

    # ADE20K (annotations: 0 = "other", 1..150 = the classes, i.e. reduce_zero_label)
    python tools/dataset_converters/image_labels.py data/ade/ADEChallengeData2016/annotations/training \\
        --classes ade20k --reduce-zero-label --out data/ade/ADEChallengeData2016/image_labels.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Dict, List, Sequence

import mmdiffseg  # noqa: F401  (work-arounds + registration)
from mmdiffseg.apis.io import atomic_write
from mmdiffseg.apis.pseudo_label import labels_from_ground_truth
from mmdiffseg.datasets.class_names import DATASET_CLASSES, resolve_classes


def labels_from_label_maps(label_maps: Dict[str, Path], classes: Sequence[str],
                           reduce_zero_label: bool = False) -> Dict[str, List[str]]:
    """Image id -> the class names present in its label map (index order). With
    ``reduce_zero_label`` value 0 is no class and value ``k`` is ``classes[k - 1]`` (ADE20K)."""
    names = ['background', *classes] if reduce_zero_label else list(classes)
    return labels_from_ground_truth({k: str(v) for k, v in label_maps.items()}, names)


def write_image_labels(labels: Dict[str, List[str]], out: Path) -> None:
    """``{"<id>": [names]}``, one image per line, sorted by id."""
    lines = ',\n'.join(f'{json.dumps(k)}: {json.dumps(v)}' for k, v in sorted(labels.items()))
    atomic_write(out, f'{{\n{lines}\n}}\n'.encode())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='image_labels.json from ground-truth label maps (the classes present)',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('label_dir', type=Path, help='folder of label PNGs (<image id>.png)')
    parser.add_argument('--classes', required=True,
                        help=f'class set ({", ".join(sorted(DATASET_CLASSES))}) or a,b,c')
    parser.add_argument('--reduce-zero-label', action='store_true',
                        help='label 0 is "other" and k is class k-1 (ADE20K annotations)')
    parser.add_argument('--suffix', default='.png', help='label map suffix')
    parser.add_argument('--out', type=Path, required=True, help='the JSON file to write')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    classes = resolve_classes(args.classes if args.classes in DATASET_CLASSES
                              else args.classes.split(','))
    maps = {p.name[:-len(args.suffix)]: p for p in sorted(args.label_dir.glob(f'*{args.suffix}'))}
    if not maps:
        raise SystemExit(f'image_labels.py: no *{args.suffix} label maps in {args.label_dir}')
    write_image_labels(labels_from_label_maps(maps, classes, args.reduce_zero_label), args.out)
    print(f'{args.out}: image-level labels of {len(maps)} images')


if __name__ == '__main__':
    main()
