"""Sliding windows for candidate lists longer than the identifiers allow (RankGPT, Sun et al. 2023).

Windows of `window` candidates move from the END of the list to the front in steps of `stride`;
each window is re-ranked in place, so a strong candidate near the end can climb to the top in one
pass. Lists no longer than the window are ranked in one go. `sliding_window_rank` ranks several
lists at once, one window of each per round, so that the ranker decodes a batch's windows together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

# (indices of the lists ranked this round, the positions each one's window shows) -> each window's
# order: positions within the window, best first
WindowRanker = Callable[[list[int], list[list[int]]], Sequence[Sequence[int]]]


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


def apply_window(order: list[int], span: tuple[int, int], window_order: Sequence[int]) -> list[int]:
    """Replace order[start:end] by its items re-ordered as `window_order` (positions in the window)."""
    start, end = span
    segment = order[start:end]
    if sorted(window_order) != list(range(len(segment))):
        raise ValueError(f"window order {list(window_order)} is not a permutation of {len(segment)} positions")
    return order[:start] + [segment[i] for i in window_order] + order[end:]


def sliding_window_rank(sizes: Sequence[int], window: int, stride: int, rank_windows: WindowRanker) -> list[list[int]]:
    """Order positions 0..n-1 of lists of `sizes` over sliding windows; round by round, every list
    that has a window left shows it, and ONE `rank_windows` call ranks all of them."""
    orders = [list(range(n)) for n in sizes]
    schedules = [window_schedule(n, window, stride) for n in sizes]
    for round_index in range(max((len(s) for s in schedules), default=0)):
        active = [i for i, s in enumerate(schedules) if round_index < len(s)]
        spans = [schedules[i][round_index] for i in active]
        ranked = rank_windows(active, [orders[i][start:end] for i, (start, end) in zip(active, spans, strict=True)])
        for i, span, window_order in zip(active, spans, ranked, strict=True):
            orders[i] = apply_window(orders[i], span, window_order)
    return orders
