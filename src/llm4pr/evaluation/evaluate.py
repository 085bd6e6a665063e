"""Evaluate a run (any system's rankings) against labelled requests.

A run is trusted only after `check_run`: every request answered exactly once, and every ranking
a permutation of that request's candidates. A run that loses, duplicates or invents a candidate
would otherwise score silently wrong numbers, so it is rejected with the request ids and the
reason. Scoring itself is delegated to `llm4pr.evaluation.metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import MAX_REPORTED_ERRORS
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.evaluation.metrics import Gain, score_requests

MAX_LISTED_IDS = 5


def check_run(requests: Sequence[PostRankRequest], run: Sequence[RankResult]) -> None:
    """Raise DataError unless `run` ranks every request exactly once with a permutation of its
    candidates, and names no request outside the data.

    The message lists up to MAX_REPORTED_ERRORS requests (id and what is wrong) and the total.
    """
    problems = _run_problems(requests, run)
    if not problems:
        return
    lines = [f"request '{rid}': {problem}" for rid, problem in problems[:MAX_REPORTED_ERRORS]]
    more = len(problems) - len(lines)
    tail = f"\n... and {more} more" if more else ""
    raise DataError(
        f"run does not match the data: {len(problems)} problem(s) "
        f"({len(requests)} requests in the data, {len(run)} in the run):\n"
        + "\n".join(lines)
        + tail
    )


def evaluate_run(
    requests: Sequence[PostRankRequest],
    run: Sequence[RankResult],
    ks: Sequence[int] = (3, 5),
    gain: Gain = "exponential",
    threshold: float | None = None,
    per_request: bool = False,
) -> dict[str, Any]:
    """Check the run, then score it: {"metrics", "n_requests", "n_undefined", "conventions"}
    (plus "per_request" when asked). Every candidate must carry a label.
    """
    if not requests:
        raise DataError("no requests to evaluate")
    _check_labelled(requests)
    check_run(requests, run)
    rankings = {result.request_id: result.ranking for result in run}
    ranked_labels: dict[str, list[float]] = {}
    for request in requests:
        label_of = dict(zip(request.candidate_ids, request.labels))
        ranking = rankings[request.request_id]
        ranked_labels[request.request_id] = [label_of[item_id] for item_id in ranking]
    report = score_requests(
        ranked_labels, ks=ks, gain=gain, threshold=threshold, keep_per_request=per_request
    )
    return report.to_dict()


def format_report_table(report: Mapping[str, Any]) -> str:
    """An aligned plain-text table of a report's metrics, with how many requests each averages."""
    n_requests = report["n_requests"]
    header = ("metric", "value", "requests")
    rows = [header]
    for name, value in report["metrics"].items():
        scored = n_requests - report["n_undefined"][name]
        shown = "n/a" if value is None else f"{value:.4f}"
        rows.append((name, shown, f"{scored}/{n_requests}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = [
        "  ".join([name.ljust(widths[0]), value.rjust(widths[1]), scored.rjust(widths[2])])
        for name, value, scored in rows
    ]
    return "\n".join(lines)


def _check_labelled(requests: Sequence[PostRankRequest]) -> None:
    unlabelled = [r for r in requests if not r.has_labels]
    if not unlabelled:
        return
    lines = [
        f"request '{r.request_id}': candidates without label: "
        f"{_listed([item.id for item in r.candidates if item.label is None])}"
        for r in unlabelled[:MAX_REPORTED_ERRORS]
    ]
    more = len(unlabelled) - len(lines)
    tail = f"\n... and {more} more" if more else ""
    raise DataError(
        f"evaluation needs a label on every candidate; {len(unlabelled)} request(s) lack some:\n"
        + "\n".join(lines)
        + tail
    )


def _run_problems(
    requests: Sequence[PostRankRequest], run: Sequence[RankResult]
) -> list[tuple[str, str]]:
    """(request id, what is wrong) pairs: data order first, then requests only the run names."""
    problems: list[tuple[str, str]] = []
    data_counts = Counter(r.request_id for r in requests)
    run_counts = Counter(result.request_id for result in run)
    problems += [(rid, f"appears {n} times in the data") for rid, n in data_counts.items() if n > 1]
    problems += [(rid, f"appears {n} times in the run") for rid, n in run_counts.items() if n > 1]

    rankings = {result.request_id: result.ranking for result in run}
    for request in requests:
        ranking = rankings.get(request.request_id)
        if ranking is None:
            problems.append((request.request_id, "missing from the run"))
            continue
        wrong = _permutation_problems(request.candidate_ids, ranking)
        if wrong:
            n = len(request.candidates)
            problems.append(
                (request.request_id, f"ranking is not a permutation of its {n} candidates: {wrong}")
            )
    problems += [
        (rid, "is in the run but not in the data") for rid in run_counts if rid not in data_counts
    ]
    return problems


def _permutation_problems(candidate_ids: list[str], ranking: list[str]) -> str:
    """Empty when `ranking` is a permutation of `candidate_ids`, else what differs."""
    known = set(candidate_ids)
    counts = Counter(ranking)
    parts = []
    missing = [item_id for item_id in candidate_ids if item_id not in counts]
    if missing:
        parts.append(f"missing ids {_listed(missing)}")
    duplicated = [item_id for item_id, n in counts.items() if n > 1]
    if duplicated:
        parts.append(f"duplicated ids {_listed(duplicated)}")
    unknown = [item_id for item_id in counts if item_id not in known]
    if unknown:
        parts.append(f"unknown ids {_listed(unknown)}")
    return "; ".join(parts)


def _listed(ids: list[str]) -> str:
    shown = ids[:MAX_LISTED_IDS]
    more = len(ids) - len(shown)
    return repr(shown) + (f" and {more} more" if more else "")
