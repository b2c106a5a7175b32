#!/usr/bin/env bash
# Every benchmark with a CUDA mode, about 9 minutes on one H200 (per-step timeouts): run it as two
# device calls of GPU_SUITE_STEPS each (benchmarks/README.md), one call may last 600 s.
#
#   source .devkit/setup.sh && bash benchmarks/gpu_suite.sh       # on the GPU machine (see README)
#   GPU_SUITE_QUICK=1 bash benchmarks/gpu_suite.sh                  # smoke run on a CPU (tiny sizes)
#   GPU_SUITE_STEPS="probe tool_host" bash benchmarks/gpu_suite.sh  # only these steps (a rerun)
#   GPU_SUITE_BUDGET_S=300 bash benchmarks/gpu_suite.sh             # steps cut to fit 300 s
#   GPU_SUITE_DRY_RUN=1 bash benchmarks/gpu_suite.sh                # print each step's command only
#
# Writes under $OUT (default work_dirs/gpu_suite): results.md (one table: step, status, seconds;
# then every step's result rows; rewritten after every step, so a run cut short keeps what it
# measured; at the end, the open issues' targets checked against those rows: benchmarks/targets.py)
# and logs.tar.gz (each step's log and result file). Tracked files under
# benchmarks/results/ are left as they were. Measured on an H200 (2026-11-30): about 8 minutes, before the
# capture_setup step and the batched post-processing rows were added.
set -uo pipefail
cd "$(dirname "$0")/.."

main() {  # parsed whole before it runs: editing this file during a run does not derail it
OUT=${OUT:-work_dirs/gpu_suite}
QUICK=${GPU_SUITE_QUICK:-0}
ONLY=${GPU_SUITE_STEPS:-}
BUDGET=${GPU_SUITE_BUDGET_S:-0}  # seconds for the whole call (0: none); steps are cut to fit it
DRY=${GPU_SUITE_DRY_RUN:-0}  # 1: a line a step, its name, a tab and its command (shell-quoted),
                             # in place of running it; nothing is written
# a misspelt setting would run another suite than the one asked for (the full settings, no budget,
# no dry run): refused, as a misspelt step is
case $QUICK in 0|1) ;; *) echo "gpu_suite.sh: GPU_SUITE_QUICK='$QUICK': give 0 (the full settings) or 1 (a smoke run)" >&2; exit 2;; esac
[[ $BUDGET =~ ^[0-9]+$ ]] || { echo "gpu_suite.sh: GPU_SUITE_BUDGET_S='$BUDGET': give whole seconds (0: no budget), e.g. 300" >&2; exit 2; }
BUDGET=$((10#$BUDGET))
case $DRY in 0|1) ;; *) echo "gpu_suite.sh: GPU_SUITE_DRY_RUN='$DRY': give 0 (run the steps) or 1 (print their commands)" >&2; exit 2;; esac
if [ -n "$ONLY" ]; then  # a misspelt step would run nothing and look like a finished call
  local known; known=$(grep -oE '^(.* && )?step [a-z0-9_]+ [0-9$]' benchmarks/gpu_suite.sh | awk '{print $(NF-1)}')
  for name in $ONLY; do
    grep -qx "$name" <<< "$known" || { echo "gpu_suite.sh: no step '$name' (GPU_SUITE_STEPS); the steps: $(echo $known)" >&2; exit 2; }
  done
fi
[ "$DRY" = 1 ] || mkdir -p "$OUT/steps"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$QUICK" = 1 ]; then
  DEV="--device cpu"; SCALE=6; export TRITON_INTERPRET=1
  CAPTURE="--quick --repeats 1 --spec diffseg iseg --paths new old"
  CAPTURE_SD1="--quick --repeats 1 --model stable-diffusion-v1-4 --spec diffseg --paths new old"
  E2E="--quick --repeats 1 --steps 2"
  E2E_COMPILE="--quick --methods iseg --repeats 1 --compile --map-backend torch"  # interpreted Triton: too slow at 512 px
  KERNEL="--quick"; SEEDIFF="--quick --pamr-iter 20"; SEEDIFF_S=150; ISEG="--repeats 1"; DIFFSEG="--cases 1 --precisions float16"
  TOOLS="--images 2 --batch-size 2 --synth-steps 2 --synth-items 2 --pamr-iter 10"; ONLINE="--steps 3"
  HOST="--images 32 --workers 0 1 --modes capacity --repeats 1"; SETUP_REPEATS=5; DEFORM="--crop 128 --repeats 2"
else
  DEV="--device cuda"; SCALE=1
  CAPTURE="--dtype float16 --batch-size 1 16 --spec diffseg iseg seediff --repeats 5"
  CAPTURE_SD1="--dtype float16 --model stable-diffusion-v1-4 --batch-size 1 16 --spec diffseg --repeats 5 --paths new layerwise"
  E2E="--dtype float16 --batch-size 1 16 --seediff-batch 8 --steps 50 --repeats 1"
  E2E_COMPILE="--dtype float16 --methods iseg --batch-size 16 --repeats 3 --compile --map-backend triton torch"
  KERNEL="--batch 16"; SEEDIFF="--pamr-iter 5000"; SEEDIFF_S=60; ISEG="--repeats 3"; DIFFSEG="--repeats 3"
  TOOLS="--full-size --batch-size 16 --images 480 --tools pseudo_label,eval_labels"; ONLINE="--steps 5"
  HOST="--images 160 --workers 0 2 8 --modes capacity waiting --gpu-rate 70 --repeats 1"; SETUP_REPEATS=50; DEFORM="--repeats 10"
fi

if [ "$DRY" != 1 ]; then
  echo "| step | status | seconds |" > "$OUT/summary.md"
  echo "|---|---|---|" >> "$OUT/summary.md"
  : > "$OUT/rows.md"
fi

# step NAME TIMEOUT_S RESULT_FILE COMMAND...: runs COMMAND with a timeout, records its status and
# the rows it added to RESULT_FILE (tracked result files are restored afterwards)
step() {
  local name=$1 limit=$(( $2 * SCALE )) result=$3; shift 3
  if [ -n "$ONLY" ] && [[ " $ONLY " != *" $name "* ]]; then return; fi
  if [ "$DRY" = 1 ]; then printf '%s\t' "$name"; printf '%q ' "$@"; echo; return; fi
  local backup="" before=0 start=$SECONDS rc
  if [ "$BUDGET" -gt 0 ]; then  # what is left of the call's budget, less 20 s (kill grace, results)
    local left=$(( BUDGET - SECONDS - 20 ))
    if [ "$left" -lt 15 ]; then
      echo "| $name | skipped (GPU_SUITE_BUDGET_S=$BUDGET spent) | 0 |" >> "$OUT/summary.md"; report; return
    fi
    [ "$left" -lt "$limit" ] && limit=$left
  fi
  if [ -f "$result" ]; then backup="$OUT/steps/$name.before"; cp "$result" "$backup"; before=$(wc -l < "$result"); fi
  echo "== $name (timeout ${limit}s)"
  timeout -k 10 "$limit" "$@" > "$OUT/steps/$name.log" 2>&1
  rc=$?
  local status=ok
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && status="timeout"
  [ $rc -ne 0 ] && [ "$status" = ok ] && status="failed (rc $rc)"
  echo "| $name | $status | $(( SECONDS - start )) |" >> "$OUT/summary.md"
  tail -n 3 "$OUT/steps/$name.log"
  if [ -f "$result" ]; then
    # rows appended under a table already in the file get that table's header (its last one)
    local header=""
    if [ "$before" -gt 0 ] && tail -n +"$(( before + 1 ))" "$result" | head -n 1 | grep -q '^| '; then
      header=$(head -n "$before" "$result" | awk '/^\|---/ { h = prev ORS $0 } { prev = $0 } END { print h }')
    fi
    { echo; echo "### $name"; echo; [ -n "$header" ] && echo "$header"; tail -n +"$(( before + 1 ))" "$result"; } >> "$OUT/rows.md"
    [ "$result" = "$OUT/steps/$name.md" ] || cp "$result" "$OUT/steps/$name.md"
    if [ -n "$backup" ]; then cp "$backup" "$result"; else case "$result" in benchmarks/results/*) git checkout -q -- "$result" 2>/dev/null || rm -f "$result";; esac; fi
  fi
  if [ "$status" != ok ]; then  # what a failed or timed-out step printed, in results.md itself
    { echo; echo "### $name: $status; the last 40 lines of its log"; echo; echo '```'
      grep -v '^USDT:' "$OUT/steps/$name.log" | tail -n 40; echo '```'; } >> "$OUT/rows.md"
  fi
  report
}

report() {
  { echo "# GPU suite results ($(date -u '+%Y-%m-%d %H:%M UTC'), quick=$QUICK)"; echo
    cat "$OUT/summary.md"; cat "$OUT/rows.md"; } > "$OUT/results.md"
}

local R=benchmarks/results S=$OUT/steps
step probe 60 "$S/probe.md" python3 -c "
import torch, mmdiffseg
from mmdiffseg.attention.sdpa_lse import sdpa_with_lse
from mmdiffseg.attention.head_maps import resolve_backend
dev = 'cuda' if torch.cuda.is_available() else 'cpu'
lines = [f'torch {torch.__version__}, device {torch.cuda.get_device_name(0) if dev == \"cuda\" else \"cpu\"}']
import sys, numpy, diffusers, transformers
lines.append(f'Python {sys.version.split()[0]}, numpy {numpy.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}')
try:
    import triton; lines.append(f'triton {triton.__version__}')
except ImportError:
    lines.append('triton missing')
from mmdiffseg.triton_support import triton_problem
from mmdiffseg.cuda_check import cuda_problem
lines.append(f'CUDA: {cuda_problem() or \"usable\"}; Triton kernels: {triton_problem(dev) or \"run here\"}')
lines.append(f'map backend on {dev}: {resolve_backend(\"auto\", dev, False)}')
for h, n, k, d in [(5, 4096, 4096, 64), (8, 4096, 4096, 40), (8, 256, 77, 160), (10, 1024, 1024, 64)]:
    for dt in (torch.float16, torch.float32):
        q = torch.randn(1, h, n, d, device=dev, dtype=dt); kv = torch.randn(1, h, k, d, device=dev, dtype=dt)
        choice = torch.ops.aten._fused_sdp_choice(q, kv, kv)
        lines.append(f'SDPA backend {choice} (1 flash, 2 efficient, 3 cudnn) for h{h} n{n} k{k} d{d} {dt}: LSE {\"yes\" if sdpa_with_lse(q, kv, kv)[1] is not None else \"no\"}')
open('$S/probe.md', 'w').write('\n'.join(lines) + '\n'); print('\n'.join(lines))
"
# the CUDA tests only (-k cuda: test_capture_compiled.py's CPU variants took 100 s of the limit);
# quick (no GPU): every one skips, and pytest's "no tests ran" (5) counts as ok
step cuda_tests 150 "$S/cuda_tests.md" sh -c "python3 -m pytest -q -p no:cacheprovider -k cuda tests/generators/test_pamr_cuda.py tests/generators/test_generators_cuda.py tests/generators/test_postprocess_graphs_cuda.py tests/attention/test_sdpa_lse_cuda.py tests/attention/test_deferred_maps_cuda.py tests/attention/test_capture_compiled.py > '$S/cuda_tests.md' 2>&1; rc=\$?; tail -n 15 '$S/cuda_tests.md'; [ \$rc = 5 ] && [ $QUICK = 1 ] && rc=0; exit \$rc"
step map_kernel 150 "$S/map_kernel.md" python3 benchmarks/check_map_kernel.py $DEV $KERNEL --out "$S/map_kernel.md"
step capture 85 "$S/capture.md" python3 benchmarks/bench_capture.py $DEV $CAPTURE --out "$S/capture.md"
step capture_sd1 45 "$S/capture_sd1.md" python3 benchmarks/bench_capture.py $DEV $CAPTURE_SD1 --out "$S/capture_sd1.md"
step capture_setup 30 "$S/capture_setup.md" python3 benchmarks/bench_capture_setup.py --repeats $SETUP_REPEATS --out "$S/capture_setup.md"
step capture_layer_host 30 "$S/capture_layer_host.md" python3 benchmarks/bench_capture_layer_host.py --out "$S/capture_layer_host.md"
# Mask2Former's deformable attention, mmcv's PyTorch path (the .devkit's mmcv has no compiled ops)
step deformable_attention 25 "$R/deformable_attention.md" python3 benchmarks/bench_deformable_attention.py $DEV $DEFORM
step end_to_end 95 "$S/end_to_end.md" python3 benchmarks/bench_end_to_end.py $DEV $E2E --out "$S/end_to_end.md"
step diffseg 60 "$S/diffseg.md" python3 benchmarks/bench_diffseg.py $DEV $DIFFSEG --out "$S/diffseg.md"
# quick: the released transcription alone takes 7-9 min on a CPU (SEEDIFF_S)
step seediff $SEEDIFF_S "$S/seediff.md" python3 benchmarks/bench_seediff.py $DEV $SEEDIFF --out "$S/seediff.md"
step iseg 60 "$S/iseg.md" python3 benchmarks/bench_iseg.py $DEV $ISEG --out "$S/iseg.md"
step offline_tools 110 "$R/offline_tools.md" python3 benchmarks/bench_offline_tools.py $DEV $TOOLS
step tool_host 60 "$S/tool_host.md" python3 benchmarks/bench_tool_host.py $HOST --out "$S/tool_host.md"
step online_training 90 "$R/online_training.md" python3 benchmarks/bench_online_training.py $ONLINE
# optional, only when GPU_SUITE_STEPS names it (not in the two calls of benchmarks/README.md):
# capture / plain with a compiled U-Net, the Triton kernels as graph operators and the PyTorch
# path (a capture graph each)
[[ " $ONLY " == *" end_to_end_compile "* ]] && step end_to_end_compile 480 "$S/end_to_end_compile.md" python3 benchmarks/bench_end_to_end.py $DEV $E2E_COMPILE --out "$S/end_to_end_compile.md"

[ "$DRY" = 1 ] && return
report
{ echo; echo "## Targets of the open issues (benchmarks/targets.py)"; echo
  python3 benchmarks/targets.py "$OUT/results.md"; } > "$OUT/targets.md" 2>&1
cat "$OUT/targets.md" >> "$OUT/results.md"
tar -czf "$OUT/logs.tar.gz" -C "$OUT" steps
rm -rf "$OUT/steps" "$OUT/summary.md" "$OUT/rows.md" "$OUT/targets.md"
cat "$OUT/results.md"
}

main "$@"; exit  # on one line: bash has read it whole, so an edit of this file during a run changes nothing
