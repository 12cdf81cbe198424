#!/usr/bin/env bash
# Every measurement of benchmarks/README.md, one after the other (each invocation < ~5 min on a
# 2-core CPU). Results go to benchmarks/results/*.json and the log to stdout.
#   benchmarks/run_all.sh [extra options for every benchmark, e.g. --threads 2]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
out=benchmarks/results
mkdir -p "$out"
tag=$(echo "${*:-default}" | tr -c 'a-zA-Z0-9.\n' '_')
for size in 2.7m 21m; do
    for algo in dpo grpo ppo; do
        "$PY" -W ignore benchmarks/bench_$algo.py --size $size "$@" --json "$out/${algo}_${size}_$tag.json"
    done
    "$PY" -W ignore benchmarks/bench_dpo.py --size $size --trl-precompute-ref "$@" \
        --json "$out/dpo-precompute_${size}_$tag.json"
done
"$PY" -W ignore benchmarks/bench_overhead.py
"$PY" -W ignore benchmarks/bench_overhead.py --tracking offline
