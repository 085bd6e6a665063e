#!/usr/bin/env bash
# Performance work, measured before and after in one run on the same machine: `llm4pr bench-latency`
# on the code of two git refs (each checked out in a temporary worktree), back to back, with the
# same checkpoint, requests and virtual environment.
#
#   scripts/compare_latency.sh BEFORE_REF AFTER_REF CHECKPOINT REQUESTS.jsonl N OUT_DIR
#   scripts/compare_latency.sh 909dd15~1 909dd15 runs/quick data/ml100k/test.jsonl 40 /tmp/compare
set -euo pipefail
before_ref=$1 after_ref=$2 checkpoint=$3 requests=$4 n=$5 out=$6
root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/.venv/bin/python"
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
  PYTHONPATH="$tree/src" "$python" -c 'import llm4pr, sys; print("code:", llm4pr.__file__)'
  PYTHONPATH="$tree/src" "$python" -m llm4pr bench-latency --checkpoint "$checkpoint" --data "$requests" --requests "$n" --out "$out/$side.json"
done
