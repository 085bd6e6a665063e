"""Sliding windows for candidate lists longer than the identifiers allow (RankGPT, Sun et al. 2023).

Windows of `window` candidates move from the END of the list to the front in steps of `stride`;
each window is re-ranked in place, so a strong candidate near the end can climb to the top in one
pass. Lists no longer than the window are ranked in one go.
"""

from __future__ import annotations

from collections.abc import Callable


def validate_window(window: int, stride: int, max_candidates: int) -> None:
    if not 2 <= window <= max_candidates:
        raise ValueError(f"window must be between 2 and {max_candidates} (the number of identifiers), got {window}")
    if not 1 <= stride < window:
        raise ValueError(f"stride must be at least 1 and smaller than the window ({window}), got {stride}")


def window_schedule(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The (start, end) slices re-ranked one after another, back to front."""
    if n <= window:
        return [(0, n)]
    spans = []
    end = n
    while True:
        start = max(end - window, 0)
        spans.append((start, end))
        if start == 0:
            return spans
        end -= stride


def apply_window(order: list[int], span: tuple[int, int], window_order: list[int]) -> list[int]:
    """Replace order[start:end] by its items re-ordered as `window_order` (positions in the window)."""
    start, end = span
    segment = order[start:end]
    if sorted(window_order) != list(range(len(segment))):
        raise ValueError(f"window order {window_order} is not a permutation of {len(segment)} positions")
    return order[:start] + [segment[i] for i in window_order] + order[end:]


def sliding_window_rank(n: int, window: int, stride: int, rank_window: Callable[[list[int]], list[int]]) -> list[int]:
    """Rank positions 0..n-1 with `rank_window` (positions in -> their order) over sliding windows."""
    order = list(range(n))
    for span in window_schedule(n, window, stride):
        order = apply_window(order, span, rank_window(order[span[0] : span[1]]))
    return order
