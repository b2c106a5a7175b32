"""Score a label folder against ground truth: per-class IoU table, mIoU, coverage.

    python tools/eval_labels.py work_dirs/pl --gt data/VOC2012/SegmentationClass --classes voc
    python tools/eval_labels.py work_dirs/diffseg --gt GT_DIR --classes cocostuff27 --hungarian

LABELS is a tool's output folder (its SegmentationClass/ is read) or a folder of PNGs; ground
truth PNGs are matched by file stem. --hungarian scores unlabelled segments (DiffSeg) after
per-image Hungarian matching. --out-json writes the numbers.
"""
import argparse
import json
import sys

from mmdiffseg.apis import cli
from mmdiffseg.apis.eval_labels import evaluate_labels, evaluate_segments, format_report
from mmdiffseg.apis.io import atomic_write


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('labels', help='label folder (tool output or PNGs)')
    parser.add_argument('--gt', required=True, help='ground-truth PNG folder')
    parser.add_argument('--classes', default='voc',
                        help='ground-truth classes: dataset name or comma list (default voc)')
    parser.add_argument('--gt-suffix', default='.png')
    parser.add_argument('--hungarian', action='store_true',
                        help='labels are unlabelled segment ids: Hungarian-match them per image')
    parser.add_argument('--out-json', help='also write the report as JSON here')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    classes = cli.resolve_class_arg(args.classes)
    evaluate = evaluate_segments if args.hungarian else evaluate_labels
    report = evaluate(args.labels, args.gt, classes, args.gt_suffix)
    print(format_report(report))
    if args.out_json:
        atomic_write(args.out_json, json.dumps(report, indent=1).encode())


if __name__ == '__main__':
    sys.exit(cli.run_cli(main))
