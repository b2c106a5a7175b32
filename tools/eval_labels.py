"""Score a label folder against ground truth: per-class IoU table, mIoU, coverage.

    python tools/eval_labels.py work_dirs/pl --gt data/VOCdevkit/VOC2012/SegmentationClass \\
        --classes voc
    python tools/eval_labels.py work_dirs/diffseg --gt data/coco_stuff164k/annotations/val2017 \\
        --classes cocostuff27 --fine-labels --hungarian
    python tools/eval_labels.py work_dirs/ade_test_out \\
        --gt data/ade/ADEChallengeData2016/annotations/validation --classes ade20k \\
        --labels-reduce-zero-label

LABELS is a tool's output folder (its SegmentationClass/ is read) or a folder of PNGs. Ground
truth is read as the --classes set's mmseg dataset reads it: file <label id><--gt-suffix> in --gt
or its sub-folders (cityscapes: *_gtFine_labelTrainIds.png, a label id's _leftImg8bit dropped;
cityscapes27: *_gtFine_labelIds.png), ADE20K's value 0 "other" and k class k-1
(--reduce-zero-label), COCO-Stuff's own fine label maps (--fine-labels); ground truth or labels
holding values outside the classes are refused. Labels are read as class indices, as the tools
write them; ADE20K predictions that tools/test.py --out wrote (class k as k+1, as mmseg writes
them) need --labels-reduce-zero-label.
When the folder has a manifest (folders written by the tools), the classes its labels index must
be --classes (else the scores would compare unrelated indices); a plain folder of PNGs is taken
as indexing --classes. --hungarian scores unlabelled segments (DiffSeg) after per-image Hungarian
matching; predictions that tools/test.py --out saved with the DiffSeg protocol configs are of the
512x512 centre crop: --center-crop-resize 512 reads the ground truth so. --out-json writes the
numbers as strict JSON: a class absent from both labels and ground truth has IoU null (n/a in the
table).
"""
import sys
from dataclasses import replace

import offline_args as opts


def parse_args(argv=None):
    parser = opts.parser_for(__doc__, epilog='exit status:\n  0    scored\n  2    bad input '
                             '(nothing scored)\n  3    --out-json cannot be written')
    parser.add_argument('labels', help='label folder (tool output or PNGs)')
    parser.add_argument('--gt', required=True, help='ground-truth PNG folder')
    parser.add_argument('--classes', default='voc',
                        help=opts.classes_help('ground-truth classes', default='voc'))
    parser.add_argument('--gt-suffix', default=None,
                        help="ground-truth file name = label id + this (default: the --classes "
                             "dataset's, e.g. _gtFine_labelTrainIds.png for cityscapes, else .png)")
    parser.add_argument('--id-suffix', default=None,
                        help="the end of a label id that its ground truth's name lacks (x_img.png "
                             'scored against x_mask.png: --id-suffix _img --gt-suffix _mask.png; '
                             "default: the --classes dataset's image suffix, e.g. _leftImg8bit)")
    opts.add_reduce_zero_label_arg(parser)
    opts.add_fine_labels_arg(parser)
    parser.add_argument('--labels-reduce-zero-label', action='store_true',
                        help='the label files hold 0 for "other" and k for class k-1 (mmseg\'s '
                             'predictions of a reduce_zero_label dataset, e.g. tools/test.py '
                             '--out on ADE20K); default: class indices, as the tools write them')
    parser.add_argument('--center-crop-resize', type=int, metavar='SIZE', default=None,
                        help='read the ground truth as the DiffSeg protocol configs score it: '
                             'its centre square resized to SIZE x SIZE (labels nearest, '
                             'half-pixel), for predictions tools/test.py --out saved with them '
                             '(512); default: the ground truth as it is')
    parser.add_argument('--hungarian', action='store_true',
                        help='labels are unlabelled segment ids: Hungarian-match them per image')
    parser.add_argument('--out-json', help='also write the report as JSON here (default: none)')
    args = opts.parse(parser, argv)
    if args.center_crop_resize is not None and args.center_crop_resize < 1:
        parser.error(f'--center-crop-resize {args.center_crop_resize}: a side of at least 1 pixel')
    if args.hungarian and args.labels_reduce_zero_label:
        parser.error('--labels-reduce-zero-label reads class labels; --hungarian scores '
                     'unlabelled segment ids, which have no "other" value: give one of them')
    return args


def main(argv=None):
    args = parse_args(argv)
    # the package (torch, mmengine, mmseg) only now: --help and usage errors need none of it
    from mmdiffseg.apis import cli
    from mmdiffseg.apis.eval_labels import (evaluate_labels, evaluate_segments, format_report,
                                            report_json)
    from mmdiffseg.apis.ground_truth import GroundTruthFormat
    from mmdiffseg.apis.io import atomic_write
    classes = cli.resolve_class_arg(args.classes)
    gt_format = GroundTruthFormat.of_class_set(args.classes, args.gt_suffix,
                                               args.reduce_zero_label, args.fine_labels
                                               ).with_options(crop_resize=args.center_crop_resize,
                                                              id_suffix=args.id_suffix)
    gt_format = replace(gt_format, id_option='--id-suffix')   # (named where nothing pairs)
    if args.hungarian:
        report = evaluate_segments(args.labels, args.gt, classes, gt_format, progress=True)
    else:
        report = evaluate_labels(args.labels, args.gt, classes, gt_format,
                                 args.labels_reduce_zero_label, progress=True)
    print(format_report(report))
    if args.out_json:
        atomic_write(args.out_json, report_json(report).encode())
    return 0


if __name__ == '__main__':
    arguments = parse_args()  # --help and usage errors answer before the imports of main
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main, arguments))
