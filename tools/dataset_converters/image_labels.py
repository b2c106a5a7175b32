"""Image-level labels (``image_labels.json``) read off ground-truth label maps, for any dataset.

The file the weakly supervised configs (``LoadImageLevelLabels(ann_file=...)``) and
``tools/pseudo_label.py --labels`` read: ``{"<image id>": ["class", ...]}``, the classes present in
each label map, 255 and ``background`` left out. The maps are read as the class set's mmseg dataset
reads them (ADE20K: 0 = "other", k = class k-1, mmseg's ``reduce_zero_label``; Cityscapes: its
label map; COCO-Stuff's own maps: ``--fine-labels``), as ``tools/eval_labels.py`` does. For PASCAL
VOC, ``voc_aug.py`` writes it from VOC's own XML object annotations (the standard weak labels) or
from the masks.

    python tools/dataset_converters/image_labels.py \\
        data/ade/ADEChallengeData2016/annotations/training \\
        --classes ade20k --out data/ade/ADEChallengeData2016/image_labels.json
    python tools/dataset_converters/image_labels.py data/cityscapes/gtFine/train \\
        --classes cityscapes --out data/cityscapes/image_labels.json

Sub-folders are read too; ids are the images' file stems, as the datasets look them up
(Cityscapes: ``<frame>_leftImg8bit`` for ``<frame>_gtFine_labelTrainIds.png``).

A text file instead of the folder: the iSeg release's TagCLIP predictions for its OVS tasks
(``ovs/tagCLIP/output/*_tagclip.txt``: ``<image id> <class index> ...``, 0-based, background
excluded, in the release's class order) for ``--classes voc``, ``coco_object`` or ``context59``:

    python tools/dataset_converters/image_labels.py voc_context_val_tagclip.txt \
        --classes context59 --out data/VOCdevkit/VOC2010/tagclip_labels.json
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tools/: the shared options
from offline_args import (HelpFormatter, add_fine_labels_arg,  # noqa: E402
                          add_reduce_zero_label_arg, classes_help, parse)

import mmdiffseg  # noqa: F401,E402  (work-arounds + registration)
from mmdiffseg.apis.cli import resolve_class_arg  # noqa: E402
from mmdiffseg.apis.ground_truth import GroundTruthFormat, suffix_hint  # noqa: E402
from mmdiffseg.apis.io import UserInputError, atomic_write  # noqa: E402
from mmdiffseg.apis.pseudo_label import labels_from_ground_truth  # noqa: E402

#: the class sets of the iSeg release's index files (its OVS tasks' TagCLIP predictions)
RELEASED_INDEX_SETS = ('voc', 'coco_object', 'context59')
EPILOG = '''exit status:
  0    done
  2    bad input, found before any write
  3    the output cannot be written'''


def write_image_labels(labels: Dict[str, List[str]], out: Path) -> None:
    """``{"<id>": [names]}``, one image per line, sorted by id."""
    lines = ',\n'.join(f'{json.dumps(k)}: {json.dumps(v)}' for k, v in sorted(labels.items()))
    atomic_write(out, f'{{\n{lines}\n}}\n'.encode())


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='image_labels.json from ground-truth label maps (the classes present)',
        epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument('label_dir', type=Path,
                        help='folder of label maps, sub-folders included (Cityscapes\' cities), '
                             "or a text file of the iSeg release's class indices (TagCLIP)")
    parser.add_argument('--classes', required=True,
                        help=classes_help('the classes of the label maps'))
    add_reduce_zero_label_arg(parser)
    add_fine_labels_arg(parser)
    parser.add_argument('--suffix', default=None,
                        help="label map file = image id + this (default: the --classes set's "
                             "dataset's, e.g. _gtFine_labelTrainIds.png for cityscapes, else .png)")
    parser.add_argument('--out', type=Path, required=True, help='the JSON file to write')
    return parse(parser, argv)


def released_indices(path: Path, class_set: str) -> Dict[str, List[str]]:
    """The class names of a file of the iSeg release's 0-based class indices, a line per image
    (:func:`~mmdiffseg.generators.iseg_presets.released_index_order`)."""
    from mmdiffseg.generators.iseg_presets import released_index_order
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UserInputError(f'{path} is no text file: give the folder that holds the label maps, '
                             "or a TagCLIP .txt of the release's class indices") from None
    if class_set not in RELEASED_INDEX_SETS:
        raise UserInputError(f'{path} holds class indices of the iSeg release: --classes must '
                             f'name its order, one of {", ".join(RELEASED_INDEX_SETS)}')
    order = released_index_order(class_set)
    labels = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():   # a blank line (files joined or edited by hand)
            continue
        image_id, *indices = line.split()
        bad = [i for i in indices if not i.isdigit() or int(i) >= len(order)]
        if bad:
            raise UserInputError(f'{path}:{number}: {bad} are no class index of {class_set} '
                                 f'(0..{len(order) - 1} in the release\'s order)')
        labels[image_id] = [order[int(i)] for i in dict.fromkeys(indices)]
    return labels


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.label_dir.is_file():
        labels = released_indices(args.label_dir, args.classes)
        write_image_labels(labels, args.out)
        print(f'{args.out}: image-level labels of {len(labels)} images (the release\'s class '
              f'indices, {args.classes} order)')
        return
    if not args.label_dir.is_dir():
        raise UserInputError(f'label map folder {args.label_dir} not found: give the folder that '
                             'holds the ground-truth label maps')
    classes = resolve_class_arg(args.classes)
    gt_format = replace(GroundTruthFormat.of_class_set(args.classes, args.suffix,
                                                       args.reduce_zero_label, args.fine_labels),
                        suffix_option='--suffix')
    suffix = gt_format.seg_map_suffix
    maps = {}
    for path in sorted(args.label_dir.rglob(f'*{suffix}')):
        if path.name.startswith('.'):  # macOS's ._x.png beside x.png, not a label map
            continue
        image_id = path.name[:-len(suffix)] + gt_format.id_suffix  # the image's stem
        if image_id in maps:
            raise UserInputError(f'{maps[image_id]} and {path} are label maps of one image id '
                                 f'{image_id!r}; give a folder that holds one of them')
        maps[image_id] = path
    if not maps:
        raise UserInputError(f'no *{suffix} label maps in {args.label_dir} or its sub-folders. '
                             + suffix_hint(args.label_dir, gt_format))
    gt_format.check_fine_labels([str(path) for path in maps.values()])
    labels = labels_from_ground_truth({k: str(v) for k, v in maps.items()}, classes,
                                      gt_format=gt_format)
    write_image_labels(labels, args.out)
    print(f'{args.out}: image-level labels of {len(maps)} images (read with reduce_zero_label='
          f'{gt_format.reduce_zero_label})')


if __name__ == '__main__':
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main))
