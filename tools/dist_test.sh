#!/usr/bin/env bash
# Multi-GPU testing with torch.distributed (mmengine's pytorch launcher):
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
#   bash tools/dist_test.sh CONFIG GPUS [test.py options]     # training-free DiffusionSegmentor
# CHECKPOINT is left out (or given as "") for the training-free configs, as with tools/test.py; a
# GPUS count alone after CONFIG (a number that is no file, followed by nothing or an option) says so.
# The pre-flight check runs once before torchrun starts the ranks (tools/dist_launch.sh, which
# also names the variables for multi-node runs and the interpreter).
set -euo pipefail
USAGE="usage: bash tools/dist_test.sh CONFIG [CHECKPOINT] GPUS [test.py options]"
if [[ $# -lt 2 ]]; then
    echo "$USAGE" >&2
    exit 2
fi
CONFIG=$1
shift
CHECKPOINT=()
if [[ -z $1 ]]; then
    shift   # CHECKPOINT given as ""
elif ! [[ $1 =~ ^[0-9]+$ && ! -f $1 && ( $# -eq 1 || ${2:-} == -* ) ]]; then
    CHECKPOINT=("$1")
    shift
fi
if [[ $# -lt 1 || ! $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "tools/dist_test.sh: GPUS (the number of processes) must be a positive integer, got '${1:-}'" >&2
    echo "$USAGE" >&2
    exit 2
fi
GPUS=$1
shift
source "$(dirname "$0")/dist_launch.sh"
dist_launch test "$GPUS" "$CONFIG" ${CHECKPOINT[@]+"${CHECKPOINT[@]}"} --launcher pytorch "$@"
