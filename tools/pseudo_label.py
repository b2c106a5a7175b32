"""Pseudo-label real images with a diffusion-attention generator (iSeg by default).

    python tools/pseudo_label.py IMAGES_DIR --labels labels.json --classes voc --out work_dirs/pl
    python tools/pseudo_label.py --dataset-config cfg.py --split train --labels-from-gt --out DIR
    python tools/pseudo_label.py IMAGES_DIR --method diffseg --out DIR     # unlabelled segments

--labels-from-gt reads the ground truth as its mmseg dataset does (--dataset-config's dataset, else
the --classes set's: ADE20K's value 0 is "other" and k class k-1, --reduce-zero-label).
Images of any mode are read as mmseg reads them (EXIF orientation applied, 16-bit scaled to 8,
grey and palette to RGB, alpha dropped). Resumable (rerun the same command after an interruption);
several GPUs with ``torchrun --nproc-per-node N tools/pseudo_label.py ... --launcher pytorch``.
"""
import sys
from pathlib import Path

import offline_args as opts


def parse_args(argv=None):
    parser = opts.parser_for(__doc__)
    parser.add_argument('images', nargs='?', help='folder of images, id = file stem (or give '
                        '--dataset-config; default: none)')
    parser.add_argument('--dataset-config', help='an mmseg config whose dataset lists the images '
                        '(instead of an image folder; default: none)')
    parser.add_argument('--split', default='train',
                        help='which <split>_dataloader of --dataset-config; also the name of '
                             'the split file written')
    parser.add_argument('--classes', default=None,
                        help=opts.classes_help('label set of the output PNGs',
                                               default="the --dataset-config's classes, else "
                                               "the --config preset's (configs/iseg: its "
                                               'vocabulary, e.g. coco_object)'))
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument('--labels', help='JSON {"<id>": ["class", ...]}: image-level labels '
                        '(default: none)')
    labels.add_argument('--labels-from-gt', nargs='?', const='', default=None, metavar='GT_DIR',
                        help='read image-level labels off ground-truth PNGs (GT_DIR, or the '
                             'dataset config\'s seg maps; default: off)')
    parser.add_argument('--gt-suffix', default=None,
                        help='--labels-from-gt GT_DIR: ground-truth file name = image id (its '
                             "stem) + this (default: the dataset's: --dataset-config's, else the "
                             "--classes set's, e.g. _gtFine_labelTrainIds.png for cityscapes, "
                             'else .png)')
    opts.add_reduce_zero_label_arg(parser, "--dataset-config's, else the --classes set's")
    opts.add_fine_labels_arg(parser)
    opts.add_generator_args(parser, default_method='iseg')
    opts.add_engine_args(parser)
    opts.add_run_args(parser)
    return opts.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    # the package (torch, mmengine, mmseg) only now: --help and usage errors need none of it
    import mmdiffseg  # noqa: F401  (registers the generators)
    from mmdiffseg.apis import cli
    from mmdiffseg.apis.builders import generator_vocabulary, pick_device
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.apis.ground_truth import GroundTruthFormat, find_ground_truth
    from mmdiffseg.apis.folders import check_ground_truth_outside_output
    from mmdiffseg.apis.image_inputs import images_from_dataset_config, images_from_folder
    from mmdiffseg.apis.pseudo_label import (labels_from_file, labels_from_ground_truth,
                                             pseudo_label)
    if bool(args.images) == bool(args.dataset_config):
        took = (f' (--labels-from-gt took {args.labels_from_gt} as its GT_DIR: give the image '
                'folder first)' if not args.images and args.labels_from_gt else '')
        raise UserInputError(f'give an image folder or --dataset-config (one of them){took}')
    cli.check_launcher(args.launcher, 'pseudo_label')
    device = pick_device(args.device)
    gen_cfg, model = cli.generator_and_model(args, 'iseg', opts.DEFAULT_MODEL)
    # the label set: --classes, else an iSeg preset's vocabulary (COCO-Object, Context 59, ...),
    # whose dataset's ground-truth format is read too (ADE20K's, Context's reduce_zero_label)
    class_set = args.classes or (None if args.dataset_config else generator_vocabulary(gen_cfg))
    if args.dataset_config:
        if args.fine_labels:
            raise UserInputError(f'--fine-labels is for a ground-truth folder: the dataset of '
                                 f'{args.dataset_config} reads its seg maps as its own '
                                 'fine_labels setting says')
        items, classes, gt_format = images_from_dataset_config(args.dataset_config, args.split)
    else:
        items, classes = images_from_folder(args.images), None
        gt_format = GroundTruthFormat.of_class_set(class_set, fine_labels=args.fine_labels)
    if class_set:
        classes = cli.resolve_class_arg(class_set)
    unlabelled = gen_cfg['type'] == 'DiffSeg' and classes is None
    if args.labels:
        image_labels = labels_from_file(args.labels)
    elif args.labels_from_gt is not None:
        if classes is None:
            raise UserInputError('--labels-from-gt needs --classes (the GT label set)')
        gt_format = gt_format.with_options(args.gt_suffix, args.reduce_zero_label)
        if args.labels_from_gt:
            gt = find_ground_truth([it.id for it in items], args.labels_from_gt, gt_format,
                                   '--labels-from-gt', 'image(s)')
            check_ground_truth_outside_output(gt.values(), args.out, 'labels')
        elif not args.dataset_config:
            raise UserInputError('--labels-from-gt needs GT_DIR, the ground-truth folder (only '
                                 "--dataset-config's images come with their seg maps)")
        else:
            gt = {it.id: it.payload.get('gt') for it in items}
            missing = [p or i for i, p in gt.items() if not p or not Path(p).is_file()]
            if missing:
                raise UserInputError(f'no ground truth for {len(missing)} image(s) of '
                                     f'{args.dataset_config}, e.g. {missing[:3]}: prepare its '
                                     'seg maps, or pass --labels-from-gt GT_DIR')
        image_labels = labels_from_ground_truth(gt, classes, gt_format=gt_format,
                                                workers=args.workers)
    elif unlabelled:
        image_labels = None
    else:
        raise UserInputError(f'{gen_cfg["type"]} needs image-level labels: --labels FILE or '
                             '--labels-from-gt (or use --method diffseg without --classes)')
    if classes is None and not unlabelled:
        raise UserInputError('give --classes (the label set of the output PNGs)')
    cli.start_launcher(args.launcher, args.device)
    summary = pseudo_label(items, args.out, model, gen_cfg, classes, image_labels,
                           batch_size=args.batch_size, device=device,
                           dtype=args.dtype, split=args.split, workers=args.workers,
                           compile_backend=args.compile, variant=args.variant)
    return cli.exit_status(summary, args.strict)


if __name__ == '__main__':
    arguments = parse_args()  # --help and usage errors answer before the imports of main
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main, arguments))
