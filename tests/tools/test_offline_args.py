"""In-process checks of tools/offline_args.py: argument types, ``auto`` resolution, defaults."""
import argparse

import pytest
from tool_modules import load_tool

opts = load_tool('offline_args')


def _engine_parser():
    parser = opts.parser_for('test')
    opts.add_engine_args(parser)
    opts.add_generator_args(parser, 'iseg')
    return parser


@pytest.mark.parametrize('device,dtype,batch', [('cpu', 'float32', 4), ('cuda', 'float16', 16),
                                                ('cuda:1', 'float16', 16)])
def test_auto_engine_options_follow_the_device(device, dtype, batch):
    """--dtype/--batch-size auto: float16 and 16 on any CUDA device (cuda:N too), float32 and 4
    on the CPU; --workers auto is None (the package default), not 0."""
    args = opts.parse(_engine_parser(), ['--device', device])
    assert (args.device, args.dtype, args.batch_size, args.workers) == (device, dtype, batch,
                                                                        None)


def test_explicit_engine_options_are_kept():
    """Given values are not replaced by the auto rules."""
    args = opts.parse(_engine_parser(), ['--device', 'cpu', '--dtype', 'bfloat16',
                                         '--batch-size', '3', '--workers', '0'])
    assert (args.dtype, args.batch_size, args.workers) == ('bfloat16', 3, 0)


def test_parse_returns_a_namespace_unchanged():
    """An already parsed namespace is passed through as it is."""
    given = argparse.Namespace(device='cuda', dtype='auto')
    assert opts.parse(_engine_parser(), given) is given


@pytest.mark.parametrize('value', ['1x', '', 'AUTO', '2.0'])
def test_integer_options_refuse_non_integers(value):
    """A value that is no integer (nor exactly "auto") is an argparse error, for either lower
    bound."""
    for least in (0, 1):
        with pytest.raises(argparse.ArgumentTypeError, match='integer or "auto"'):
            opts.int_or_auto(value, least)
    with pytest.raises(argparse.ArgumentTypeError, match='expected a non-negative integer'):
        opts.count(value)


def test_integer_bounds():
    """count accepts 0, positive_int does not; auto passes through."""
    assert opts.count('0') == 0 and opts.positive_int('1') == 1
    assert opts.count_or_auto('auto') == 'auto'
    with pytest.raises(argparse.ArgumentTypeError, match="positive integer, got '0'"):
        opts.positive_int('0')


def test_compile_and_method_options():
    """--compile alone means inductor; --method is case-insensitive."""
    args = _engine_parser().parse_args(['--compile', '--method', 'DiffSeg'])
    assert (args.compile, args.method) == ('inductor', 'diffseg')
    assert _engine_parser().parse_args([]).compile is None


def test_help_keeps_worded_defaults():
    """An option whose help explains its default in words gets no '(default: ...)' appended;
    others do."""
    text = ' '.join(_engine_parser().format_help().split())
    assert '(default: None)' not in text
    assert "(default: auto)" in text


@pytest.mark.parametrize('tool', ['train', 'test', 'prefill_labels', 'pseudo_label', 'segment',
                                  'synthesize', 'eval_labels', 'build_tiny_sd',
                                  'dataset_converters/voc_aug',
                                  'dataset_converters/image_labels'])
def test_no_tool_help_prints_a_default_of_none(tool, capsys):
    """'(default: None)' after an option that is off unless given (pseudo_label's --labels,
    voc_aug's --sbd) told nothing, as after build_tiny_sd's required --out; their defaults are
    worded now. voc_aug's download links were wrapped inside a word, so a copied link failed."""
    with pytest.raises(SystemExit) as stop:
        load_tool(tool).parse_args(['--help'])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert 'usage:' in text and '(default: None)' not in text
    if tool.endswith('voc_aug'):
        assert 'grouping/semantic_contours/benchmark.tgz' in text


@pytest.mark.parametrize('tool, before', [('pseudo_label', ['--method', 'diffseg']),
                                          ('segment', ['--classes', 'cat,']),
                                          ('train', ['configs/mask2former/diffseg-sd14_cocostuff27'
                                                     '-unsupervised-512x512.py'])])
def test_an_input_written_after_cfg_options_is_named_as_such(tool, before, capsys, monkeypatch):
    """argparse gives --cfg-options every word after it: the image folder was taken as a pair,
    and the tool said to give the folder the user had given (train.py: a ValueError traceback
    from mmengine's parser)."""
    from sample_data import REPO
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as stop:
        load_tool(tool).parse_args([*before, '--cfg-options', 'iters=3', 'photos/', '--out', 'o'])
    assert stop.value.code == 2
    assert ("argument --cfg-options: takes KEY=VALUE pairs, got 'photos/' (a word after "
            '--cfg-options is read as one of its pairs: give inputs before --cfg-options)'
            ) in capsys.readouterr().err


def test_a_pair_whose_value_holds_an_equals_sign_or_nothing_is_taken():
    """``data_root=data/run=2`` and ``prompt_template=`` (empty) are pairs."""
    assert opts.key_value('data_root=data/run=2') == 'data_root=data/run=2'
    assert opts.key_value('generator.bg_context=') == 'generator.bg_context='
