"""Run a test file in a child pytest process under Triton's interpreter.

``TRITON_INTERPRET=1`` must be set before a kernel is decorated, and other tests of this process may
already have imported Triton or the kernel modules, so the interpreted cases live in files without
the ``test_`` prefix (not collected by ``pytest tests``) and run through :func:`run_interpreted`.
"""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_interpreted(test_file: Path, passed: int, timeout: int = 900) -> None:
    """Runs ``test_file`` with ``TRITON_INTERPRET=1``; asserts ``passed`` tests passed, none
    skipped or failed."""
    env = dict(os.environ, TRITON_INTERPRET='1')
    env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), str(REPO / 'tests'),
                                                    env.get('PYTHONPATH')) if p)
    run = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                          str(test_file)], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=timeout)
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    summary = run.stdout.strip().splitlines()[-1]
    assert f'{passed} passed' in summary and 'skipped' not in summary, report
