"""tools/install.sh where a newcomer's machine differs (fake PYTHON of test_install_script):
torch installed from wheel files, a wheel folder whose path has a space, compiled mmcv ops that
do not load, sh instead of bash, Python older than 3.10, a pip too old for editable installs, and
the rerun of the old-driver fix."""
import os
import subprocess

import pytest
from sample_data import REPO
from test_install_script import calls, mmcv_install, run_fake


def test_a_torch_installed_from_wheel_files_is_held_as_it_is(tmp_path):
    """pip freeze writes a torch installed from a wheel file (an offline machine, a cluster's
    wheel store) as 'torch @ file:...': the script stopped silently after [1/4]."""
    done, log = run_fake(tmp_path)
    assert done.returncode == 0 and '[4/4]' in done.stdout, done.stderr
    assert calls(log, 'list') and not calls(log, 'freeze')


def test_a_wheel_folder_whose_path_has_a_space_is_searched(tmp_path):
    """PIP_FIND_LINKS is split at spaces: the shared wheel was never found, and mmcv compiled
    for 12-25 min instead."""
    (tmp_path / 'my wheels').mkdir()
    done, log = run_fake(tmp_path, MMCV_OPS='compiled', MMCV_WHEELS=str(tmp_path / 'my wheels'))
    assert done.returncode == 0, done.stderr
    assert f' --find-links {tmp_path / "my wheels"} mmcv==2.1.0 |' in mmcv_install(log)


def test_compiled_ops_that_do_not_load_are_installed_again(tmp_path):
    """The warning for compiled ops that do not load (mmcv built for another torch) names
    MMCV_OPS=compiled bash tools/install.sh, which found mmcv installed and rebuilt nothing;
    the broken build is removed now and installed again without pip's wheel cache."""
    done, log = run_fake(tmp_path, installed='mmcv', compiled=False, MMCV_OPS='compiled')
    assert "the installed mmcv's compiled ops do not load" in done.stdout
    steps = [line.split(' | ') for line in log if line.startswith(('uninstall', 'install'))
             and 'mmcv' in line.split(' | ')[0]]
    assert steps[0][0] == 'uninstall -qq -y mmcv'
    assert steps[1][0].endswith(' mmcv==2.1.0') and 'PIP_NO_CACHE_DIR=1' in steps[1][1]
    (tmp_path / 'loads').mkdir()
    done, log = run_fake(tmp_path / 'loads', installed='mmcv', MMCV_OPS='compiled')
    assert not calls(log, 'uninstall') and 'PIP_NO_CACHE_DIR= ' in mmcv_install(log) + ' '


def test_sh_is_told_to_use_bash(tmp_path):
    done = subprocess.run(['sh', str(REPO / 'tools/install.sh')], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHON='false'))
    assert done.returncode == 2
    assert done.stderr.strip() == 'install.sh: run it with bash: bash tools/install.sh'


def test_python_older_than_3_10_stops_with_the_fix(tmp_path):
    done, log = run_fake(tmp_path, FAKE_PY_VERSION='3.9')
    assert done.returncode == 2 and not calls(log, 'install')
    assert 'is Python 3.9; torch==2.14.1 needs Python 3.10 or newer' in done.stderr


def test_a_pip_too_old_for_editable_installs_is_upgraded_first(tmp_path, monkeypatch):
    """pip 21.2 stopped at step 3 ('File "setup.py" or "setup.cfg" not found')."""
    monkeypatch.setenv('FAKE_PIP_VERSION', '21.2.4')
    done, log = run_fake(tmp_path)
    assert 'pip 21.2.4 is older than 21.3: upgrading it' in done.stdout
    assert calls(log, 'install')[0].startswith('install -q pip>=21.3 |')
    monkeypatch.setenv('FAKE_PIP_VERSION', '21.3')
    (tmp_path / 'new').mkdir()
    done, log = run_fake(tmp_path / 'new')
    assert 'upgrading' not in done.stdout and 'pip>=21.3' not in ' '.join(log)


@pytest.mark.parametrize('torch, cuda, stops', [
    ('2.14.1+cu126', '12.6', False), ('2.14.1+cu130', '13.0', True),
    ('2.13.0+cu126', '12.6', True)])
def test_the_old_driver_fix_can_be_rerun(tmp_path, torch, cuda, stops):
    """The driver check looked only at TORCH_INDEX_URL: after its fix (torch built for CUDA 12),
    the README's command, rerun without it, was stopped again."""
    done, _ = run_fake(tmp_path, torch=torch, cuda=cuda, driver='550.54.15')
    assert (done.returncode == 2) == stops, done.stderr
    assert ("NVIDIA driver is 550.54.15" in done.stderr) == stops
