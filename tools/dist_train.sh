#!/usr/bin/env bash
# Multi-GPU training with torch.distributed (mmengine's pytorch launcher):
#   bash tools/dist_train.sh CONFIG GPUS [train.py options]
# The pre-flight check runs once before torchrun starts the ranks (tools/dist_launch.sh, which
# also names the variables for multi-node runs and the interpreter).
set -euo pipefail
USAGE="usage: bash tools/dist_train.sh CONFIG GPUS [train.py options]"
if [[ $# -lt 2 || ! $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "tools/dist_train.sh: GPUS (the number of processes) must be a positive integer, got '${2:-}'" >&2
    echo "$USAGE" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
source "$(dirname "$0")/dist_launch.sh"
dist_launch train "$GPUS" "$CONFIG" --launcher pytorch "$@"
