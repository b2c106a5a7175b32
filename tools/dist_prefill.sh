#!/usr/bin/env bash
# Warm start on several GPUs: fill a training config's online label cache, one share per rank
#   bash tools/dist_prefill.sh CONFIG GPUS [prefill_labels.py options]
# The pre-flight check runs once before torchrun starts the ranks (tools/dist_launch.sh, which
# also names the variables for multi-node runs and the interpreter).
set -euo pipefail
USAGE="usage: bash tools/dist_prefill.sh CONFIG GPUS [prefill_labels.py options]"
if [[ $# -lt 2 || ! $2 =~ ^[1-9][0-9]*$ ]]; then
    echo "tools/dist_prefill.sh: GPUS (the number of processes) must be a positive integer, got '${2:-}'" >&2
    echo "$USAGE" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
source "$(dirname "$0")/dist_launch.sh"
dist_launch prefill_labels "$GPUS" "$CONFIG" --launcher pytorch "$@"
