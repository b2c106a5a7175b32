#!/usr/bin/env bash
# Install mmdiffseg and its stack into one Python environment, in the order the stack needs:
#  1. torch with the torchvision built for it (the stock R50 backbone's torchvision:// weights);
#  2. mmcv 2.1.0, one of two builds (MMCV_OPS):
#     lite      (default) the mmcv-lite 2.1.0 wheel (mmcv built with MMCV_WITH_OPS=0): seconds, no
#               compiler, any torch, CPU or GPU. mmdiffseg.compat makes mmcv.ops import without
#               compiled kernels and runs Mask2Former's deformable attention in PyTorch.
#     compiled  mmcv 2.1.0 with its compiled kernels (CUDA ones when nvcc and a CUDA torch are
#               present): a matching wheel from MMCV_WHEELS (pip's PIP_FIND_LINKS) if there is one,
#               else a source build (12-25 min on 2 cores for the CPU kernels, longer with CUDA);
#  3. mmdiffseg (editable, with its tests extra) and mmengine, mmdet, mmseg, diffusers, transformers,
#     with torch and torchvision held at what step 1 installed; for lite, a .pth file that makes
#     mmcv.ops importable in any import order (mmdiffseg_mmcv_ops.py);
#  4. an import check.
#
#   PYTHON            interpreter to install into (default: python3)
#   TORCH_SPEC        torch requirement (default: torch==2.14.1)
#   TORCHVISION_SPEC  the torchvision built for that torch (default: torchvision==0.29.1)
#   TORCH_INDEX_URL   index for step 1 only, e.g. https://download.pytorch.org/whl/cu126 (optional)
#   MMCV_OPS          lite | compiled (default: lite)
#   MMCV_WHEELS       folder of prebuilt mmcv wheels for MMCV_OPS=compiled (default: ../shared/wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
DEFAULT_TORCH_SPEC=torch==2.14.1  # PyPI's Linux build of it is a CUDA 13 build
TORCH_SPEC=${TORCH_SPEC:-$DEFAULT_TORCH_SPEC}
TORCHVISION_SPEC=${TORCHVISION_SPEC:-torchvision==0.29.1}
MMCV_OPS=${MMCV_OPS:-lite}
MMCV_WHEELS=${MMCV_WHEELS:-../shared/wheels}
install() { "$PY" -m pip install -q "$@"; }

case "$MMCV_OPS" in
  lite) mmcv=mmcv-lite other=mmcv ;;
  compiled) mmcv=mmcv other=mmcv-lite ;;
  *) echo "install.sh: MMCV_OPS must be 'lite' or 'compiled', not '$MMCV_OPS'" >&2; exit 2 ;;
esac

# the default torch from PyPI is a CUDA 13 build, which needs NVIDIA driver 580 or newer: on an
# older driver it installs (2.7 GB) but never sees the GPU, so stop before and name the fix
if [ -z "${TORCH_INDEX_URL:-}" ] && [ "$TORCH_SPEC" = "$DEFAULT_TORCH_SPEC" ] && command -v nvidia-smi >/dev/null; then
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

echo "[1/4] $TORCH_SPEC $TORCHVISION_SPEC"
install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "$TORCH_SPEC" "$TORCHVISION_SPEC"
install "setuptools>=77,<82" wheel
held=$(mktemp)
trap 'rm -f "$held"' EXIT
"$PY" -m pip freeze | grep -iE '^(torch|torchvision)==' > "$held"

echo "[2/4] $mmcv 2.1.0 (MMCV_OPS=$MMCV_OPS)"
"$PY" -m pip uninstall -q -y "$other" 2>/dev/null || true   # both write the same mmcv package
if [ "$MMCV_OPS" = compiled ]; then
  install ninja psutil
  if [ -d "$MMCV_WHEELS" ]; then
    export PIP_FIND_LINKS="$(cd "$MMCV_WHEELS" && pwd) ${PIP_FIND_LINKS:-}"
  fi
  MMCV_WITH_OPS=1 install --no-build-isolation -c "$held" mmcv==2.1.0
else
  install -c "$held" mmcv-lite==2.1.0
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
warn_if_gpu_unused(sys.stdout)
EOF
