#!/usr/bin/env bash
# Training speed, measured before and after in one run on the same machine: this tree's
# scripts/bench_train_step.py on the code of two git refs (each checked out in a temporary
# worktree), back to back, with the same data, batches and virtual environment. Extra arguments
# go to the bench script of both sides (e.g. --model '{"dtype": "float32"}').
#
#   scripts/compare_train_step.sh BEFORE_REF AFTER_REF DATA_DIR OUT_DIR [bench args...]
#   scripts/compare_train_step.sh ca720ca HEAD data/ml100k /tmp/compare-train
set -euo pipefail
before_ref=$1 after_ref=$2 data=$3 out=$4
shift 4
root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/.venv/bin/python"
bench="$root/scripts/bench_train_step.py"
data=$(cd "$data" && pwd)
mkdir -p "$out"
trees=()
trap 'for t in "${trees[@]}"; do git -C "$root" worktree remove --force "$t"; done' EXIT
for side in before after; do
  ref=$before_ref
  [ "$side" = after ] && ref=$after_ref
  tree=$(mktemp -d)
  trees+=("$tree")
  git -C "$root" worktree add --detach --quiet "$tree" "$ref"
  echo "== $side: $(git -C "$root" rev-parse --short "$ref")"
  (cd "$tree" && PYTHONPATH="$tree/src" "$python" "$bench" --data "$data" --out "$out/$side.json" "$@")
done
