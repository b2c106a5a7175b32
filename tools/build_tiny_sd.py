"""Build a random-weights Stable Diffusion pipeline folder (for smoke runs, tests and cost work).

The components come from a real model's configs and tokenizer (a diffusers folder without weights,
e.g. ``../shared/data/sd_configs/stable-diffusion-2-1-base``) with random weights, shrunk unless
``--full-size``; the folder loads like the real model (``--model FOLDER`` of the tools, or the
configs' label-cache ``model``). Its labels are meaningless: it checks that a pipeline runs.

    python tools/build_tiny_sd.py ../shared/data/sd_configs/stable-diffusion-2-1-base \\
        --out work_dirs/tiny-stable-diffusion-2-1-base
"""
import argparse
from pathlib import Path

from offline_args import HelpFormatter

from mmdiffseg.attention.testing import build_tiny_pipeline_folder


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='random-weights Stable Diffusion pipeline folder from a model\'s configs',
        formatter_class=HelpFormatter)
    parser.add_argument('sd_config_dir', type=Path,
                        help='diffusers folder of configs + tokenizer (model_index.json, unet/, '
                             'vae/, text_encoder/, tokenizer/, scheduler/); weights not needed')
    parser.add_argument('--out', type=Path, required=True, help='the pipeline folder to write')
    parser.add_argument('--full-size', action='store_true',
                        help='keep the real sizes (cost and memory work) instead of tiny ones')
    parser.add_argument('--seed', type=int, default=0, help='seed of the random weights')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if not (args.sd_config_dir / 'model_index.json').is_file():
        inside = sorted(str(found.parent)
                        for found in args.sd_config_dir.glob('*/model_index.json'))
        raise SystemExit(f'build_tiny_sd.py: {args.sd_config_dir} has no model_index.json '
                         '(expected a diffusers folder of configs and tokenizer)'
                         + (f'; the model folders in it: {", ".join(inside)}' if inside else ''))
    folder = build_tiny_pipeline_folder(args.sd_config_dir, args.out, full_size=args.full_size,
                                        seed=args.seed)
    print(f'{folder}: random-weights pipeline ({"full" if args.full_size else "tiny"} size)')


if __name__ == '__main__':
    main()
