# Sourced by tools/dist_train.sh, dist_test.sh and dist_prefill.sh:  dist_launch TOOL GPUS ARGS...
# runs tools/TOOL.py ARGS on GPUS processes of this machine under torchrun, after the tool's
# pre-flight check has run once here (--preflight-only): a config that cannot run stops with the
# check's one list of what to fix and exit status 2, before any rank starts. The ranks skip the
# check. With --skip-preflight in ARGS nothing is checked; with --preflight-only only that runs.
# NNODES, NODE_RANK, PORT, MASTER_ADDR select multi-node runs; PYTHON the interpreter (default:
# python). Without CUDA the ranks run on the CPU (gloo), e.g. to try a config or in tests.
dist_launch() {
    local tool gpus root
    tool=$1
    gpus=$2
    shift 2
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    export PYTHONPATH="$root:${PYTHONPATH:-}"
    if [[ " $* " == *" --preflight-only "* ]]; then
        exec "${PYTHON:-python}" "$root/tools/$tool.py" "$@"
    fi
    if [[ " $* " != *" --skip-preflight "* ]]; then
        "${PYTHON:-python}" "$root/tools/$tool.py" "$@" --preflight-only || exit $?
    fi
    if [[ "${NNODES:-1}" != 1 && -z "${MASTER_ADDR:-}" ]]; then
        # each node would wait for a master on itself (127.0.0.1), silently, until timed out
        echo "tools/dist_${tool%_labels}.sh: NNODES=$NNODES but MASTER_ADDR is not set: set it" \
            "on every node to the address of the node with NODE_RANK=0" >&2
        exit 2
    fi
    "${PYTHON:-python}" -m torch.distributed.run \
        --nnodes="${NNODES:-1}" \
        --node_rank="${NODE_RANK:-0}" \
        --master_addr="${MASTER_ADDR:-127.0.0.1}" \
        --nproc_per_node="$gpus" \
        --master_port="${PORT:-29500}" \
        "$root/tools/$tool.py" "$@" --skip-preflight
}

# dist_config_gpus TOOL CONFIG GPUS [ARGS...]: dist_launch TOOL on GPUS processes with CONFIG,
# --launcher pytorch and ARGS (tools/dist_train.sh, dist_prefill.sh); a GPUS that is no positive
# integer is refused with the script's usage line (exit status 2).
dist_config_gpus() {
    local tool=$1 script="tools/dist_${1%_labels}.sh"
    if [[ $# -lt 3 || ! $3 =~ ^[1-9][0-9]*$ ]]; then
        echo "$script: GPUS (the number of processes) must be a positive integer, got '${3:-}'" >&2
        echo "usage: bash $script CONFIG GPUS [$tool.py options]" >&2
        exit 2
    fi
    local config=$2 gpus=$3
    shift 3
    dist_launch "$tool" "$gpus" "$config" --launcher pytorch "$@"
}
