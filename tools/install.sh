#!/usr/bin/env bash
# Install mmdiffseg and its stack, in the order the stack needs, on a fresh Python 3.11 machine:
# torch first, then mmcv 2.1.0 built against it (no build isolation: its ops need the installed
# torch), then mmdiffseg with mmengine/mmdet/mmseg/diffusers/transformers.
#
#   PYTHON       interpreter to install into (default: python3)
#   TORCH_SPEC   torch requirement (default: torch==2.13.0)
#   MMCV_WHEELS  folder with a prebuilt mmcv wheel (default: ../shared/wheels when it exists);
#                without one, mmcv is compiled from source (12-25 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
MMCV_WHEELS=${MMCV_WHEELS:-../shared/wheels}

"$PY" -m pip install -q "$TORCH_SPEC" "setuptools>=77,<82" wheel ninja psutil
if [ -d "$MMCV_WHEELS" ]; then
  export PIP_FIND_LINKS="$(cd "$MMCV_WHEELS" && pwd) ${PIP_FIND_LINKS:-}"
fi
MMCV_WITH_OPS=1 "$PY" -m pip install -q --no-build-isolation mmcv==2.1.0
"$PY" -m pip install -q --no-build-isolation -e ".[tests]"
"$PY" -c "import mmcv.ops; from mmcv.ops import MultiScaleDeformableAttention; import mmdiffseg; print('mmdiffseg', mmdiffseg.__version__, 'installed; mmcv.ops OK')"
