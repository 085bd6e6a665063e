#!/usr/bin/env bash
# Performance work, measured before and after in one run on the same machine: `llm4pr bench-latency`
# on the code of two git refs (each checked out in a temporary worktree), back to back, with the
# same checkpoint, requests and virtual environment.
#
#   scripts/compare_latency.sh BEFORE_REF AFTER_REF CHECKPOINT REQUESTS.jsonl N OUT_DIR
#   scripts/compare_latency.sh 909dd15~1 909dd15 runs/quick data/ml100k/test.jsonl 40 /tmp/compare
set -euo pipefail
checkpoint=$3 requests=$4 n=$5 out=$6
root=$(cd "$(dirname "$0")/.." && pwd)
python="$root/.venv/bin/python"
source "$root/scripts/on_refs.sh"
mkdir -p "$out"
measure() {
  "$python" -c 'import llm4pr; print("code:", llm4pr.__file__)'
  "$python" -m llm4pr bench-latency --checkpoint "$checkpoint" --data "$requests" --requests "$n" --out "$out/$1.json"
}
on_refs "$1" "$2" measure
