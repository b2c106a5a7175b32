"""Segment an image or a folder, draw overlays; or make a contact sheet of a generated folder.

    python tools/segment.py photo.jpg --method iseg --classes cat,dog --out work_dirs/seg
    python tools/segment.py IMAGES_DIR --method diffseg --out work_dirs/seg   # unlabelled segments
    python tools/segment.py --contact-sheet work_dirs/synth_voc --out sheet.jpg

Writes SegmentationClass/<id>.png, Overlays/<id>.jpg (mmseg's SegLocalVisualizer) and
contact_sheet.jpg into --out. With --contact-sheet FOLDER, only the sheet of that folder (any
folder written by synthesize / pseudo_label / segment) is written to --out.
"""
import argparse
import sys
from pathlib import Path

import mmdiffseg  # noqa: F401  (registers the generators)
from mmdiffseg.apis import cli
from mmdiffseg.apis.builders import pick_device
from mmdiffseg.apis.folders import encode_jpeg
from mmdiffseg.apis.io import UserInputError, atomic_write
from mmdiffseg.apis.segment import segment, segment_items
from mmdiffseg.apis.visualize import contact_sheet

SHEET_NAME = 'contact_sheet.jpg'


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('input', nargs='?', help='an image or a folder of images')
    parser.add_argument('--classes', default=None,
                        help='class names to look for (comma list or dataset name); omit for '
                             'unlabelled DiffSeg segments')
    parser.add_argument('--contact-sheet', metavar='FOLDER',
                        help='only write a contact sheet of this generated folder to --out')
    parser.add_argument('--cols', type=int, default=8, help='contact sheet columns')
    parser.add_argument('--thumb', type=int, default=160, help='contact sheet tile side (px)')
    parser.add_argument('--max-items', type=int, default=64, help='contact sheet tiles')
    cli.add_generator_args(parser, default_method='iseg')
    cli.add_engine_args(parser)
    cli.add_run_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    sheet_args = dict(cols=args.cols, thumb=args.thumb, max_items=args.max_items)
    if args.contact_sheet:
        atomic_write(args.out, encode_jpeg(contact_sheet(args.contact_sheet, **sheet_args)))
        print(f'contact sheet of {args.contact_sheet}: {args.out}')
        return
    if not args.input:
        raise UserInputError('give an image or folder to segment, or --contact-sheet FOLDER')
    items = segment_items(args.input)
    names = cli.resolve_class_arg(args.classes) if args.classes else None
    gen_cfg, model = cli.generator_and_model(args, 'iseg')
    if names is None and gen_cfg['type'] != 'DiffSeg':
        raise UserInputError(f'{gen_cfg["type"]} needs --classes (only DiffSeg segments without)')
    cli.start_launcher(args.launcher, args.device)
    summary = segment(items, args.out, model, gen_cfg, names, batch_size=args.batch_size,
                      device=pick_device(args.device), dtype=args.dtype)
    if summary.made or not (Path(args.out) / SHEET_NAME).is_file():
        sheet = Path(args.out) / SHEET_NAME
        atomic_write(sheet, encode_jpeg(contact_sheet(args.out, **sheet_args)))
        print(f'contact sheet: {sheet}')


if __name__ == '__main__':
    sys.exit(cli.run_cli(main))
