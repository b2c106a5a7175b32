#!/usr/bin/env bash
# Run here, in the project root, before the GPU call: the workspace's device kit
# (../shared/device/prepare.sh: .devkit/ with the stack's cp312 wheels, mmcv lite, the shared data)
# plus pytest, which the suite's CUDA-only tests need and the GPU machine may lack.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ../shared/device/prepare.sh
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 -d .devkit/whl pytest pluggy iniconfig packaging pygments
echo "added pytest to .devkit/whl"
