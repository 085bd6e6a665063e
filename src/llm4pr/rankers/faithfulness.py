"""Does an attribution point at the fields that move the score? A deletion check.

For every candidate and every attribution method that ranks its item fields, set the candidate's
highest-attributed field (largest |value|) to missing, rescore the request, and record how much
that candidate's score moved; then the same for its lowest-attributed field. A faithful
attribution moves the score more with the top field than with the bottom one. Reported per
method: the mean absolute score change for each, and the share of candidates where the top
field's change is strictly larger. Only fields that can be set missing count (not ids, not the
history summary); a candidate with fewer than two of them, or without a score, is skipped and
counted. Scores are the ranker's own (first_token for LLM4PR): a change is in its units.

Why masking one candidate at a time: the question is about that candidate's explanation; other
candidates keep their features, so their influence on it (a list-aware ranker) stays as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.rankers.explanation import explain, with_missing

FAITHFULNESS_MODE = "first_token"  # the one mode where LLM4PR scores every candidate; baselines ignore it


def faithfulness(ranker: object, requests: Sequence[PostRankRequest], *, occlusion: bool = True) -> dict[str, Any]:
    """Per attribution method (the ones `ranker` serves, plus occlusion when asked and supported):
    {candidates, skipped, mean_abs_change_top, mean_abs_change_bottom, share_top_greater}."""
    explained = explain(ranker, requests, mode=FAITHFULNESS_MODE, occlusion=occlusion)
    # (method, request index, candidate position, top field's features, bottom field's features)
    checks: list[tuple[str, int, int, tuple[str, ...], tuple[str, ...]]] = []
    skipped: dict[str, int] = {}
    for r, (request, result) in enumerate(zip(requests, explained, strict=True)):
        if result.explanations is None:
            raise ValueError(f"request '{request.request_id}': the ranker returned no explanation")
        by_id = {c.id: c for c in result.explanations.candidates}
        for position, candidate in enumerate(request.candidates):
            for method, attribution in by_id[candidate.id].attributions.items():
                if not attribution.available or not attribution.fields:
                    continue
                pair = attribution.top_and_bottom("item")
                if pair is None or by_id[candidate.id].score is None:
                    skipped[method] = skipped.get(method, 0) + 1
                    continue
                top, bottom = pair
                checks.append((method, r, position, tuple(top.features), tuple(bottom.features)))
    # Each distinct (request, candidate, features) variant is scored once, whichever methods ask.
    variants: dict[tuple[int, int, tuple[str, ...]], int] = {}
    for _, r, position, top, bottom in checks:
        for features in (top, bottom):
            variants.setdefault((r, position, features), len(variants))
    masked = [with_missing(requests[r], "item", features, candidate=position) for (r, position, features) in variants]
    scored = ranker.rank(masked, mode=FAITHFULNESS_MODE) if masked else []  # type: ignore[attr-defined]
    report: dict[str, dict[str, Any]] = {}
    for method, r, position, top, bottom in checks:
        candidate_id = requests[r].candidates[position].id
        base = _score(explained[r], candidate_id)
        top_score = _score(scored[variants[(r, position, top)]], candidate_id)
        bottom_score = _score(scored[variants[(r, position, bottom)]], candidate_id)
        entry = report.setdefault(method, {"top": [], "bottom": []})
        if base is None or top_score is None or bottom_score is None:
            skipped[method] = skipped.get(method, 0) + 1
            continue
        entry["top"].append(abs(top_score - base))
        entry["bottom"].append(abs(bottom_score - base))
    summary: dict[str, Any] = {}
    for method in sorted(set(report) | set(skipped)):
        top_changes = report.get(method, {}).get("top", [])
        bottom_changes = report.get(method, {}).get("bottom", [])
        n = len(top_changes)
        summary[method] = {
            "candidates": n,
            "skipped": skipped.get(method, 0),
            "mean_abs_change_top": sum(top_changes) / n if n else None,
            "mean_abs_change_bottom": sum(bottom_changes) / n if n else None,
            "share_top_greater": sum(t > b for t, b in zip(top_changes, bottom_changes, strict=True)) / n if n else None,
        }
    return summary


def _score(result: RankResult, candidate_id: str) -> float | None:
    if result.fallback or result.scores is None:
        return None
    return result.scores[result.ranking.index(candidate_id)]

