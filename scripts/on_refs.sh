# Sourced by the compare_* scripts: `on_refs BEFORE_REF AFTER_REF FUNCTION` checks out each ref in a
# temporary worktree and calls `FUNCTION SIDE TREE` (SIDE: before, after) with PYTHONPATH set to
# that tree's src/, back to back on the same machine and virtual environment; the worktrees are
# removed afterwards, also on failure.
on_refs() {
  local before_ref=$1 after_ref=$2 function=$3 root side ref tree
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  ON_REFS_TREES=()
  trap 'for t in "${ON_REFS_TREES[@]}"; do git -C "'"$root"'" worktree remove --force "$t"; done' EXIT
  for side in before after; do
    ref=$before_ref
    [ "$side" = after ] && ref=$after_ref
    tree=$(mktemp -d)
    ON_REFS_TREES+=("$tree")
    git -C "$root" worktree add --detach --quiet "$tree" "$ref"
    echo "== $side: $(git -C "$root" rev-parse --short "$ref")"
    PYTHONPATH="$tree/src" "$function" "$side" "$tree"
  done
}
