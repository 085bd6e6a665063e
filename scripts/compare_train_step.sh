#!/usr/bin/env bash
# Training speed, measured before and after in one run on the same machine: this tree's
# scripts/bench_train_step.py on the code of two git refs (each checked out in a temporary
# worktree), back to back, with the same data, batches and virtual environment. Extra arguments
# go to the bench script of both sides (e.g. --model '{"dtype": "float32"}').
#
#   scripts/compare_train_step.sh BEFORE_REF AFTER_REF DATA_DIR OUT_DIR [bench args...]
#   scripts/compare_train_step.sh ca720ca 05757bc data/ml100k /tmp/compare-train --steps 8
set -euo pipefail
mkdir -p "$4"
before_ref=$1 after_ref=$2 data=$(cd "$3" && pwd) out=$(cd "$4" && pwd)
shift 4
bench_args=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/on_refs.sh"
measure() {  # run in the ref's tree: git_commit() there names the code that ran
  (cd "$2" && "$root/.venv/bin/python" "$root/scripts/bench_train_step.py" --data "$data" --out "$out/$1.json" "${bench_args[@]}")
}
on_refs "$before_ref" "$after_ref" measure
