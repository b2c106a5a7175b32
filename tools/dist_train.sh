#!/usr/bin/env bash
# Multi-GPU training with torch.distributed (mmengine's pytorch launcher):
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
# The pre-flight check runs once before torchrun starts the ranks (tools/dist_launch.sh, which
# also names the variables for multi-node runs and the interpreter).
set -euo pipefail
source "$(dirname "$0")/dist_launch.sh"
dist_config_gpus train "$@"
