"""Segment an image or a folder, draw overlays; or make a contact sheet of a generated folder.

    python tools/segment.py photo.jpg --method iseg --classes cat,dog --out work_dirs/seg
    python tools/segment.py IMAGES_DIR --method diffseg --out work_dirs/seg   # unlabelled segments
    python tools/segment.py --contact-sheet work_dirs/synth_voc  # its contact_sheet.jpg

--out is always a folder. Segmenting writes SegmentationClass/<id>.png, Overlays/<id>.jpg (mmseg's
SegLocalVisualizer) and contact_sheet.jpg (unless no item finished) into it. With --contact-sheet
FOLDER (any folder written by synthesize / pseudo_label / segment, from any working directory)
only the sheet is made: <out>/contact_sheet.jpg, by default in FOLDER itself.
"""
import sys
from pathlib import Path

import offline_args as opts


def parse_args(argv=None):
    parser = opts.parser_for(__doc__)
    parser.add_argument('input', nargs='?',
                        help='an image or a folder of images (default: none, for --contact-sheet)')
    parser.add_argument('--classes', default=None,
                        help=opts.classes_help('class names to look for (label set: background + '
                                               'them)', default='none, which only '
                                               '--method diffseg takes: unlabelled segments'))
    parser.add_argument('--contact-sheet', metavar='FOLDER',
                        help='only write the contact sheet (contact_sheet.jpg) of this '
                             'generated folder (default: off)')
    parser.add_argument('--cols', type=opts.positive_int, default=8,
                        help='contact sheet columns')
    parser.add_argument('--thumb', type=opts.positive_int, default=160,
                        help='contact sheet tile side (px)')
    parser.add_argument('--max-items', type=opts.positive_int, default=64,
                        help='contact sheet tiles')
    parser.add_argument('--no-legend', dest='legend', action='store_false',
                        help='contact sheet without the strip below that names the colour of '
                             'each class shown (default: with it, for folders of named classes)')
    opts.add_generator_args(parser, default_method='iseg')
    opts.add_engine_args(parser)
    opts.add_run_args(parser, out_required=False,
                      out_help='output folder, created; rerun the same command to resume '
                               '(required to segment; with --contact-sheet, default: FOLDER '
                               'itself)')
    return opts.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    # the package (torch, mmengine, mmseg) only now: --help and usage errors need none of it
    import mmdiffseg  # noqa: F401  (registers the generators)
    from mmdiffseg.apis import cli
    from mmdiffseg.apis.builders import pick_device
    from mmdiffseg.apis.folders import SHEET_NAME
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.apis.image_inputs import path_items
    from mmdiffseg.apis.segment import segment
    from mmdiffseg.apis.visualize import write_contact_sheet
    sheet_args = dict(cols=args.cols, thumb=args.thumb, max_items=args.max_items,
                      legend=args.legend)
    if args.out and Path(args.out).suffix.lower() in ('.jpg', '.jpeg', '.png'):
        raise UserInputError(f'--out is a folder (the sheet is written to <out>/{SHEET_NAME}), '
                             f'got the file name {args.out!r}: pass its folder')
    if args.contact_sheet:
        if args.input:
            raise UserInputError(
                f'give an input to segment ({args.input}) or --contact-sheet FOLDER (only the '
                f'sheet of a folder already made), not both: segmenting writes '
                f'<out>/{SHEET_NAME} itself')
        sheet = Path(args.out or args.contact_sheet) / SHEET_NAME
        write_contact_sheet(args.contact_sheet, sheet, **sheet_args)
        print(f'contact sheet of {args.contact_sheet}: {sheet}')
        return 0
    if not args.input:
        raise UserInputError('give an image or folder to segment, or --contact-sheet FOLDER')
    if not args.out:
        raise UserInputError('give --out, the output folder')
    cli.check_launcher(args.launcher, 'segment')
    device = pick_device(args.device)
    items = path_items(args.input, whole=' (one run per sub-folder, each with its own --out)')
    names = cli.resolve_class_arg(args.classes) if args.classes else None
    if names is not None and not [n for n in names if n != 'background']:
        raise UserInputError(f'--classes {args.classes!r} names no class to look for '
                             '(background is always label 0): name the objects, e.g. cat,dog')
    gen_cfg, model = cli.generator_and_model(args, 'iseg', opts.DEFAULT_MODEL)
    if names is None and gen_cfg['type'] != 'DiffSeg':
        raise UserInputError(f'{gen_cfg["type"]} needs --classes (only DiffSeg segments without)')
    cli.start_launcher(args.launcher, args.device)
    summary = segment(items, args.out, model, gen_cfg, names, batch_size=args.batch_size,
                      device=device, dtype=args.dtype, workers=args.workers,
                      compile_backend=args.compile, variant=args.variant)
    from mmengine.dist import get_rank
    if get_rank() != 0:  # rank 0 draws the sheet of every rank's items (all are written by now)
        return cli.exit_status(summary, args.strict)
    sheet = Path(args.out) / SHEET_NAME  # drawn again: --cols, --thumb... may differ from before
    if summary.made or summary.already_done:
        write_contact_sheet(args.out, sheet, **sheet_args)
        print(f'contact sheet: {sheet}')
    else:  # every item failed: the failures above say why, a sheet would show nothing
        print('contact sheet: not drawn, no item finished')
    return cli.exit_status(summary, args.strict)


if __name__ == '__main__':
    arguments = parse_args()  # --help and usage errors answer before the imports of main
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main, arguments))
