#!/usr/bin/env bash
# Install mmdiffseg and its stack into one Python environment, in the order the stack needs:
#  1. torch with the torchvision built for it (the stock R50 backbone's torchvision:// weights);
#  2. mmcv 2.1.0, one of two builds (MMCV_OPS):
#     lite      (default) the mmcv-lite 2.1.0 wheel (mmcv built with MMCV_WITH_OPS=0): seconds, no
#               compiler, any torch, CPU or GPU. mmdiffseg.compat makes mmcv.ops import without
#               compiled kernels and runs Mask2Former's deformable attention in PyTorch.
#     compiled  mmcv 2.1.0 with its compiled kernels: a matching wheel from MMCV_WHEELS (pip's
#               --find-links) if there is one, else a source build (12-25 min on 2 cores for the
#               CPU kernels, longer with CUDA; as C++20 for torch 2.14+, see step 2). mmcv builds its CUDA kernels only where torch sees a
#               GPU or FORCE_CUDA=1: this script sets FORCE_CUDA=1 when torch is a CUDA build and
#               nvcc on PATH has its CUDA major version (and, where torch sees no GPU, a
#               TORCH_CUDA_ARCH_LIST of torch's own architectures), and step 4 warns when the
#               kernels came out CPU-only beside a CUDA torch;
#     a switch of builds removes the other one only once the new one's wheel is made, so a failed
#     or interrupted build leaves the installed mmcv as it was;
#  3. mmdiffseg (editable, with its tests extra) and mmengine, mmdet, mmseg, diffusers, transformers,
#     with torch and torchvision held at what step 1 installed; for lite, a .pth file that makes
#     mmcv.ops importable in any import order (mmdiffseg_mmcv_ops.py);
#  4. an import check.
#
#   PYTHON            interpreter to install into (default: python3; a relative path is the
#                     caller's)
#   TORCH_SPEC        torch requirement (default: torch==2.14.1)
#   TORCHVISION_SPEC  the torchvision built for that torch (default: torchvision==0.29.1)
#   TORCH_INDEX_URL   index for step 1 only, e.g. https://download.pytorch.org/whl/cu126 (optional);
#                     an installed torch of another build (its +cu130, +cpu ...) is replaced by the
#                     one this index names. Unset: PyPI, and an installed +cpu torch is replaced
#                     by PyPI's CUDA build; otherwise an installed torch meeting TORCH_SPEC is kept.
#   MMCV_OPS          lite | compiled (default: lite)
#   MMCV_WHEELS       folder of prebuilt mmcv wheels for MMCV_OPS=compiled (default:
#                     ../shared/wheels beside the repo, if there; a relative path is the caller's)
#   FORCE_CUDA        1 / 0: build mmcv's CUDA kernels or not (default: see compiled above)
if [ -z "${BASH_VERSION:-}" ]; then  # sh stopped at 'set: Illegal option -o pipefail'
  echo "install.sh: run it with bash: bash tools/install.sh" >&2
  exit 2
fi
set -euo pipefail
# relative paths the caller gives are the caller's: resolve them before moving to the repo root
PY=${PYTHON:-python3}
case "$PY" in /*) ;; */*) PY="$PWD/$PY" ;; esac
given_wheels=${MMCV_WHEELS:-}
user_wheels=$given_wheels
case "$user_wheels" in ''|/*) ;; *) user_wheels="$PWD/$user_wheels" ;; esac
cd "$(dirname "$0")/.."
DEFAULT_TORCH_SPEC=torch==2.14.1  # PyPI's Linux build of it is a CUDA 13 build
TORCH_SPEC=${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}
MMCV_OPS=${MMCV_OPS:-lite}
MMCV_WHEELS=${user_wheels:-$PWD/../shared/wheels}  # the default may be absent: then a source build
install() { "$PY" -m pip install -q "$@"; }
# the installed torch's version and CUDA version ("2.14.1+cu130 13.0", "2.14.1+cpu None"), read
# from torch/version.py without importing torch (seconds with its CUDA libraries); nothing without
torch_build() {
  "$PY" -c 'import importlib.util, os, runpy
spec = importlib.util.find_spec("torch")
if spec is not None and spec.origin:
    v = runpy.run_path(os.path.join(os.path.dirname(spec.origin), "version.py"))
    print(v["__version__"], v.get("cuda"))' 2>/dev/null || true
}
# whether the installed torch's headers need C++20 (torch 2.14 and newer)
torch_needs_cxx20() {
  "$PY" -c 'import importlib.util, os, sys
spec = importlib.util.find_spec("torch")
header = os.path.join(os.path.dirname(spec.origin), "include", "ATen", "ATen.h")
sys.exit(0 if "C++20 or later" in open(header).read() else 1)' 2>/dev/null
}

case "$MMCV_OPS" in
  lite) mmcv=mmcv-lite other=mmcv ;;
  compiled) mmcv=mmcv other=mmcv-lite ;;
  *) echo "install.sh: MMCV_OPS must be 'lite' or 'compiled', not '$MMCV_OPS'" >&2; exit 2 ;;
esac
# a wheel folder that is not there would silently mean a 20-minute source build
if [ "$MMCV_OPS" = compiled ] && [ -n "$user_wheels" ] && [ ! -d "$user_wheels" ]; then
  shown=$given_wheels; [ "$given_wheels" = "$user_wheels" ] || shown="$given_wheels ($user_wheels)"
  echo "install.sh: MMCV_WHEELS=$shown is not a folder; set MMCV_WHEELS to the folder that" \
       "holds the prebuilt mmcv wheels (not a wheel file), or unset it to compile mmcv from" \
       "source." >&2
  exit 2
fi

# torch 2.14 is built for Python 3.10 and newer: pip's bare ResolutionImpossible otherwise
python_version=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
if [ "$TORCH_SPEC" = "$DEFAULT_TORCH_SPEC" ] && [[ "$python_version" =~ ^3\.[0-9]$ ]]; then
  echo "install.sh: $PY is Python $python_version; $TORCH_SPEC needs Python 3.10 or newer:" \
       "run it with PYTHON=python3.11 (or another 3.10+ interpreter, e.g. in a new venv)" >&2
  exit 2
fi

# the default torch from PyPI is a CUDA 13 build, which needs NVIDIA driver 580 or newer: on an
# older driver it installs (2.7 GB) but never sees the GPU, so stop before and name the fix
# (unless the torch installed is that version built for CUDA 12: the fix's rerun keeps it)
installed_torch=$(torch_build)   # "2.14.1+cu126 12.6"; nothing without torch
cuda12_torch=
if [ "${installed_torch%%+*}" = "${DEFAULT_TORCH_SPEC#torch==}" ] &&
   [[ "${installed_torch#* }" =~ ^1[0-2]\. ]]; then
  cuda12_torch=1
fi
if [ -z "${TORCH_INDEX_URL:-}" ] && [ "$TORCH_SPEC" = "$DEFAULT_TORCH_SPEC" ] &&
   [ -z "$cuda12_torch" ] && command -v nvidia-smi >/dev/null; then
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ' || true)
  if [[ "$driver" =~ ^[0-9]+ ]] && [ "${driver%%.*}" -lt 580 ]; then
    echo "install.sh: this machine's NVIDIA driver is $driver; PyPI's $TORCH_SPEC is a CUDA 13 build," \
         "which needs driver 580 or newer and would run on the CPU only. Either install a torch built" \
         "for CUDA 12: TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 bash tools/install.sh" \
         "(with a TORCH_SPEC / TORCHVISION_SPEC pair that index has, if it lacks these), or update" \
         "the driver; TORCH_INDEX_URL=https://pypi.org/simple installs PyPI's build anyway." >&2
    exit 2
  fi
fi

held=$(mktemp)
built=$(mktemp -d)
trap 'rm -rf "$held" "$built"' EXIT

echo "[1/4] $TORCH_SPEC $TORCHVISION_SPEC"
# pip before 21.3 cannot install a pyproject.toml package in editable mode (step 3)
if [ "$("$PY" -c 'import pip, sys
print("old" if tuple(map(int, pip.__version__.split(".")[:2])) < (21, 3) else "")' \
      2>/dev/null || true)" = old ]; then
  echo "install.sh: pip $("$PY" -m pip --version | cut -d ' ' -f 2) is older than 21.3: upgrading it"
  install "pip>=21.3"
fi
# an installed torch meeting TORCH_SPEC satisfies pip whatever its build, so pip would never ask
# the index for another one: replace torch and torchvision when the index names another build
# (its last path part: cpu, cu126, rocm6.4, xpu), or, without an index, a CPU-only one
installed=${installed_torch%% *}
if [ -n "$installed" ]; then
  tag=; case "$installed" in *+*) tag=${installed#*+} ;; esac
  index=${TORCH_INDEX_URL:-}
  while [ "${index%/}" != "$index" ]; do index=${index%/}; done
  wanted=${index##*/}
  replace=
  if [ -n "$index" ]; then
    if [[ "$wanted" =~ ^(cpu|cu[0-9]+|rocm[0-9]+(\.[0-9]+)*|xpu)$ ]] && [ "$wanted" != "$tag" ]
    then
      replace="TORCH_INDEX_URL names the $wanted build: replacing torch and torchvision from"
      replace="$replace $TORCH_INDEX_URL"
    fi
  elif [ "$tag" = cpu ]; then
    replace="a CPU-only build: replacing torch and torchvision with PyPI's (CUDA on Linux)"
  fi
  if [ -n "$replace" ]; then
    echo "install.sh: torch $installed is installed, $replace"
    install --force-reinstall --no-deps ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
      "$TORCH_SPEC" "$TORCHVISION_SPEC"
  fi
fi
# (after a replacement, this fetches the new build's own dependencies, e.g. its CUDA libraries)
install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC" "$TORCHVISION_SPEC"
install "setuptools>=77,<82" wheel
# (pip list, not freeze: freeze writes a torch installed from a wheel file as 'torch @ file:...')
"$PY" -m pip list --format=freeze | grep -iE '^(torch|torchvision)==' > "$held"

echo "[2/4] $mmcv 2.1.0 (MMCV_OPS=$MMCV_OPS)"
find_links=()
if [ "$MMCV_OPS" = compiled ]; then
  install ninja psutil
  if [ -d "$MMCV_WHEELS" ]; then  # (an option, not PIP_FIND_LINKS, which pip splits at spaces)
    find_links=(--find-links "$(cd "$MMCV_WHEELS" && pwd)")
  fi
  # compiled ops that do not load (mmcv built for another torch): the rerun that the warning
  # names rebuilt nothing, mmcv being installed; remove it, and build without pip's wheel cache
  if "$PY" -m pip show -q mmcv >/dev/null 2>&1 &&
     ! "$PY" -c 'import importlib; importlib.import_module("mmcv._ext")' >/dev/null 2>&1; then
    echo "install.sh: the installed mmcv's compiled ops do not load (built for another torch?):" \
         "removing it to install them again"
    "$PY" -m pip uninstall -qq -y mmcv
    export PIP_NO_CACHE_DIR=1
  fi
  # mmcv's setup.py builds its CUDA kernels only where torch sees a GPU or FORCE_CUDA=1: so a build
  # without a GPU in sight (a container build stage, a login node) gets them too
  torch_cuda=$(torch_build)
  torch_cuda=${torch_cuda#* }
  why=
  if [ -z "${FORCE_CUDA+set}" ] && [ -n "$torch_cuda" ] && [ "$torch_cuda" != None ] &&
     command -v nvcc >/dev/null; then
    nvcc_cuda=$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p' |
                head -n 1 || true)
    # torch refuses to build with an nvcc of another CUDA major version
    if [ -n "$nvcc_cuda" ] && [ "${nvcc_cuda%%.*}" = "${torch_cuda%%.*}" ]; then
      export FORCE_CUDA=1
      why="torch is a CUDA $torch_cuda build and nvcc is CUDA $nvcc_cuda, so a"
    fi
  fi
  if [ "${FORCE_CUDA:-}" = 1 ]; then   # the script's choice or the user's
    archs=
    if [ -z "${TORCH_CUDA_ARCH_LIST:-}" ]; then
      # torch builds for the GPUs it sees and fails with none: then for every one it was built for
      archs=$("$PY" -c 'import torch
if torch.cuda.device_count() == 0:
    archs = [a[3:-1] + "." + a[-1] for a in torch.cuda.get_arch_list()
             if a.startswith("sm_") and a[3:].isdigit()]
    print(";".join(archs) + "+PTX" if archs else "")' 2>/dev/null || true)
    fi
    note=
    if [ -n "$archs" ]; then
      export TORCH_CUDA_ARCH_LIST="$archs"
      note="; torch sees no GPU, so for each architecture torch has:"
      note="$note TORCH_CUDA_ARCH_LIST=$archs (set it to your GPU's, e.g. 9.0, to build fewer)"
    fi
    if [ -n "$why$note" ]; then
      echo "install.sh: ${why:-FORCE_CUDA=1 is set, so a} source build of mmcv gets CUDA" \
           "kernels too (FORCE_CUDA=1$note)"
    fi
  fi
  export MMCV_WITH_OPS=1
  spec=(--no-build-isolation "${find_links[@]}" mmcv==2.1.0)
  # mmcv 2.1.0's setup.py compiles as C++17, and torch 2.14's headers stop at "C++20 or later
  # compatible compiler is required": where no wheel is at hand (and none is installed), build its
  # source with the standard raised (its sources compile as C++20)
  if ! "$PY" -m pip show -q mmcv >/dev/null 2>&1 && torch_needs_cxx20 &&
     ! "$PY" -m pip download -q --no-deps --only-binary :all: "${find_links[@]}" \
       -d "$built/found" mmcv==2.1.0 >/dev/null 2>&1; then
    "$PY" -m pip download -q --no-deps --no-binary :all: -d "$built/source" mmcv==2.1.0
    tar -xzf "$built"/source/mmcv-2.1.0.tar.gz -C "$built/source"
    sed -i 's/-std=c++1[47]/-std=c++20/g; s#/std:c++1[47]#/std:c++20#g' \
      "$built/source/mmcv-2.1.0/setup.py"
    echo "install.sh: no prebuilt mmcv 2.1.0 wheel here: building its source as C++20 for" \
         "torch $(torch_build | cut -d ' ' -f 1) (12-25 min on 2 cores for the CPU kernels)"
    spec=(--no-build-isolation "$built/source/mmcv-2.1.0")
  fi
else
  spec=(mmcv-lite==2.1.0)
fi
if "$PY" -m pip show -q "$other" >/dev/null 2>&1; then
  # a switch: both builds write the same mmcv package, so make the new one's wheel first (a 12-25
  # min source build for compiled) and remove the other only then: a failed or interrupted build
  # leaves the old mmcv in place
  "$PY" -m pip wheel -q --no-deps -w "$built" "${spec[@]}"
  "$PY" -m pip uninstall -qq -y "$other" "$mmcv"  # -qq: quiet about the one not installed
  install -c "$held" "$built"/*.whl
else
  install -c "$held" "${spec[@]}"
fi

echo "[3/4] mmdiffseg and its dependencies"
install --no-build-isolation -c "$held" -e ".[tests]"
# lite: mmcv.ops importable whatever is imported first (mmseg before mmdiffseg too), through a
# .pth line run at interpreter start (mmdiffseg_mmcv_ops.py); compiled: not needed
if [ "$MMCV_OPS" = lite ]; then "$PY" -m mmdiffseg_mmcv_ops --write-pth; else "$PY" -m mmdiffseg_mmcv_ops --remove-pth; fi

echo "[4/4] import check"
"$PY" - "$MMCV_OPS" <<'EOF'
import sys

if sys.argv[1] == 'lite':  # mmcv.ops importable before mmdiffseg is imported (the .pth file)
    from mmseg.apis import init_model  # noqa: F401
import mmdiffseg
import torch
import torchvision
from mmcv.ops import MultiScaleDeformableAttention  # noqa: F401
from mmdiffseg.compat import mmcv_has_compiled_ops
from mmdiffseg.cuda_check import warn_if_gpu_unused

compiled = mmcv_has_compiled_ops()
if sys.argv[1] == 'compiled' and not compiled:
    sys.exit('install.sh: mmcv was installed but its compiled ops do not load (see the warning above)')
print(f'mmdiffseg {mmdiffseg.__version__} installed: torch {torch.__version__}, torchvision '
      f'{torchvision.__version__}, mmcv ops {"compiled" if compiled else "lite (PyTorch paths)"}, '
      f'CUDA {"available" if torch.cuda.is_available() else "not available"}')
# compiled ops built where torch saw no GPU (without FORCE_CUDA=1), or a CPU-only wheel: mmcv then
# sends CUDA tensors to a CUDA kernel it does not have
if compiled and torch.version.cuda is not None:
    from mmcv.ops import get_compiling_cuda_version
    if get_compiling_cuda_version() == 'not available':
        print(f"warning: mmcv's compiled ops have no CUDA kernels (a CPU-only build) but torch is "
              f"a CUDA {torch.version.cuda} build: on a GPU, Mask2Former's deformable attention "
              f"(MultiScaleDeformableAttention) has no CUDA kernel and fails ('implementation for "
              f"device cuda:0 not found'). Rebuild mmcv from source with nvcc for CUDA "
              f"{torch.version.cuda} on PATH: {sys.executable} -m pip uninstall -y mmcv, then "
              f"FORCE_CUDA=1 PIP_NO_CACHE_DIR=1 MMCV_OPS=compiled bash tools/install.sh with "
              f"MMCV_WHEELS at a folder without a CPU-only mmcv wheel; or MMCV_OPS=lite bash "
              f"tools/install.sh, whose PyTorch path runs on the GPU too (docs/install.md)")
warn_if_gpu_unused(sys.stdout)
EOF
