"""Synthesise a segmentation dataset: Stable Diffusion images + attention masks with SeeDiff (the
generator that synthesises; iSeg and DiffSeg label real images: tools/pseudo_label.py).

    python tools/synthesize.py --classes voc --images-per-class 100 --out work_dirs/synth_voc
    python tools/synthesize.py --classes cityscapes --prompt "a photo of a {}" \\
        --prompt "a long shot of a {}" --out work_dirs/synth_cs
    python tools/synthesize.py --classes cat,dog --label-set voc --out DIR   # VOC indices

Writes JPEGImages/, SegmentationClass/ (palette PNG; 255 = unsure only without a background class,
e.g. ADE20K's), ImageSets/Segmentation/<split>.txt and manifest.jsonl (model, generator config,
prompt and seed of every item). Deterministic for a --seed; resumable (rerun the same command).
Several GPUs: ``torchrun --nproc-per-node N tools/synthesize.py ... --launcher pytorch``.
"""
import sys

import offline_args as opts

SD14 = 'CompVis/stable-diffusion-v1-4'
#: the names of ``mmdiffseg.datasets.class_names.SYNTH_CLASS_SETS``
SYNTH_SETS = ('voc', 'cityscapes', 'ade20k')


def parse_args(argv=None):
    parser = opts.parser_for(__doc__)
    parser.add_argument('--classes', default='voc',
                        help=opts.classes_help('classes to synthesise (voc: its 20 object '
                                               'classes; cityscapes: human, vehicle; ade20k: its '
                                               '150 classes)', SYNTH_SETS))
    parser.add_argument('--label-set', default=None,
                        help=opts.classes_help('mask indices', default='the set itself for '
                                               '--classes voc or ade20k; else the --config '
                                               "preset's classes where they hold every class; "
                                               'else background + the classes'))
    parser.add_argument('--prompt', action='append', default=None,
                        help='prompt template with exactly one {} for the class, repeatable, '
                             'cycled per image (default: the --config preset\'s, else '
                             '"a photo of a {}")')
    parser.add_argument('--images-per-class', type=int, default=1, help='images per class')
    parser.add_argument('--seed', type=int, default=0,
                        help="run seed; each image's seed derives from it (--seed-per-image)")
    parser.add_argument('--seed-per-image', choices=('hash', 'index'), default='hash',
                        help="hash: a hash of --seed and the image id (default); index: --seed + "
                             "the image's index in its class (SeeDiff's release: --seed 200000)")
    parser.add_argument('--size', type=int, default=512,
                        help='image side in pixels (default 512, as released). SeeDiff reads '
                             'its 16/32/64 token grids at 512 px; at another size (a multiple of '
                             '64, e.g. 768 for SD 2.x 768 models) the grids scale with it '
                             '(768: 24/48/96)')
    parser.add_argument('--split', default='train', help='split file name')
    opts.add_generator_args(parser, default_method='seediff', methods=('seediff',))
    opts.add_engine_args(parser, default_model=SD14)
    opts.add_run_args(parser)
    return opts.parse(parser, argv)


def main(argv=None):
    args = parse_args(argv)
    # the package (torch, mmengine, mmseg) only now: --help and usage errors need none of it
    import mmdiffseg  # noqa: F401  (registers the generators)
    from mmdiffseg.apis import cli
    from mmdiffseg.apis.builders import (check_can_synthesise, check_prompt_templates,
                                         pick_device)
    from mmdiffseg.apis.io import UserInputError
    from mmdiffseg.apis.synthesize import synthesize
    from mmdiffseg.datasets.class_names import SYNTH_CLASS_SETS, synthesis_label_set
    cli.check_launcher(args.launcher, 'synthesize')
    device = pick_device(args.device)
    names = cli.resolve_class_arg(args.classes, sets=SYNTH_CLASS_SETS)
    label_set = (cli.resolve_class_arg(args.label_set, '--label-set') if args.label_set else
                 synthesis_label_set(args.classes) if args.classes in SYNTH_CLASS_SETS else None)
    gen_cfg, model = cli.generator_and_model(args, 'seediff', SD14)
    check_can_synthesise(gen_cfg, f'the preset {args.config}' if args.config else '--method')
    if args.prompt is not None:
        check_prompt_templates(args.prompt, '--prompt')
        if any(pair.split('=', 1)[0] == 'prompt_templates' for pair in args.cfg_options or ()):
            raise UserInputError('--prompt and --cfg-options prompt_templates=... both set the '
                                 'prompt templates: give them once (--prompt, repeated)')
    elif 'prompt_templates' in gen_cfg:
        templates = gen_cfg['prompt_templates']
        check_prompt_templates([templates] if isinstance(templates, str) else templates,
                               'prompt_templates of --config / --cfg-options')
    cli.start_launcher(args.launcher, args.device)
    summary = synthesize(names, args.out, model, gen_cfg, label_set=label_set,
                         images_per_class=args.images_per_class, prompts=args.prompt,
                         seed=args.seed, seed_per_image=args.seed_per_image,
                         batch_size=args.batch_size,
                         device=device, dtype=args.dtype, size=args.size,
                         split=args.split, workers=args.workers, compile_backend=args.compile,
                         variant=args.variant)
    return cli.exit_status(summary, args.strict)


if __name__ == '__main__':
    arguments = parse_args()  # --help and usage errors answer before the imports of main
    from mmdiffseg.apis.cli import run_cli
    sys.exit(run_cli(main, arguments))
