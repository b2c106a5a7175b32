"""Every benchmark script starts as the GPU suite starts it (``PYTHONPATH`` = the checkout before
any given one, run from elsewhere): its imports resolve and its ``--help`` prints. A script that
cannot start costs a GPU session's few minutes, and only shows there."""
import os
import subprocess
import sys

from sample_data import REPO

#: runs each script's ``--help`` in one interpreter (mmdiffseg imported once), sys.path restored
#: between them so that one script's path additions do not stand in for another's
HARNESS = '''
import contextlib, io, runpy, sys
failed = []
for path in sys.argv[1:]:
    saved, sys.argv = list(sys.path), [path, '--help']
    sys.path.insert(0, path.rsplit('/', 1)[0])    # as `python benchmarks/x.py` starts it
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name='__main__')
    except SystemExit as exit_:
        if exit_.code not in (0, None) or 'usage' not in out.getvalue():
            failed.append(f'{path}: exit {exit_.code}')
    except Exception as err:
        failed.append(f'{path}: {err!r}')
    sys.path[:] = saved
print(failed)
'''


def test_every_benchmark_script_starts(tmp_path):
    scripts = sorted(str(p) for p in (REPO / 'benchmarks').glob('bench_*.py'))
    assert len(scripts) >= 10
    done = subprocess.run([sys.executable, '-c', HARNESS, *scripts], cwd=tmp_path,
                          env={'PATH': '/usr/bin:/bin', 'PYTHONPATH': os.pathsep.join(
                               filter(None, [str(REPO), os.environ.get('PYTHONPATH')])),
                               'HOME': str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == '[]', done.stdout[-2000:]


def test_the_readme_device_calls_measure_every_target_in_the_first_call():
    """benchmarks/README.md's two device calls: together every step of the suite but the optional
    compile step, once each; the first holds every step a target of ``targets.py`` reads and fits
    one call's 600 s with the kill grace to spare; the step-limit sums the README states are the
    suite's. A target read only in the second call would go unjudged when a session's device
    time cuts that call short."""
    import re
    sys.path.insert(0, str(REPO / 'benchmarks'))
    import targets
    suite = (REPO / 'benchmarks' / 'gpu_suite.sh').read_text()
    limits = {name: int(limit.replace('$SEEDIFF_S', re.search(r'SEEDIFF_S=(\d+)', suite.split(
        'else', 1)[1]).group(1))) for name, limit in
        re.findall(r'^(?:.* && )?step (\w+) (\d+|\$SEEDIFF_S) ', suite, re.M)}
    readme = (REPO / 'benchmarks' / 'README.md').read_text()
    calls = [line.split('GPU_SUITE_STEPS="')[1].split('"')[0].split() for line in
             readme.splitlines() if 'GPU_SUITE_STEPS="' in line and 'bash benchmarks/gpu_suite.sh'
             in line and line.startswith('   source .devkit/setup.sh')]
    first, second = calls[0], calls[1]
    assert sorted(first + second) == sorted(set(limits) - {'end_to_end_compile'})
    assert {step for _, _, step, _, _ in targets.EXPECTED} <= set(first)
    assert sum(limits[s] for s in first) <= 600 - 20
    stated = re.search(r'step limits add up to (\d+) s and (\d+) s', readme)
    assert stated and [int(x) for x in stated.groups()] == [sum(limits[s] for s in call)
                                                            for call in (first, second)]


def test_the_device_stack_rehearsal_names_what_it_needs_before_building_anything(tmp_path):
    """Without ``.devkit/`` (``prepare_device.sh`` not run) or without a command it stops at
    once, naming the missing step, before its ~5 GB environment is built."""
    import shutil
    (tmp_path / 'benchmarks').mkdir()
    script = tmp_path / 'benchmarks' / 'rehearse_device_stack.sh'
    shutil.copy(REPO / 'benchmarks' / 'rehearse_device_stack.sh', script)
    env = {'PATH': '/usr/bin:/bin', 'REHEARSAL_DIR': str(tmp_path / 'stack')}

    def run(*args):
        return subprocess.run(['bash', str(script), *args], capture_output=True, text=True,
                              env=env, timeout=60)
    done = run('true')
    assert (done.returncode, done.stderr) == (
        2, 'no .devkit/: run bash benchmarks/prepare_device.sh first\n')
    (tmp_path / '.devkit' / 'whl').mkdir(parents=True)
    done = run()
    assert done.returncode == 2 and done.stderr.startswith('usage: ')
    assert not (tmp_path / 'stack').exists()


def test_the_benchmarks_read_the_sample_data_where_mmdiffseg_shared_data_says(tmp_path):
    """As the tests and the pre-flight do: a rehearsal (or a machine with the data elsewhere)
    points them at a copy, e.g. only what travels to the GPU machine (.devkit/shared/data)."""
    probe = ('import runpy, sys; sys.path.insert(0, sys.argv[1]); '
             'names = runpy.run_path(sys.argv[2]); '
             'print(names["VOC"], names["RESULTS"].name)')
    done = subprocess.run(
        [sys.executable, '-c', probe, str(REPO / 'benchmarks'),
         str(REPO / 'benchmarks' / 'bench_tool_host.py')], cwd=tmp_path,
        env=dict(os.environ, MMDIFFSEG_SHARED_DATA=str(tmp_path / 'data')),
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(tmp_path / 'data' / 'voc2012_val_samples'), 'tool_host.md']
