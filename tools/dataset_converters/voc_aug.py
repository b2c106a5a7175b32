"""PASCAL VOC 2012 (+ SBD) into what the VOC configs read.

    python tools/dataset_converters/voc_aug.py data/VOCdevkit --sbd data/benchmark_RELEASE

writes, under ``data/VOCdevkit/VOC2012``:

* ``SegmentationClassAug/<id>.png``: palette PNGs (pixels = class indices, VOC's colours) from
  SBD's ``dataset/cls/<id>.mat`` (``GTcls.Segmentation``); images of VOC train that SBD lacks get
  their VOC mask. Where both exist the SBD mask is taken, as in the usual ``SegmentationClassAug``:
  a rerun with ``--sbd`` replaces a mask that is not SBD's (VOC's, from a run without it), a rerun
  without keeps every mask there.
* ``ImageSets/Segmentation/aug.txt``: the augmented training split, (SBD train + SBD val + VOC
  train) minus VOC val: 10,582 images with the full releases. Without ``--sbd``: VOC train.
* ``image_labels.json``: image-level labels of every image of train, val and aug,
  ``{"<id>": ["class", ...]}``: by default the object names of VOC's ``Annotations/<id>.xml`` (the
  usual image-level labels of weakly supervised VOC: every annotated object, difficult and truncated
  ones included, part names ignored; ``--exclude-difficult`` leaves difficult objects out), or the
  classes present in the masks (``--labels-from gt``). VOC's XML names are mmseg's class names.

``--from-samples DIR`` instead builds a small VOCdevkit from a folder of images and masks
(``JPEGImages/*``, ``SegmentationClass/*.png``, e.g. ``../shared/data/voc2012_val_samples``): JPEG
images, the masks as ``SegmentationClass`` and ``SegmentationClassAug``, every image in train, val
and aug, and the image-level labels read off the masks. Reruns skip finished files.
"""
from __future__ import annotations

import argparse
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
from mmengine.utils import track_progress
from scipy.io import loadmat

sys.path[:0] = [str(Path(__file__).resolve().parents[i]) for i in (0, 1)]  # image_labels, tools/
from image_labels import write_image_labels  # noqa: E402
from offline_args import HelpFormatter  # noqa: E402

from mmdiffseg.apis.folders import encode_jpeg, encode_label_png, palette_for, read_rgb  # noqa: E402
from mmdiffseg.apis.io import UserInputError, atomic_write  # noqa: E402
from mmdiffseg.apis.pseudo_label import labels_from_ground_truth  # noqa: E402
from mmdiffseg.datasets.class_names import DATASET_CLASSES  # noqa: E402

VOC_CLASSES = DATASET_CLASSES['voc']
PALETTE = palette_for(VOC_CLASSES)
SPLITS = 'ImageSets/Segmentation'
DOWNLOADS = ('VOC 2012: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/'
             'VOCtrainval_11-May-2012.tar; SBD: http://www.eecs.berkeley.edu/Research/Projects/CS/'
             'vision/grouping/semantic_contours/benchmark.tgz (docs/data.md)')


def read_split(path: Path) -> List[str]:
    if not path.is_file():
        raise UserInputError(f'split file {path} not found ({DOWNLOADS})')
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def write_split(voc: Path, name: str, ids: Sequence[str]) -> None:
    atomic_write(voc / SPLITS / f'{name}.txt', ''.join(f'{i}\n' for i in ids).encode())


def aug_split(sbd_ids: Sequence[str], voc_train: Sequence[str],
              voc_val: Sequence[str]) -> List[str]:
    """(SBD train + val + VOC train) minus VOC val, sorted."""
    return sorted(set(sbd_ids).union(voc_train) - set(voc_val))


def sbd_mask(path: Path) -> np.ndarray:
    """The class-index mask of an SBD ``cls/<id>.mat`` (``GTcls.Segmentation``)."""
    try:
        return np.asarray(loadmat(str(path), squeeze_me=True, struct_as_record=False)
                          ['GTcls'].Segmentation, dtype=np.uint8)
    except Exception as err:  # noqa: BLE001  scipy's errors of a cut or foreign file vary
        raise UserInputError(f'{path} is no readable SBD mask ({type(err).__name__}: {err}); '
                             're-extract benchmark.tgz, then rerun (finished masks are kept)'
                             ) from None


def xml_labels(path: Path, exclude_difficult: bool = False) -> List[str]:
    """The object class names of a VOC ``Annotations/<id>.xml`` (each once, VOC class order)."""
    names = set()
    for obj in ET.parse(path).getroot().findall('object'):
        name = (obj.findtext('name') or '').strip()
        if name not in VOC_CLASSES:
            raise UserInputError(f'{path}: unknown class {name!r} (VOC: {VOC_CLASSES[1:]})')
        if not (exclude_difficult and (obj.findtext('difficult') or '0').strip() == '1'):
            names.add(name)
    return [c for c in VOC_CLASSES if c in names]


def _write_mask(job) -> None:
    """``out`` from ``source``: VOC's PNG copied, or an SBD ``.mat`` encoded (unless ``out``
    already holds that encoding)."""
    out, source = job
    if source.suffix != '.mat':
        atomic_write(out, source.read_bytes())
        return
    data = encode_label_png(sbd_mask(source), PALETTE)
    if not out.is_file() or out.read_bytes() != data:
        atomic_write(out, data)


def build_aug_masks(voc: Path, aug: Sequence[str], sbd_cls: Path = None) -> None:
    """``SegmentationClassAug``: SBD masks where SBD has the image (replacing any other mask
    there), else VOC's own mask (an existing mask kept: it may be SBD's)."""
    jobs = []
    for image_id in aug:
        out = voc / 'SegmentationClassAug' / f'{image_id}.png'
        mat = sbd_cls / f'{image_id}.mat' if sbd_cls else None
        source = mat if mat is not None and mat.is_file() else \
            voc / 'SegmentationClass' / f'{image_id}.png'
        if not source.is_file():
            raise UserInputError(f'no mask for {image_id} (neither SBD nor {source})')
        if source is mat or not out.is_file():
            jobs.append((out, source))
    if jobs:
        track_progress(_write_mask, jobs)


def image_labels(voc: Path, ids: Sequence[str], labels_from: str,
                 exclude_difficult: bool) -> Dict[str, List[str]]:
    if labels_from == 'xml':
        missing = [i for i in ids if not (voc / 'Annotations' / f'{i}.xml').is_file()]
        if missing:
            raise UserInputError(f'{len(missing)} images have no {voc}/Annotations/<id>.xml (e.g. '
                                 f'{missing[:3]}); use --labels-from gt (nothing was written)')
        return {i: xml_labels(voc / 'Annotations' / f'{i}.xml', exclude_difficult) for i in ids}
    maps = {}
    for i in ids:
        aug = voc / 'SegmentationClassAug' / f'{i}.png'
        maps[i] = str(aug if aug.is_file() else voc / 'SegmentationClass' / f'{i}.png')
    return labels_from_ground_truth(maps, VOC_CLASSES)


def check_devkit(devkit: Path) -> None:
    """Refuse the VOC2012 folder given as the VOCdevkit (``VOC2012/VOC2012`` would be made)."""
    if not (devkit / 'VOC2012').is_dir() and (devkit / SPLITS).is_dir():
        raise UserInputError(f'{devkit} is the VOC2012 folder itself: give the VOCdevkit folder '
                             f'that holds it ({devkit.parent}); nothing was written')


def prepare_voc(devkit: Path, sbd: Path = None, labels_from: str = 'xml',
                exclude_difficult: bool = False) -> Dict[str, List[str]]:
    """Aug split, ``SegmentationClassAug`` and ``image_labels.json`` in ``devkit/VOC2012``."""
    voc = devkit / 'VOC2012'
    check_devkit(devkit)
    train, val = read_split(voc / SPLITS / 'train.txt'), read_split(voc / SPLITS / 'val.txt')
    sbd_ids, sbd_cls = [], None
    if sbd is not None:
        dataset = sbd / 'dataset' if (sbd / 'dataset').is_dir() else sbd
        sbd_ids = read_split(dataset / 'train.txt') + read_split(dataset / 'val.txt')
        sbd_cls = dataset / 'cls'
        if not sbd_cls.is_dir():
            raise UserInputError(f'{dataset} has no cls/ (the SBD class masks): give the '
                                 'benchmark_RELEASE folder of a whole benchmark.tgz; nothing was '
                                 'written')
    aug = aug_split(sbd_ids, train, val)
    if not aug:
        raise UserInputError(
            f'the aug split would be empty: every image of {voc}/{SPLITS}/train.txt is in val.txt'
            + ('' if sbd else ' and no --sbd was given') + ' (a devkit made with --from-samples '
            'already has its aug split); nothing was written')
    before = voc / SPLITS / 'aug.txt'
    dropped = set(read_split(before)) - set(aug) - set(val) if before.is_file() and not sbd else ()
    if dropped:
        raise UserInputError(
            f'{before} lists {len(dropped)} images this run would drop from the aug split (SBD\'s, '
            f'e.g. {sorted(dropped)[0]}): rerun with --sbd as the run that made it (the aug split '
            'without SBD is VOC train alone), or, where it came with a pre-built '
            'SegmentationClassAug and SBD is not here, move it aside; nothing was written')
    missing = [i for i in aug if not (voc / 'JPEGImages' / f'{i}.jpg').is_file()]
    if missing:
        raise UserInputError(f'{len(missing)} images of the aug split are not in '
                             f'{voc}/JPEGImages (e.g. {missing[:3]}); is it VOC 2012?')
    labelled = sorted(set(aug).union(train, val))
    # the XML labels are read before any write; the masks' labels need SegmentationClassAug
    xml = image_labels(voc, labelled, 'xml', exclude_difficult) if labels_from == 'xml' else None
    build_aug_masks(voc, aug, sbd_cls)
    write_split(voc, 'aug', aug)
    labels = xml if xml is not None else image_labels(voc, labelled, 'gt', exclude_difficult)
    write_image_labels(labels, voc / 'image_labels.json')
    return dict(aug=aug, train=train, val=val)


def prepare_samples(samples: Path, devkit: Path) -> List[str]:
    """A VOCdevkit of ``samples`` (images + masks): every image in train, val and aug."""
    masks = {p.stem: p for p in sorted((samples / 'SegmentationClass').glob('*.png'))}
    images = {p.stem: p for p in sorted((samples / 'JPEGImages').iterdir())} \
        if (samples / 'JPEGImages').is_dir() else {}
    ids = sorted(set(masks) & set(images))
    if not ids:
        raise UserInputError(f'no image with a mask in {samples} (JPEGImages/*, '
                             'SegmentationClass/*.png)')
    check_devkit(devkit)
    voc = devkit / 'VOC2012'
    split = voc / SPLITS / 'train.txt'
    if split.is_file() and read_split(split) != ids:
        raise UserInputError(f'{voc} already holds another dataset ({split}); '
                             'choose another folder')
    # the masks are read (and an RGB one refused) before any write
    labels = labels_from_ground_truth({i: str(masks[i]) for i in ids}, VOC_CLASSES)
    for image_id in ids:
        image = voc / 'JPEGImages' / f'{image_id}.jpg'
        if not image.is_file():
            atomic_write(image, encode_jpeg(read_rgb(images[image_id])))
        for folder in ('SegmentationClass', 'SegmentationClassAug'):
            atomic_write(voc / folder / f'{image_id}.png', masks[image_id].read_bytes())
    for name in ('train', 'val', 'aug'):
        write_split(voc, name, ids)
    write_image_labels(labels, voc / 'image_labels.json')
    return ids


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='PASCAL VOC 2012 (+ SBD) -> aug split, SegmentationClassAug, image_labels.json',
        formatter_class=HelpFormatter, epilog=DOWNLOADS)
    parser.add_argument('devkit', type=Path, help='the VOCdevkit folder (holds VOC2012/)')
    parser.add_argument('--sbd', type=Path, default=None,
                        help='the SBD release (benchmark_RELEASE, holding dataset/cls, train.txt, '
                             'val.txt); default: none, the aug split is then VOC train')
    parser.add_argument('--labels-from', choices=('xml', 'gt'), default='xml',
                        help="image-level labels from VOC's XML annotations or from the masks")
    parser.add_argument('--exclude-difficult', action='store_true',
                        help='leave objects marked difficult out of the XML labels')
    parser.add_argument('--from-samples', type=Path, default=None, metavar='DIR',
                        help='build devkit from a folder of images + masks (JPEGImages, '
                             'SegmentationClass) instead; its image-level labels are read off '
                             'the masks (not with --sbd, --labels-from, --exclude-difficult; '
                             "default: off, the devkit's own VOC2012)")
    args = parser.parse_args(argv)
    ignored = [name for name, given in (('--sbd', args.sbd is not None),
                                        ('--labels-from', args.labels_from != 'xml'),
                                        ('--exclude-difficult', args.exclude_difficult)) if given]
    if args.from_samples is not None and ignored:
        parser.error(f'--from-samples builds the devkit from the masks alone: '
                     f'{", ".join(ignored)} would be ignored; leave them out')
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_samples is not None:
        ids = prepare_samples(args.from_samples, args.devkit)
        print(f'{args.devkit}/VOC2012: {len(ids)} sample images in train, val and aug, with '
              'SegmentationClassAug and image_labels.json')
        return
    splits = prepare_voc(args.devkit, args.sbd, args.labels_from, args.exclude_difficult)
    print(f'{args.devkit}/VOC2012: aug {len(splits["aug"])} images (10582 with the full VOC 2012 '
          f'+ SBD), train {len(splits["train"])}, val {len(splits["val"])}; SegmentationClassAug, '
          f'ImageSets/Segmentation/aug.txt and image_labels.json (labels from {args.labels_from})')


if __name__ == '__main__':
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main))
