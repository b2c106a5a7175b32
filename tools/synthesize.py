"""Synthesise a segmentation dataset: Stable Diffusion images + attention masks (SeeDiff default).

    python tools/synthesize.py --classes voc --images-per-class 100 --out work_dirs/synth_voc
    python tools/synthesize.py --classes cityscapes --prompt "a photo of a {}" \
        --prompt "a long shot of a {}" --out work_dirs/synth_cs
    python tools/synthesize.py --classes cat,dog --label-set voc --out DIR   # VOC indices

Writes JPEGImages/, SegmentationClass/ (palette PNG, 255 = unsure), ImageSets/Segmentation/<split>.txt
and manifest.jsonl (model, generator config, prompt and seed of every item). Deterministic for a
--seed; resumable (rerun the same command). Several GPUs:
``torchrun --nproc-per-node N tools/synthesize.py ... --device cuda --launcher pytorch``.
"""
import argparse
import sys

import mmdiffseg  # noqa: F401  (registers the generators)
from mmdiffseg.apis import cli
from mmdiffseg.apis.builders import pick_device
from mmdiffseg.apis.synthesize import DEFAULT_TEMPLATE, SYNTH_CLASS_SETS, synthesize

SD14 = 'CompVis/stable-diffusion-v1-4'


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--classes', default='voc',
                        help=f'class set ({", ".join(SYNTH_CLASS_SETS)}) or a comma-separated '
                             'list (default: voc, its 20 classes)')
    parser.add_argument('--label-set', default=None,
                        help='mask indices: a dataset name (voc, cityscapes, ...) or a comma list; '
                             'default: voc for --classes voc, else background + the classes')
    parser.add_argument('--prompt', action='append', default=None,
                        help='prompt template with {} for the class, repeatable (cycled per '
                             f'image; default: the --config preset\'s, else "{DEFAULT_TEMPLATE}")')
    parser.add_argument('--images-per-class', type=int, default=1)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--size', type=int, default=512, help='image side (default 512)')
    parser.add_argument('--split', default='train', help='split file name (default train)')
    cli.add_generator_args(parser, default_method='seediff')
    cli.add_engine_args(parser, default_model=SD14)
    cli.add_run_args(parser)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.classes in SYNTH_CLASS_SETS:
        names = list(SYNTH_CLASS_SETS[args.classes])
    else:
        names = [n.strip() for n in args.classes.split(',') if n.strip()]
    label_set = args.label_set or ('voc' if args.classes == 'voc' else None)
    gen_cfg, model = cli.generator_and_model(args, 'seediff', SD14)
    cli.start_launcher(args.launcher, args.device)
    synthesize(names, args.out, model, gen_cfg,
               label_set=cli.resolve_class_arg(label_set) if label_set else None,
               images_per_class=args.images_per_class, prompts=args.prompt,
               seed=args.seed, batch_size=args.batch_size, device=pick_device(args.device),
               dtype=args.dtype, size=args.size, split=args.split)


if __name__ == '__main__':
    sys.exit(cli.run_cli(main))
