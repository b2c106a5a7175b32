"""The benchmark scripts refuse, at parse time and before any model is built, the arguments that
would measure nothing: a count of 0 or less (else a traceback after the models are built, or, read
as ``args.x or default``, the default in silence), a misspelt ``--tools`` / ``--methods`` name of
``bench_offline_tools.py`` (else a step that measures nothing and reads "ok" in the GPU suite).
Parsed, not run (the parsers' ``parse_args`` stops each script once its options are read). Also:
``check_map_kernel.py`` stops at once where the Triton kernels cannot run, and the GPU suite
refuses a misspelt ``GPU_SUITE_QUICK`` / ``GPU_SUITE_BUDGET_S`` / ``GPU_SUITE_DRY_RUN``."""
import subprocess
import sys

import pytest

from parse_only import parse_results
from sample_data import REPO

SCRIPTS = sorted(f'benchmarks/{p.name}' for p in (REPO / 'benchmarks').glob('*.py')
                 if p.name.startswith('bench_') or p.name == 'check_map_kernel.py')
TOOLS = 'benchmarks/bench_offline_tools.py'
#: (command, what its error line must say): the reviewed cases first
REFUSED = [
    ([TOOLS, '--tools', 'pseudolabel'], ["argument --tools: unknown 'pseudolabel'",
                                         'pseudo_label, segment, synthesize, eval_labels']),
    ([TOOLS, '--tools', 'pseudo_label,evallabels'], ["unknown 'evallabels'"]),
    ([TOOLS, '--methods', 'isg'], ["argument --methods: unknown 'isg'", 'iseg, diffseg']),
    ([TOOLS, '--methods', ','], ['argument --methods: no name given']),
    ([TOOLS, '--images', '0'], ["argument --images: expected a positive integer, got '0'"]),
    ([TOOLS, '--batch-size', '0'], ["argument --batch-size: expected a positive integer, got '0'"]),
    ([TOOLS, '--workers', '-1'], ["argument --workers: expected a non-negative integer, got '-1'"]),
    (['benchmarks/bench_iseg.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_iseg.py', '--batch', '-2'], ['argument --batch']),
    (['benchmarks/bench_diffseg.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_diffseg.py', '--cases', '0'], ['argument --cases']),
    (['benchmarks/bench_diffseg.py', '--chunk', 'four'], ['argument --chunk: expected a positive '
                                                          "integer, got 'four'"]),
    (['benchmarks/bench_capture.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_capture.py', '--batch-size', '1', '0'], ['argument --batch-size']),
    (['benchmarks/bench_end_to_end.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_end_to_end.py', '--steps', '0'], ['argument --steps']),
    (['benchmarks/bench_seediff.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_seediff.py', '--pamr-iter', '0'], ['argument --pamr-iter']),
    (['benchmarks/bench_capture_setup.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_capture_layer_host.py', '--repeats', '-3'], ['argument --repeats']),
    (['benchmarks/bench_deformable_attention.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_tool_host.py', '--repeats', '0'], ['argument --repeats']),
    (['benchmarks/bench_tool_host.py', '--batch-size', '0'], ['argument --batch-size']),
    (['benchmarks/bench_online_training.py', '--steps', '0'], ['argument --steps']),
    (['benchmarks/bench_op_counts.py', '--batch-size', '0'], ['argument --batch-size']),
    (['benchmarks/check_map_kernel.py', '--batch', '0'], ['argument --batch']),
]
ACCEPTED = [[TOOLS], [TOOLS, '--tools', 'eval_labels,pseudo_label', '--methods', 'diffseg',
                      '--images', '1', '--workers', '0', '--pamr-iter', '0'],
            ['benchmarks/bench_iseg.py', '--batch', '0'], ['benchmarks/bench_diffseg.py',
                                                           '--batch', '0', '--cases', '1']]


@pytest.fixture(scope='module')
def parsed():
    """Each command of ``SCRIPTS`` (no options), ``REFUSED`` and ``ACCEPTED`` -> its harness
    result, from one interpreter (the imports paid once)."""
    commands = [[script] for script in SCRIPTS] + [c for c, _ in REFUSED] + ACCEPTED
    return {tuple(command): result for command, result in zip(commands, parse_results(commands))}


def test_every_integer_option_of_every_benchmark_is_checked_by_the_shared_types(parsed):
    """No plain ``type=int`` left (options with ``choices`` aside): every count is the offline
    tools' ``positive_int``, the options where 0 means something their ``count``."""
    assert len(SCRIPTS) >= 14
    types = {}
    for script in SCRIPTS:
        assert parsed[script, ]['outcome'] == 'parsed', (script, parsed[script, ])
        types.update({(script, option): kind
                      for option, kind in parsed[script, ]['types'].items()})
    assert {kind for kind in types.values()} == {
        'offline_args.positive_int', 'offline_args.count',
        'cli_args.comma_names.<locals>.parse'}, types  # no builtins.int
    zero_allowed = {key for key, kind in types.items() if kind == 'offline_args.count'}
    assert zero_allowed == {(TOOLS, '--workers'), (TOOLS, '--pamr-iter'),
                            ('benchmarks/bench_tool_host.py', '--workers'),
                            ('benchmarks/bench_iseg.py', '--batch'),
                            ('benchmarks/bench_diffseg.py', '--batch')}
    for script in ('bench_iseg', 'bench_diffseg', 'bench_capture', 'bench_end_to_end',
                   'bench_seediff', 'bench_tool_host', 'bench_online_training'):
        assert types[f'benchmarks/{script}.py', '--repeats' if script != 'bench_online_training'
                     else '--steps'] == 'offline_args.positive_int'


@pytest.mark.parametrize('command, says', REFUSED, ids=[' '.join(c)[11:] for c, _ in REFUSED])
def test_a_value_that_would_measure_nothing_is_refused_at_parse_time(parsed, command, says):
    result = parsed[tuple(command)]
    assert result['outcome'] == 'exit 2', result
    error = result['stderr'].splitlines()[-1]
    for text in says:
        assert text in error, error


def test_the_offline_tools_lists_parse_to_their_names(parsed):
    """The defaults and a subset parse to lists of names (no substring tests: ``'iseg' in
    'isg'``), in the order given; 0 stays where it means something."""
    default = parsed[TOOLS, ]['options']
    assert default['tools'] == repr(['pseudo_label', 'segment', 'synthesize', 'eval_labels'])
    assert default['methods'] == repr(['iseg', 'diffseg'])
    assert default['images'] == 'None'
    given = parsed[tuple(ACCEPTED[1])]['options']
    assert (given['tools'], given['methods'], given['images'], given['workers'],
            given['pamr_iter']) == (repr(['eval_labels', 'pseudo_label']), repr(['diffseg']),
                                    '1', '0', '0')
    for command in ACCEPTED[2:]:
        assert parsed[tuple(command)]['outcome'] == 'parsed', parsed[tuple(command)]
        assert parsed[tuple(command)]['options']['batch'] == '0'


def test_check_map_kernel_stops_at_once_where_triton_cannot_run(monkeypatch, capsys):
    """On a CPU without ``TRITON_INTERPRET=1`` (before: a traceback after 30 s of set-up) and for
    ``--device cuda`` without a CUDA device: exit 2 at start-up, saying how to run it."""
    sys.path.insert(0, str(REPO / 'benchmarks'))
    import check_map_kernel
    monkeypatch.delenv('TRITON_INTERPRET', raising=False)
    devices = ['cpu'] + ([] if check_map_kernel.torch.cuda.is_available() else ['cuda'])
    for device in devices:
        with pytest.raises(SystemExit) as exit_:
            check_map_kernel.main(['--device', device, '--quick'])
        assert exit_.value.code == 2
        error = capsys.readouterr().err.splitlines()[-1]
        assert 'TRITON_INTERPRET=1' in error and 'CUDA GPU' in error, error
        assert ('no CUDA device here' if device == 'cuda' else 'got cpu') in error


#: (variable, value, what the error says)
MISSPELT = [
    ('GPU_SUITE_BUDGET_S', '300s', "GPU_SUITE_BUDGET_S='300s': give whole seconds"),
    ('GPU_SUITE_BUDGET_S', '-1', "GPU_SUITE_BUDGET_S='-1': give whole seconds"),
    ('GPU_SUITE_QUICK', 'yes', "GPU_SUITE_QUICK='yes': give 0 (the full settings) or 1"),
    ('GPU_SUITE_DRY_RUN', 'yes', "GPU_SUITE_DRY_RUN='yes': give 0 (run the steps) or 1"),
]


def test_the_gpu_suite_refuses_a_misspelt_setting_and_takes_the_documented_ones(tmp_path):
    """Exit 2 naming the variable and what it takes, before any step (before: no budget with
    ``[: 300s: integer expression expected``, the full settings for ``QUICK=yes``); 0 / 1 and
    whole seconds (an empty variable: its default) still run. A dry run (or, for a misspelt dry
    run, a misspelt step, which stops the suite too) keeps the check from running a step
    whatever the outcome."""
    def suite(**settings):
        env = {'PATH': '/usr/bin:/bin', 'OUT': str(tmp_path / 'out'), 'GPU_SUITE_DRY_RUN': '1',
               'GPU_SUITE_STEPS': 'iseg', **settings}
        return subprocess.run(['bash', 'benchmarks/gpu_suite.sh'], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=60)
    for variable, value, says in MISSPELT:
        done = suite(**{variable: value}, **({'GPU_SUITE_STEPS': 'no_such_step'}
                                             if variable == 'GPU_SUITE_DRY_RUN' else {}))
        assert (done.returncode, done.stdout) == (2, ''), (variable, done.stdout, done.stderr)
        assert done.stderr.startswith(f'gpu_suite.sh: {says}'), done.stderr
    for quick, budget in (('1', '300'), ('0', ''), ('', '0')):
        done = suite(GPU_SUITE_QUICK=quick, GPU_SUITE_BUDGET_S=budget)
        assert done.returncode == 0 and done.stdout.startswith('iseg\tpython3 benchmarks/'), done
        assert ('--device cpu' in done.stdout) == (quick == '1')
    assert not (tmp_path / 'out').exists()
