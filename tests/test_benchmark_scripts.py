"""Every benchmark script starts as the GPU suite starts it (``PYTHONPATH`` = the checkout, run
from elsewhere): its imports resolve and its ``--help`` prints. A script that cannot start costs a
GPU session's few minutes, and only shows there."""
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
                          env={'PATH': '/usr/bin:/bin', 'PYTHONPATH': str(REPO),
                               'HOME': str(tmp_path)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == '[]', done.stdout[-2000:]
