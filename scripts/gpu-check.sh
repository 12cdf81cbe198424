#!/usr/bin/env bash
# The first hour on a GPU host with no internet, as one script (under 8 minutes on one H100):
#
#   1. probe     no Hub kernel and no weight is fetched (every connection refused)
#   2. tests     the device tests (tests/test_device.py, test_offload.py, test_memory.py)
#   3. runs      one run of every algorithm on tiny-lm in bf16, each with a device-memory trace
#   4. bench     bench_ppo / bench_grpo / bench_dpo at 100m in bf16, a batch sweep
#   5. compare   `rlhf-harness plan` beside each run's measured peak memory
#
# Everything goes to one folder: the first argument, else $OUT, else gpu-check-<UTC time>; a
# step's output in <step>.log, its exit status and seconds in summary.tsv. Exit status: the
# number of steps that failed.
#
#   scripts/gpu-check.sh [FOLDER]
#   GPU_CHECK_STAND_IN=1 scripts/gpu-check.sh [FOLDER]   # a dry run on the CPU stand-in of a
#                                                        # GPU (harness/models/device_trace.py), small
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check-$(date -u +%Y%m%dT%H%M%SZ)}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
py=${PYTHON:-.venv/bin/python}
[ -x "$py" ] || py=python3
stand_in=${GPU_CHECK_STAND_IN:-0}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export RLHF_HARNESS_WANDB=0 WANDB_MODE=disabled RAY_USAGE_STATS_ENABLED=0
export RLHF_HARNESS_CACHE=${RLHF_HARNESS_CACHE:-$out/cache}

flag=()
scale=1  # the steps' time limits add up to 8 minutes; the CPU stand-in gets four times theirs
if [ "$stand_in" = 1 ]; then
  flag=(--stand-in)
  scale=4
  tests=(tests/test_device.py -k "stand_in or indexing or counts_device")
  bench=(--size 2.7m --device cpu --dtype fp32 --batch-sweep 4,8 --rounds 1 --warmup 0
         --only ours --no-memory)
else
  tests=(tests/test_device.py tests/test_offload.py tests/test_memory.py)
  bench=(--size 100m --device cuda --dtype bf16 --batch-sweep 8,32,128 --rounds 2)
fi

failed=0
printf 'step\tstatus\tseconds\n' > "$out/summary.tsv"
step() {  # step NAME LIMIT_SECONDS COMMAND...
  local name=$1 limit=$(($2 * scale))
  shift 2
  local start=$SECONDS
  echo "== $name" | tee -a "$out/gpu-check.log"
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local status=$?
  printf '%s\t%s\t%s\n' "$name" "$status" "$((SECONDS - start))" >> "$out/summary.tsv"
  tail -n 3 "$out/$name.log" | tee -a "$out/gpu-check.log"
  [ "$status" = 0 ] || failed=$((failed + 1))
}

{ "$py" -c 'import torch; print(torch.__version__, torch.cuda.is_available())'
  command -v nvidia-smi > /dev/null && nvidia-smi; } > "$out/host.txt" 2>&1
step probe 30 "$py" scripts/gpu_check.py probe "$out" "${flag[@]}"
step tests 120 "$py" -m pytest -q -p no:cacheprovider "${tests[@]}"
step runs 150 "$py" scripts/gpu_check.py runs "$out" "${flag[@]}"
for algo in ppo grpo dpo; do
  step "bench_$algo" 50 "$py" "benchmarks/bench_$algo.py" "${bench[@]}" \
    --json "$out/bench_$algo.json"
done
step plan 20 "$py" -m harness.cli plan "$out/gpu-check.yaml" --gpu-memory 80GiB
step compare 10 "$py" scripts/gpu_check.py compare "$out"
echo "gpu-check: $failed step(s) failed; everything is in $out" | tee -a "$out/gpu-check.log"
exit "$failed"
