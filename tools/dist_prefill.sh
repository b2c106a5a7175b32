#!/usr/bin/env bash
# Warm start on several GPUs: fill a training config's online label cache, one share per rank
#   bash tools/dist_prefill.sh CONFIG GPUS [prefill_labels.py options]
# The pre-flight check runs once before torchrun starts the ranks (tools/dist_launch.sh, which
# also names the variables for multi-node runs and the interpreter).
set -euo pipefail
source "$(dirname "$0")/dist_launch.sh"
dist_config_gpus prefill_labels "$@"
