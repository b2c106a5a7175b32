#!/usr/bin/env bash
# Rehearse the GPU machine's software stack on this CPU machine, before a device call spends its
# minutes on an import error: Python 3.12 with the device's torch (2.11.0, PyPI's CUDA 13 build:
# it runs on the CPU too) and Triton (3.6.0, torch's pin), the packages the device has and the kit
# does not carry, and the .devkit/ wheels installed as .devkit/setup.sh installs them (diffusers
# 0.35.2, transformers 4.57.6, mmcv lite, ...). Then runs the given command in that environment,
# from the project root:
#
#   bash benchmarks/prepare_device.sh
#   bash benchmarks/rehearse_device_stack.sh python3 -m pytest -q -n 2 -p no:cacheprovider tests
#   bash benchmarks/rehearse_device_stack.sh env GPU_SUITE_QUICK=1 OUT=/tmp/suite312 bash benchmarks/gpu_suite.sh
#
# REHEARSAL_DIR (default /tmp/device-stack) holds the venv (~5 GB) and the kit's install; both
# are reused (the install until .devkit/ changes), so runs may overlap. numpy is held below 2.4:
# Triton 3.6's interpreter (the CPU runs of the kernels) fails with numpy 2.4 and later, which the
# GPU machine's compiled kernels never meet.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .devkit/whl ] || { echo "no .devkit/: run bash benchmarks/prepare_device.sh first" >&2; exit 2; }
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
dir=${REHEARSAL_DIR:-/tmp/device-stack}
python=${REHEARSAL_PYTHON:-}
for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python; do
  [ -n "$python" ] && break
  "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && python=$candidate
done
[ -n "$python" ] || { echo "no Python 3.12 found: set REHEARSAL_PYTHON" >&2; exit 2; }
if [ ! -x "$dir/venv/bin/python3" ]; then
  "$python" -m venv "$dir/venv"
  "$dir/venv/bin/pip" install -q torch==2.11.0 "numpy<2.4" scipy opencv-python-headless \
    rich pyyaml regex safetensors requests pillow matplotlib tqdm filelock fsspec six \
    pytest-xdist pytest-timeout
fi
kit=$(cd .devkit && ls -l whl sitecustomize.py | sha1sum | cut -c1-40)
if [ "$(cat "$dir/site/.kit" 2>/dev/null)" != "$kit" ]; then  # the kit changed: install it again
  rm -rf "$dir/site"
  "$dir/venv/bin/pip" install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$dir/site" .devkit/whl/*.whl
  cp .devkit/sitecustomize.py "$dir/site/"
  echo "$kit" > "$dir/site/.kit"
fi
# only the sample data that travels: ../shared as .devkit/setup.sh lays it on the GPU machine,
# and MMDIFFSEG_SHARED_DATA (read by the tests, the benchmarks and the pre-flight) pointing at
# the carried copy, also beside the workspace's own ../shared, which holds more than travels
[ -e ../shared ] || ln -s "$PWD/.devkit/shared" ../shared
PATH="$dir/venv/bin:$PATH" PYTHONPATH="$dir/site:$PWD" PYTHONUNBUFFERED=1 MMCV_LITE_PURE_MSDA=1 \
  MMDIFFSEG_SHARED_DATA="$PWD/.devkit/shared/data" "$@"
