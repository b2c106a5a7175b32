"""tools/install.sh stops before downloading PyPI's CUDA 13 torch onto a machine whose NVIDIA
driver cannot run it, naming the fix (a fake ``nvidia-smi`` reports the driver; ``PYTHON=false``
makes any install step fail, so reaching one shows the check let the run go on). With a fake
PYTHON (below): an installed torch of another build than the one asked for is replaced; relative
PYTHON / MMCV_WHEELS are the caller's, an MMCV_WHEELS that is no folder stops the run; a switch
of mmcv builds removes the other only once the new wheel is made; a CUDA torch with its nvcc
builds mmcv's CUDA kernels, and CPU-only kernels beside a CUDA torch are named."""
import os
import subprocess
import sys

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


# The runs below use a fake PYTHON: its pip only logs what it was asked (with the variables a
# build reads), and the script's own Python (``-c``, and step 4's check on stdin) runs for real on
# fake torch / mmcv / mmdiffseg modules, so nothing is downloaded or built.
FAKE_PYTHON = r'''#!EXE -S
import os, sys
args = sys.argv[1:]
if args[:2] == ['-m', 'pip']:
    pip = args[2:]
    seen = ' '.join(f'{k}={os.environ.get(k, "")}' for k in
                    ('FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'MMCV_WITH_OPS', 'PIP_NO_CACHE_DIR'))
    with open(os.environ['FAKE_LOG'], 'a') as log:
        log.write(' '.join(pip) + ' | ' + seen + '\n')
    if pip[0] == '--version':
        print(f"pip {os.environ.get('FAKE_PIP_VERSION', '25.0')} from /site/pip (python 3.11)")
    elif pip[0] == 'freeze':  # torch installed from wheel files
        print('torch @ file:///wheels/torch-2.14.1-cp311-cp311-linux_x86_64.whl\n'
              'torchvision @ file:///wheels/torchvision-0.29.1-cp311-cp311-linux_x86_64.whl')
    elif pip[:2] == ['list', '--format=freeze']:
        print('torch==2.14.1\ntorchvision==0.29.1')
    elif pip[0] == 'show':
        sys.exit(0 if pip[-1] in os.environ.get('FAKE_INSTALLED', '').split() else 1)
    elif pip[0] == 'download':  # no wheel of mmcv anywhere, or its source (setup.py only)
        if '--only-binary' in pip and os.environ.get('FAKE_NO_WHEEL'):
            sys.exit(1)
        if '--no-binary' in pip:
            import io, tarfile
            setup = b"extra_compile_args['cxx'] = ['-std=c++17']\n"
            folder = pip[pip.index('-d') + 1]
            os.makedirs(folder, exist_ok=True)
            with tarfile.open(os.path.join(folder, 'mmcv-2.1.0.tar.gz'), 'w:gz') as tar:
                info = tarfile.TarInfo('mmcv-2.1.0/setup.py')
                info.size = len(setup)
                tar.addfile(info, io.BytesIO(setup))
    elif pip[0] == 'install' and os.path.isdir(pip[-1]):  # a source folder: what it compiles as
        with open(os.path.join(pip[-1], 'setup.py')) as setup, open(os.environ['FAKE_LOG'], 'a') as log:
            log.write('setup.py: ' + setup.read())
    elif pip[0] == 'wheel':
        if os.environ.get('FAKE_WHEEL_FAILS'):
            sys.exit(1)
        name = pip[-1].split('==')[0].replace('-', '_')
        open(os.path.join(pip[pip.index('-w') + 1], f'{name}-2.1.0-py3-none-any.whl'), 'w').close()
    sys.exit(0)
if args[0] == '-m':  # mmdiffseg_mmcv_ops --write-pth / --remove-pth
    sys.exit(0)
code = args[1] if args[0] == '-c' else sys.stdin.read()
if 'version_info[:2]' in code and os.environ.get('FAKE_PY_VERSION'):
    print(os.environ['FAKE_PY_VERSION'])
    sys.exit(0)
sys.argv = [args[0], *args[2 if args[0] == '-c' else 1:]]
sys.path[0] = SITE
exec(compile(code, args[0], 'exec'), {'__name__': '__main__'})
'''


def fake_modules(site, torch, cuda, compiled, compiling, cxx20=False):
    """torch (``torch`` its version, None: not installed), torchvision, mmcv.ops, mmseg.apis and
    mmdiffseg as much as the script reads of them."""
    files = {
        'torchvision/__init__.py': "__version__ = '0.29.1'",
        'mmcv/__init__.py': '',
        'mmcv/ops.py': f'MultiScaleDeformableAttention = object\n'
                       f'def get_compiling_cuda_version():\n    return {compiling!r}',
        'mmseg/__init__.py': '',
        'mmseg/apis.py': 'init_model = None',
        'mmdiffseg/__init__.py': "__version__ = '0.1.0'",
        'mmdiffseg/compat.py': f'def mmcv_has_compiled_ops():\n    return {compiled!r}',
        'mmdiffseg/cuda_check.py': 'def warn_if_gpu_unused(stream=None):\n    pass',
    }
    if compiled:
        files['mmcv/_ext.py'] = ''
    files['pip/__init__.py'] = f"__version__ = {os.environ.get('FAKE_PIP_VERSION', '25.0')!r}"
    if torch is not None:
        files.update({
            'torch/__init__.py': 'from . import cuda, version\n__version__ = version.__version__',
            'torch/version.py': f'__version__ = {torch!r}\ncuda = {cuda!r}',
            'torch/cuda.py': 'def is_available():\n    return False\n'
                             'def device_count():\n    return 0\n'
                             "def get_arch_list():\n    return ['sm_80', 'sm_90', 'sm_90a']",
        })
    if torch is not None and cxx20:  # torch 2.14's header
        files['torch/include/ATen/ATen.h'] = ('#error C++20 or later compatible compiler is '
                                              'required to use ATen.')
    for name, text in files.items():
        (site / name).parent.mkdir(parents=True, exist_ok=True)
        (site / name).write_text(text + '\n')


def run_fake(tmp_path, torch='2.14.1+cu130', cuda='13.0', nvcc=None, compiled=True,
             compiling='not available', installed='', python=None,
             script=REPO / 'tools/install.sh', cxx20=False, driver=None, **env):
    """Run the script with the fake PYTHON (``bin/python``), ``nvcc`` reporting CUDA ``nvcc``
    (None: none on PATH), ``nvidia-smi`` NVIDIA driver ``driver`` (None: none on PATH); returns
    the finished run and the fake pip's log lines."""
    bin_, site, log = tmp_path / 'bin', tmp_path / 'site', tmp_path / 'pip.log'
    bin_.mkdir()
    if driver is not None:
        (bin_ / 'nvidia-smi').write_text(f'#!/bin/sh\necho "{driver}"\n')
        (bin_ / 'nvidia-smi').chmod(0o755)
    fake_modules(site, torch, cuda, compiled, compiling, cxx20)
    shim = bin_ / 'python'
    shim.write_text(FAKE_PYTHON.replace('EXE', sys.executable).replace('SITE', repr(str(site))))
    shim.chmod(0o755)
    if nvcc is not None:
        (bin_ / 'nvcc').write_text(f'#!/bin/sh\necho "Cuda compilation tools, release {nvcc}, '
                                   f'V{nvcc}.88"\n')
        (bin_ / 'nvcc').chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(
        ('TORCH_', 'MMCV_', 'FORCE_', 'PIP_', 'PYTHON'))}
    env = dict(keep, PATH=f'{bin_}{os.pathsep}/usr/bin{os.pathsep}/bin', PYTHON=python or str(shim),
               FAKE_LOG=str(log), FAKE_INSTALLED=installed, **env)
    done = subprocess.run(['bash', str(script)], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    return done, log.read_text().splitlines() if log.exists() else []


def calls(log, verb):
    """The fake pip's log lines of one pip command (install, wheel, uninstall ...)."""
    return [line for line in log if line.split()[0] == verb]


CU126 = 'https://download.pytorch.org/whl/cu126'


@pytest.mark.parametrize('installed, index', [
    ('2.14.1+cu130', CU126),                                     # old driver's fix, over PyPI's
    ('2.14.1+cu130', 'https://download.pytorch.org/whl/cpu/'),   # a trailing slash too
    ('2.14.1+cu126', 'https://download.pytorch.org/whl/rocm6.4'),
    ('2.14.1+cpu', None),                                        # cuda_check's fix for CPU builds
])
def test_an_installed_torch_of_another_build_is_replaced(tmp_path, installed, index):
    done, log = run_fake(tmp_path, torch=installed, **({'TORCH_INDEX_URL': index} if index else {}))
    assert done.returncode == 0, done.stderr
    assert f'torch {installed} is installed' in done.stdout and 'replacing torch' in done.stdout
    url = f'--index-url {index} ' if index else ''
    installs = calls(log, 'install')
    assert installs[0].startswith(f'install -q --force-reinstall --no-deps {url}torch==2.14.1 '
                                  f'torchvision==0.29.1 |')
    # then the usual step 1, which brings the new build's own dependencies
    assert installs[1].startswith(f'install -q {url}torch==2.14.1 torchvision==0.29.1 |')


@pytest.mark.parametrize('installed, index', [
    ('2.14.1+cu130', None),                              # a rerun keeps it (fast)
    ('2.14.1+cu126', CU126),                             # already that build
    ('2.14.1+cu130', 'https://pypi.org/simple'),         # no build named
    (None, CU126),                                       # no torch yet: the install is the fetch
])
def test_an_installed_torch_of_the_asked_build_is_kept(tmp_path, installed, index):
    done, log = run_fake(tmp_path, torch=installed, **({'TORCH_INDEX_URL': index} if index else {}))
    assert 'replacing torch' not in done.stdout
    assert not [line for line in log if '--force-reinstall' in line]
    assert calls(log, 'install')[0].startswith('install -q ' + (f'--index-url {index} ' if index
                                                                 else '') + 'torch==2.14.1 ')


def test_relative_paths_are_the_callers(tmp_path):
    (tmp_path / 'wheels').mkdir()
    done, log = run_fake(tmp_path, python='bin/python', MMCV_OPS='compiled', MMCV_WHEELS='wheels')
    assert done.returncode == 0, done.stderr
    assert f' --find-links {tmp_path / "wheels"} mmcv==2.1.0 |' in mmcv_install(log)


@pytest.mark.parametrize('wheels', ['missing', 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl'])
def test_a_wheel_folder_that_is_not_one_stops_with_the_fix(tmp_path, wheels):
    (tmp_path / 'mmcv-2.1.0-cp311-cp311-linux_x86_64.whl').write_text('')
    done, log = run_fake(tmp_path, MMCV_OPS='compiled', MMCV_WHEELS=wheels)
    assert done.returncode == 2 and '[1/4]' not in done.stdout and not log
    assert f'MMCV_WHEELS={wheels} ({tmp_path / wheels}) is not a folder' in done.stderr
    assert 'unset it to compile mmcv from source' in done.stderr


def test_without_the_default_wheel_folder_mmcv_is_built(tmp_path):
    repo = tmp_path / 'repo'  # a checkout with no ../shared/wheels beside it
    (repo / 'tools').mkdir(parents=True)
    (repo / 'tools/install.sh').write_text((REPO / 'tools/install.sh').read_text())
    done, log = run_fake(tmp_path, MMCV_OPS='compiled', script=repo / 'tools/install.sh')
    assert done.returncode == 0, done.stderr
    mmcv = [line.split(' | ')[0].split() for line in log if 'mmcv==' in line]
    assert len(mmcv) == 1 and mmcv[0][0] == 'install' and mmcv[0][-1] == 'mmcv==2.1.0'
    assert '--no-build-isolation' in mmcv[0]
    assert '--find-links' not in mmcv_install(log)  # no wheel folder added


@pytest.mark.parametrize('ops, other, spec, wheel', [
    ('compiled', 'mmcv-lite', '--no-build-isolation --find-links {wheels} mmcv==2.1.0',
     'mmcv-2.1.0-py3-none-any.whl'),
    ('lite', 'mmcv', 'mmcv-lite==2.1.0', 'mmcv_lite-2.1.0-py3-none-any.whl'),
])
def test_a_switch_removes_the_other_build_only_once_the_new_wheel_is_made(
        tmp_path, ops, other, spec, wheel):
    (tmp_path / 'wheels').mkdir()
    done, log = run_fake(tmp_path, installed=other, MMCV_OPS=ops, MMCV_WHEELS=str(tmp_path))
    assert done.returncode == 0, done.stderr
    steps = [line for line in log if line.split()[0] in ('wheel', 'uninstall')
             or line.startswith('install') and 'mmcv' in line.split(' | ')[0]]
    spec = spec.format(wheels=tmp_path)
    assert steps[0].startswith('wheel -q --no-deps -w ') and f' {spec} |' in steps[0]
    built = steps[0].split()[4]
    assert steps[1].startswith(f'uninstall -qq -y {other} ')
    assert steps[2].startswith('install -q -c ') and f' {built}/{wheel} |' in steps[2]
    assert not os.path.exists(built)  # the EXIT trap's clean-up


def test_a_failed_build_leaves_the_installed_mmcv(tmp_path):
    done, log = run_fake(tmp_path, installed='mmcv-lite', MMCV_OPS='compiled', FAKE_WHEEL_FAILS='1')
    assert done.returncode != 0 and '[3/4]' not in done.stdout
    assert calls(log, 'wheel') and not calls(log, 'uninstall')
    assert not os.path.exists(calls(log, 'wheel')[0].split()[4])


def test_a_rerun_installs_in_place(tmp_path):
    done, log = run_fake(tmp_path, installed='mmcv-lite')
    assert done.returncode == 0, done.stderr
    assert not calls(log, 'wheel') and not calls(log, 'uninstall')
    assert calls(log, 'install')[2].split(' | ')[0].endswith(' mmcv-lite==2.1.0')


def mmcv_build_env(log):
    """FORCE_CUDA, TORCH_CUDA_ARCH_LIST, MMCV_WITH_OPS and PIP_NO_CACHE_DIR as mmcv's install
    saw them."""
    seen = mmcv_install(log).split(' | ')[1]
    names = ('FORCE_CUDA', 'TORCH_CUDA_ARCH_LIST', 'MMCV_WITH_OPS', 'PIP_NO_CACHE_DIR')
    starts = [seen.index(f'{name}=') for name in names] + [len(seen)]
    return {name: seen[start + len(name) + 1:end].rstrip(' ') for name, start, end in
            zip(names, starts, starts[1:])}


def mmcv_install(log):
    """The fake pip's log line of mmcv's install."""
    return [line for line in log if 'mmcv==2.1.0 |' in line][0]


def test_a_cuda_torch_with_its_nvcc_builds_the_cuda_kernels(tmp_path):
    done, log = run_fake(tmp_path, nvcc='13.0', MMCV_OPS='compiled')
    assert done.returncode == 0, done.stderr
    # no GPU in sight: the architectures torch was built for (torch itself would fail on none)
    env = mmcv_build_env(log)
    assert (env['FORCE_CUDA'], env['TORCH_CUDA_ARCH_LIST']) == ('1', '8.0;9.0+PTX')
    assert 'FORCE_CUDA=1' in done.stdout and 'TORCH_CUDA_ARCH_LIST=8.0;9.0+PTX' in done.stdout


@pytest.mark.parametrize('torch, cuda, nvcc, env, expected', [
    ('2.14.1+cu130', '13.0', '13.0', {'TORCH_CUDA_ARCH_LIST': '9.0'}, ('1', '9.0')),
    # the docs' rebuild command sets FORCE_CUDA=1: torch would fail on no GPU in sight
    ('2.14.1+cu130', '13.0', '13.0', {'FORCE_CUDA': '1'}, ('1', '8.0;9.0+PTX')),
    ('2.14.1+cu130', '13.0', '13.0', {'FORCE_CUDA': '0'}, ('0', '')),   # the user's choice
    ('2.14.1+cu130', '13.0', None, {}, ('', '')),                        # no nvcc
    ('2.14.1+cu130', '13.0', '12.8', {}, ('', '')),                      # torch would refuse it
    ('2.14.1+cpu', None, '13.0', {}, ('', '')),                          # a CPU torch
])
def test_otherwise_force_cuda_is_left_alone(tmp_path, torch, cuda, nvcc, env, expected):
    done, log = run_fake(tmp_path, torch=torch, cuda=cuda, nvcc=nvcc, MMCV_OPS='compiled', **env)
    assert done.returncode == 0, done.stderr
    env = mmcv_build_env(log)
    assert (env['FORCE_CUDA'], env['TORCH_CUDA_ARCH_LIST']) == expected


CPU_ONLY_OPS = "warning: mmcv's compiled ops have no CUDA kernels"


def test_cpu_only_kernels_beside_a_cuda_torch_are_named_with_the_rebuild(tmp_path):
    done, _ = run_fake(tmp_path, MMCV_OPS='compiled')
    assert done.returncode == 0, done.stderr
    assert CPU_ONLY_OPS in done.stdout and 'CUDA 13.0 build' in done.stdout
    assert 'FORCE_CUDA=1' in done.stdout and 'MMCV_OPS=lite' in done.stdout


@pytest.mark.parametrize('ops, torch, cuda, compiled, compiling', [
    ('lite', '2.14.1+cu130', '13.0', False, 'not available'),    # CI's install
    ('compiled', '2.14.1+cpu', None, True, 'not available'),      # a CPU torch: nothing to miss
    ('compiled', '2.14.1+cu130', '13.0', True, '13.0'),           # CUDA kernels there
])
def test_no_kernel_warning_otherwise(tmp_path, ops, torch, cuda, compiled, compiling):
    done, _ = run_fake(tmp_path, torch=torch, cuda=cuda, compiled=compiled, compiling=compiling,
                       MMCV_OPS=ops)
    assert done.returncode == 0, done.stderr
    assert CPU_ONLY_OPS not in done.stdout and 'installed: torch' in done.stdout


@pytest.mark.parametrize('cxx20, wheel, installed, built', [
    (True, False, '', True),          # torch 2.14 and no wheel: the source, as C++20
    (True, True, '', False),          # a prebuilt wheel (MMCV_WHEELS): taken as it is
    (True, False, 'mmcv', False),     # a rerun over the compiled build: nothing rebuilt
    (False, False, '', False),        # an older torch: mmcv's own C++17 source build
])
def test_mmcvs_source_is_built_as_cxx20_for_a_torch_whose_headers_need_it(
        tmp_path, cxx20, wheel, installed, built):
    """mmcv 2.1.0's setup.py compiles as C++17; torch 2.14's ATen.h stops a C++17 build
    ("C++20 or later compatible compiler is required"): the source build failed in a minute."""
    done, log = run_fake(tmp_path, cxx20=cxx20, installed=installed, MMCV_OPS='compiled',
                         **({} if wheel else {'FAKE_NO_WHEEL': '1'}))
    assert done.returncode == 0, done.stderr
    install = [line.split(' | ')[0] for line in calls(log, 'install') if 'mmcv' in line][0]
    if built:
        assert install.endswith('/source/mmcv-2.1.0') and '--no-build-isolation' in install
        assert "setup.py: extra_compile_args['cxx'] = ['-std=c++20']" in log
        assert 'building its source as C++20 for torch 2.14.1+cu130' in done.stdout
    else:
        assert install.endswith(' mmcv==2.1.0') and not any('setup.py' in line for line in log)
