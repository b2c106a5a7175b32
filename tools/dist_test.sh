#!/usr/bin/env bash
# Multi-GPU testing with torch.distributed (mmengine's pytorch launcher):
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py options]
#   bash tools/dist_test.sh CONFIG GPUS [test.py options]     # training-free DiffusionSegmentor
# CHECKPOINT is left out (or given as "") for the training-free configs, as with tools/test.py; a
# GPUS count alone after CONFIG (a number that is no file, followed by nothing or an option) says so.
# NNODES, NODE_RANK, PORT, MASTER_ADDR select multi-node runs; PYTHON the interpreter (default: python).
# Without CUDA the ranks run on the CPU (gloo), e.g. to try a config or in tests.
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
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$ROOT:${PYTHONPATH:-}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$GPUS" \
    --master_port="${PORT:-29500}" \
    "$ROOT/tools/test.py" "$CONFIG" ${CHECKPOINT[@]+"${CHECKPOINT[@]}"} --launcher pytorch "$@"
