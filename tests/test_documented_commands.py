"""Every command the GPU suite starts and every tool or benchmark command the docs show
(README.md, docs/*.md, benchmarks/README.md) is accepted by its script's argument parser, option
names, choices and values included. The suite's CUDA commands run only on a lent GPU, whose minutes
a misspelt option would waste; a documented command that fails to parse is a newcomer's first
error. Parsed, not run: the scripts' ``parse_args`` stops them once their options are read."""
import ast
import re
import shlex
import subprocess

from parse_only import parse_results
from sample_data import REPO
from user_docs import user_doc_paths, user_docs_text

#: what a doc's placeholder stands for where the parser checks it (config files must exist)
MAIN_CONFIG = 'configs/mask2former/mask2former_r50_8xb2-20k_voc12-iseg-online-512x512.py'
PLACEHOLDERS = {'CONFIG': MAIN_CONFIG, 'CFG.py': MAIN_CONFIG, 'cfg.py': MAIN_CONFIG}


def parse_failures(commands):
    """The commands (argv lists, script first) that their script's parser refuses, each with
    its outcome (argparse's error line)."""
    return [[*command, f"{result['outcome']}: {result.get('stderr', '')[-300:]}"]
            for command, result in zip(commands, parse_results(commands))
            if result['outcome'] != 'parsed']


def suite_commands(quick: bool):
    """The ``python3 benchmarks/...`` commands of every step of the GPU suite (the optional one
    too), as its dry run prints them."""
    suite = (REPO / 'benchmarks' / 'gpu_suite.sh').read_text()
    steps = re.findall(r'^(?:.* && )?step ([a-z0-9_]+) ', suite, re.M)
    env = {'PATH': '/usr/bin:/bin', 'GPU_SUITE_DRY_RUN': '1', 'GPU_SUITE_QUICK': str(int(quick)),
           'GPU_SUITE_STEPS': ' '.join(steps)}
    done = subprocess.run(['bash', 'benchmarks/gpu_suite.sh'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split('\t', 1) for line in done.stdout.splitlines())
    assert sorted(lines) == sorted(steps)
    return [shlex.split(line)[1:] for line in lines.values()
            if line.startswith('python3 benchmarks/')]


def doc_commands(path: str):
    """The commands of a doc's code: fenced blocks (continued lines joined, comments too) and
    inline spans."""
    text = (REPO / path).read_text()
    blocks = re.findall(r'```\w*\n(.*?)```', text, re.S)
    prose = re.sub(r'```\w*\n.*?```', '', text, flags=re.S)
    return commands_in(blocks + [' '.join(span.replace('\\\n', ' ').split()) for span in
                                 re.findall(r'`([^`]+)`', prose)])


def tool_docstring_commands():
    """The commands of the tools' docstrings (their ``--help`` shows them)."""
    paths = sorted((REPO / 'tools').glob('*.py')) + sorted((REPO / 'tools').glob('*/*.py'))
    return commands_in(filter(None, (ast.get_docstring(ast.parse(path.read_text()))
                                     for path in paths)))


def commands_in(texts):
    """The ``python tools/...`` and ``python benchmarks/...`` commands in ``texts``, placeholders
    filled; usage lines with ``[optional]`` parts or ``...`` and ``tools/X.py`` are left out."""
    lines = [line for text in texts for line in re.sub(r'\\\n\s*#?\s*', ' ', text).splitlines()]
    commands = []
    for line in lines:
        for part in re.split(r'&&|;|\s#\s', ' '.join(line.split())):
            found = re.search(r'(?:python3?|torchrun(?: --[\w-]+ \w+)*) ((?:tools|benchmarks)/'
                              r'\S+\.py(?: .*)?)$', part.strip())
            if found and not re.match(r'\w+/[A-Z]\.py|.*(\[|\.\.\.)', found.group(1)):
                commands.append([PLACEHOLDERS.get(word, word)
                                 for word in shlex.split(found.group(1))])
    return commands


def benchmark_table_commands():
    """The Benchmarks table of the docs (docs/benchmarks.md): each script with every
    ``[optional]`` part given (the first of ``a|b`` alternatives)."""
    text = user_docs_text()
    commands = []
    for cell in re.findall(r'^\| `((?:bench|check)_\w+\.py [^`]*)`', text, re.M):
        cell = re.sub(r'(\S+)\\\|\S+', r'\1', cell).replace('[', ' ').replace(']', ' ')
        commands.append(['benchmarks/' + cell.split()[0], *cell.split()[1:]])
    return commands


def test_every_gpu_suite_command_parses():
    commands = suite_commands(quick=False) + suite_commands(quick=True)
    assert len(commands) >= 2 * 13
    assert parse_failures(commands) == []


def test_every_documented_tool_and_benchmark_command_parses():
    table = benchmark_table_commands()
    assert len(table) >= 6     # the Benchmarks table's scripts with options, wherever it lives
    commands = ([command for path in user_doc_paths() for command in doc_commands(path)]
                + doc_commands('benchmarks/README.md') + table + tool_docstring_commands())
    scripts = {argv[0] for argv in commands}
    assert {'tools/pseudo_label.py', 'tools/synthesize.py', 'tools/train.py', 'tools/test.py',
            'tools/eval_labels.py', 'tools/segment.py', 'tools/prefill_labels.py',
            'benchmarks/bench_capture.py', 'benchmarks/targets.py'} <= scripts
    assert parse_failures(commands) == []


def test_a_misspelt_option_or_value_is_a_failure():
    """The check itself: an unknown option, a value outside the choices, and a missing config
    are each reported; a good command is not."""
    good = ['benchmarks/bench_capture.py', '--device', 'cuda', '--spec', 'diffseg']
    failures = parse_failures([good, ['benchmarks/bench_capture.py', '--devise', 'cuda'],
                               ['benchmarks/bench_capture.py', '--spec', 'difseg'],
                               ['tools/train.py', 'configs/mask2former/nothing.py']])
    assert [f[:2] for f in failures] == [['benchmarks/bench_capture.py', '--devise'],
                                         ['benchmarks/bench_capture.py', '--spec'],
                                         ['tools/train.py', 'configs/mask2former/nothing.py']]
    assert 'unrecognized arguments: --devise' in failures[0][-1]
    assert "invalid choice: 'difseg'" in failures[1][-1]
    assert 'not found' in failures[2][-1]
