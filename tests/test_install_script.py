"""tools/install.sh stops before downloading PyPI's CUDA 13 torch onto a machine whose NVIDIA
driver cannot run it, naming the fix (a fake ``nvidia-smi`` reports the driver; ``PYTHON=false``
makes any install step fail, so reaching one shows the check let the run go on)."""
import os
import subprocess

import pytest
from sample_data import REPO


def run_install(tmp_path, driver, **env):
    smi = tmp_path / 'nvidia-smi'
    smi.write_text(f'#!/bin/sh\necho "{driver}"\n')
    smi.chmod(0o755)
    base = {k: v for k, v in os.environ.items() if k not in ('TORCH_INDEX_URL', 'TORCH_SPEC')}
    env = dict(base, PATH=f'{tmp_path}{os.pathsep}{os.environ["PATH"]}', PYTHON='false', **env)
    return subprocess.run(['bash', str(REPO / 'tools/install.sh')], env=env, capture_output=True,
                          text=True, timeout=60)


def test_an_old_driver_stops_before_the_download_with_the_fix(tmp_path):
    done = run_install(tmp_path, '535.104.05')
    assert done.returncode == 2 and '[1/4]' not in done.stdout
    assert "NVIDIA driver is 535.104.05; PyPI's torch==2.14.1 is a CUDA 13 build" in done.stderr
    assert 'TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash tools/install.sh' in \
        done.stderr


@pytest.mark.parametrize('driver, env', [
    ('580.65.06', {}),                                              # new enough
    ('535.104.05', {'TORCH_INDEX_URL': 'https://download.pytorch.org/whl/cu126'}),  # the fix
    ('535.104.05', {'TORCH_SPEC': 'torch==2.8.0'}),                 # another torch: user's call
    ('', {}),                                                       # no GPU listed
])
def test_otherwise_the_install_goes_on(tmp_path, driver, env):
    done = run_install(tmp_path, driver, **env)
    assert '[1/4]' in done.stdout and done.returncode != 2, done.stderr  # PYTHON=false fails there
