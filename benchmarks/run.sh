#!/usr/bin/env bash
# `make bench`: every side-by-side comparison with its peer, then the table in benchmarks/README.md.
# Each script measures us and the peer in one run and writes benchmarks/results/<name>.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p benchmarks/out benchmarks/results
only="${BENCH:-build fetch scoring index embed}"
for name in $only; do
  echo "== benchmark: $name"
  "$PY" "benchmarks/bench_${name}.py"
done
"$PY" benchmarks/collect.py
