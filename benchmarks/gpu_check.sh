#!/usr/bin/env bash
# The GPU checks in one go, on a machine with one NVIDIA GPU and nothing downloaded (random weights,
# a tiny ADE20K it writes itself), in about 8 minutes:
#
#   1. faiss k-means on the GPU against the CPU (same objective within 1%, >= 10x at 256 x 128 x 128),
#      and SCS's batched k-means on both devices;
#   2. benchmarks/bench_metrics.py --device cuda --gpu-only (SC and EF per map on the GPU);
#   3. benchmarks/bench_train_step.py --preset gpu-base (DINOv3-B + SAM2 Hiera-B+, 512 x 512, bf16) against
#      transformers' Mask2Former with the same backbone; target: fused step <= 1.10 x transformers' step
#      with the master alone + the aux's own forward;
#   4. benchmarks/bench_profile.py --preset gpu (MetricProfiler's pass; targets: metrics <= 25% of the
#      forward, pass < 60 s);
#   5. a 20-step `fusionseg fit` of configs/ade20k.yaml (random weights, bf16-mixed) on a tiny dataset
#      in ADE20K's official layout: step time and peak GPU memory.
#
# Usage (from anywhere):
#   benchmarks/gpu_check.sh                 # on the GPU machine
#   benchmarks/gpu_check.sh --dry-run       # or GPU_CHECK_DRY_RUN=1: tiny shapes on the CPU, a few steps
# Results: gpu_check.json (every result and the pass/fail of each target), gpu_check.log and the
# benchmarks' .md reports, in $GPU_CHECK_OUT, else $OUT, else benchmarks/results/gpu_check.
# PYTHON picks the interpreter (default: the repository's .venv, else python3). A step that fails or
# runs out of time is recorded as such; the others still run. Exit status: 1 when a step failed or (on
# a GPU) a target that was checked is not met, else 0. A dry run checks that every step runs.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
DRY=${GPU_CHECK_DRY_RUN:-0}
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    *) echo "gpu_check.sh: unknown argument $arg (use --dry-run)" >&2; exit 2 ;;
  esac
done
RESULTS=${GPU_CHECK_OUT:-${OUT:-$REPO/benchmarks/results/gpu_check}}
PY=${PYTHON:-$REPO/.venv/bin/python}
[[ -x "$PY" ]] || PY=python3
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$RESULTS"
LOG="$RESULTS/gpu_check.log"
: > "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$REPO/benchmarks${PYTHONPATH:+:$PYTHONPATH}"

# step NAME SECONDS COMMAND...: run with a time limit, keep its output, record status and duration.
step() {
  local name=$1 limit=$2; shift 2
  local start rc
  start=$(date +%s)
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG"
  timeout --kill-after=10 "$limit" "$@" >> "$LOG" 2>&1
  rc=$?
  printf '{"rc": %d, "seconds": %d, "timed_out": %s}\n' "$rc" "$(( $(date +%s) - start ))" \
    "$([[ $rc -eq 124 || $rc -eq 137 ]] && echo true || echo false)" > "$WORK/$name.status.json"
  echo "   -> rc=$rc after $(( $(date +%s) - start ))s" | tee -a "$LOG"
}

if [[ "$DRY" == 1 ]]; then
  echo "gpu_check.sh: dry run (CPU, tiny shapes)" | tee -a "$LOG"
  step env 60 "$PY" benchmarks/gpu_check.py env "$WORK/env.json"
  step kmeans 120 "$PY" benchmarks/gpu_check.py kmeans "$WORK/kmeans.json" --dry-run
  step metrics 120 "$PY" benchmarks/bench_metrics.py --dry-run --no-reference-floor --out "$WORK/metrics_cpu"
  step train_step 300 "$PY" benchmarks/bench_train_step.py --preset dry --memory-in-process --out "$WORK"
  step profile 120 "$PY" benchmarks/bench_profile.py --dry-run --out "$WORK"
  step ade20k 60 "$PY" benchmarks/gpu_check.py ade20k "$WORK/data" --dry-run
  FIT_ARGS=(--trainer.accelerator cpu --trainer.precision 32-true --trainer.max_steps 3
            --model.master "regions:channels=16" --model.aux "edges:channels=16"
            --model.head.num_queries 4 --model.head.dec_layers 1 --model.head.enc_layers 1
            --model.head.hidden_dim 32 --model.head.num_heads 2 --model.head.dim_feedforward 32
            --model.head.enc_feedforward 32 --model.head.train_points 64
            --data.crop_size 64 --data.batch_size 2 --data.num_workers 0 --data.eval_short_side 64
            --metric_profiler.num_batches 1)
else
  command -v nvidia-smi > /dev/null && nvidia-smi >> "$LOG" 2>&1
  step env 60 "$PY" benchmarks/gpu_check.py env "$WORK/env.json"
  step kmeans 90 "$PY" benchmarks/gpu_check.py kmeans "$WORK/kmeans.json"
  step metrics 60 "$PY" benchmarks/bench_metrics.py --device cuda --gpu-only --out "$WORK/metrics_cuda"
  step train_step 200 "$PY" benchmarks/bench_train_step.py --preset gpu-base --memory-in-process --out "$WORK"
  step profile 90 "$PY" benchmarks/bench_profile.py --preset gpu --out "$WORK"
  step ade20k 30 "$PY" benchmarks/gpu_check.py ade20k "$WORK/data"
  FIT_ARGS=(--trainer.max_steps 20 --data.num_workers 8)
fi

# The config as it is (DINOv3-B master, SAM2 Hiera-B+ aux, plan auto: MetricProfiler runs first), random
# weights, no validation during the 20 steps, no sanity check, a fresh folder.
GPU_CHECK_FIT_JSON="$WORK/fit.json" step fit 150 "$PY" -m fusionseg.cli fit --config configs/ade20k.yaml \
  --model.pretrained false --data.root "$WORK/data/ADEChallengeData2016" \
  --trainer.default_root_dir "$WORK/fit_run" --trainer.num_sanity_val_steps 0 \
  --trainer.val_check_interval 100000 --trainer.enable_progress_bar false \
  --trainer.callbacks+=gpu_check.StepStats --metric_profiler.use_cache false "${FIT_ARGS[@]}"

SUMMARY_ARGS=()
[[ "$DRY" == 1 ]] && SUMMARY_ARGS=(--dry-run)
"$PY" benchmarks/gpu_check.py summary "$WORK" "$RESULTS/gpu_check.json" "${SUMMARY_ARGS[@]}" | tee -a "$LOG"
cp "$WORK"/*.md "$RESULTS"/ 2> /dev/null || true
# Exit 0 when every step ran (a dry run) or, on a GPU, when every target that was checked is met.
"$PY" -c "
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(1 if r['steps_failed'] or not (r['dry_run'] or r['all_targets_met']) else 0)" "$RESULTS/gpu_check.json"
