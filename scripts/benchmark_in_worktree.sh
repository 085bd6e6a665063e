#!/usr/bin/env bash
# Run `llm4pr benchmark` on the code of one commit while the checkout goes on changing:
#   scripts/benchmark_in_worktree.sh COMMIT CONFIG OUT [--row NAME ...] [--seed N ...]
# e.g. scripts/benchmark_in_worktree.sh 46fff96 benchmarks/ml100k.yaml benchmarks/results/ml100k
# A benchmark runs for hours and imports modules lazily: edits made meanwhile would reach its later
# rows. So it runs from a clean worktree of COMMIT (/tmp/bench-wt) with that tree's src first on
# the path, writing into OUT of this checkout (made absolute); jemalloc is preloaded when present
# (long all-text runs fragment glibc's heap). Finished rows are skipped, so rerunning resumes.
set -euo pipefail
[ $# -ge 3 ] || { echo "usage: $0 COMMIT CONFIG OUT [benchmark args...]" >&2; exit 2; }
commit=$1 config=$2 out=$(realpath -m "$3")
shift 3
repo=$(git rev-parse --show-toplevel)
tree=/tmp/bench-wt
git -C "$repo" worktree remove --force "$tree" 2>/dev/null || true
git -C "$repo" worktree prune
git -C "$repo" worktree add --detach "$tree" "$commit"
jemalloc=/lib/x86_64-linux-gnu/libjemalloc.so.2
cd "$tree"
PYTHONPATH="$tree/src" LD_PRELOAD="$([ -f "$jemalloc" ] && echo "$jemalloc")" \
  "$repo/.venv/bin/llm4pr" benchmark --config "$config" --out "$out" "$@"
