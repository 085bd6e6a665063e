"""Ranking metrics: the only code in llm4pr that scores a ranking.

Every function takes the labels of ONE request's candidates in the order being scored (rank 1
first), so "ranked labels" below always means `[label of the item at rank 1, rank 2, ...]`.

Conventions (also returned in every report under `conventions`):

- Labels are feedback grades and must be finite and >= 0; a label of 0 means "not relevant".
- Cutoff k is a positive integer; only ranks 1..k count. A list shorter than k is scored whole.
- Gain: "exponential" (default) = 2^label - 1 (Burges et al.); "linear" = label (Järvelin).
- Discount: 1 / log2(rank + 1), ranks counted from 1.
- NDCG@k = DCG@k / ideal DCG@k, where the ideal ranking sorts the labels in descending order and
  is truncated at k too. When the ideal DCG is 0 (every label 0) NDCG is undefined: the function
  returns None and the aggregate counts the request in `n_undefined` instead of averaging it.
- Relevance (MRR and MAP): by default an item is relevant when its label equals the request's
  maximum label, so each request has at least one relevant item unless that maximum is <= 0.
  With `threshold` (> 0), an item is relevant when its label >= threshold. A request with no
  relevant item is undefined for MRR and MAP (None, counted in `n_undefined`).
- MRR@k = 1 / rank of the first relevant item within the top k, else 0.
- MAP@k (average precision at k) = sum of precision@i over the ranks i <= k that hold a relevant
  item, divided by min(k, number of relevant items), so a perfect top k scores 1.
- Aggregates are plain means over the requests where the metric is defined; a metric that no
  request defines is reported as None.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator

from llm4pr.data.errors import DataError

Gain = Literal["exponential", "linear"]
GAINS: tuple[Gain, ...] = ("exponential", "linear")
METRIC_NAMES = ("ndcg", "mrr", "map")


def _cutoff_list(ks: list[int]) -> list[int]:
    return list(check_cutoffs(ks))


# Metric cutoffs in a config file (training, benchmark): at least one, positive, none repeated.
Cutoffs = Annotated[list[int], AfterValidator(_cutoff_list)]


def dcg_at_k(ranked_labels: Sequence[float], k: int, gain: Gain = "exponential") -> float:
    """Discounted cumulative gain of the top k (see the module docstring for the conventions)."""
    _check_k(k)
    _check_labels(ranked_labels)
    gain_of = _gain_function(gain)
    top_k = enumerate(ranked_labels[:k], start=1)
    return math.fsum(gain_of(label) / math.log2(rank + 1) for rank, label in top_k)


def ndcg_at_k(
    ranked_labels: Sequence[float], k: int, gain: Gain = "exponential"
) -> float | None:
    """DCG@k over the ideal DCG@k; None when the ideal DCG is 0 (nothing to rank well)."""
    _check_labels(ranked_labels)  # before sorting, so an error names the rank as given
    ideal = dcg_at_k(sorted(ranked_labels, reverse=True), k, gain)
    if ideal == 0.0:
        return None
    return dcg_at_k(ranked_labels, k, gain) / ideal


def mrr_at_k(
    ranked_labels: Sequence[float], k: int, threshold: float | None = None
) -> float | None:
    """1 / rank of the first relevant item in the top k (0 if none); None if none is relevant."""
    _check_k(k)
    relevant = relevant_flags(ranked_labels, threshold)
    if not any(relevant):
        return None
    for rank, is_relevant in enumerate(relevant[:k], start=1):
        if is_relevant:
            return 1.0 / rank
    return 0.0


def average_precision_at_k(
    ranked_labels: Sequence[float], k: int, threshold: float | None = None
) -> float | None:
    """AP@k with denominator min(k, #relevant); None when the request has no relevant item."""
    _check_k(k)
    relevant = relevant_flags(ranked_labels, threshold)
    n_relevant = sum(relevant)
    if n_relevant == 0:
        return None
    hits = 0
    precision_sum = 0.0
    for rank, is_relevant in enumerate(relevant[:k], start=1):
        if is_relevant:
            hits += 1
            precision_sum += hits / rank
    return precision_sum / min(k, n_relevant)


def relevant_flags(ranked_labels: Sequence[float], threshold: float | None = None) -> list[bool]:
    """Which items count as relevant: label == the request's max (> 0), or label >= threshold."""
    _check_labels(ranked_labels)
    if threshold is not None:
        _check_threshold(threshold)
        return [label >= threshold for label in ranked_labels]
    top = max(ranked_labels, default=0.0)
    if top <= 0:
        return [False] * len(ranked_labels)
    return [label == top for label in ranked_labels]


@dataclass(frozen=True)
class MetricReport:
    """Metrics averaged over requests, with the undefined counts and the conventions used.

    `metrics` and `n_undefined` share the keys "<name>@<k>" (ndcg, mrr, map for each k).
    `per_request` maps request id -> metric -> value (None where undefined), when asked for.
    """

    metrics: dict[str, float | None]
    n_requests: int
    n_undefined: dict[str, int]
    conventions: dict[str, Any]
    per_request: dict[str, dict[str, float | None]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready report; `per_request` is included only when it was computed."""
        report: dict[str, Any] = {
            "metrics": dict(self.metrics),
            "n_requests": self.n_requests,
            "n_undefined": dict(self.n_undefined),
            "conventions": dict(self.conventions),
        }
        if self.per_request is not None:
            report["per_request"] = {rid: dict(values) for rid, values in self.per_request.items()}
        return report


def score_requests(
    ranked_labels: Mapping[str, Sequence[float]],
    ks: Sequence[int] = (3, 5, 10),
    gain: Gain = "exponential",
    threshold: float | None = None,
    keep_per_request: bool = False,
) -> MetricReport:
    """Score many requests (request id -> ranked labels) at every k and average where defined.

    Bad labels raise DataError naming the request, so a user can find it in the data.
    """
    if not ranked_labels:
        raise ValueError("no requests to score")
    ks = check_cutoffs(ks)
    _gain_function(gain)
    if threshold is not None:
        _check_threshold(threshold)

    names = [f"{metric}@{k}" for metric in METRIC_NAMES for k in ks]
    per_request: dict[str, dict[str, float | None]] = {}
    for request_id, labels in ranked_labels.items():
        try:
            values: dict[str, float | None] = {}
            for k in ks:
                values[f"ndcg@{k}"] = ndcg_at_k(labels, k, gain)
                values[f"mrr@{k}"] = mrr_at_k(labels, k, threshold)
                values[f"map@{k}"] = average_precision_at_k(labels, k, threshold)
        except ValueError as exc:
            raise DataError(f"request '{request_id}': {exc}") from exc
        per_request[request_id] = {name: values[name] for name in names}

    metrics: dict[str, float | None] = {}
    n_undefined: dict[str, int] = {}
    for name in names:
        defined = [v for values in per_request.values() if (v := values[name]) is not None]
        metrics[name] = math.fsum(defined) / len(defined) if defined else None
        n_undefined[name] = len(per_request) - len(defined)

    return MetricReport(
        metrics=metrics,
        n_requests=len(per_request),
        n_undefined=n_undefined,
        conventions=_conventions(ks, gain, threshold),
        per_request=per_request if keep_per_request else None,
    )


def _conventions(ks: Sequence[int], gain: Gain, threshold: float | None) -> dict[str, Any]:
    """The conventions behind a report, spelled out so that numbers are comparable elsewhere."""
    if threshold is None:
        relevance = "label == the request's maximum label (none if that maximum is <= 0)"
    else:
        relevance = f"label >= {threshold:g}"
    return {
        "ks": list(ks),
        "gain": "2^label - 1" if gain == "exponential" else "label",
        "discount": "1 / log2(rank + 1), rank from 1",
        "ideal": "labels sorted descending, truncated at k",
        "relevance": relevance,
        "map_denominator": "min(k, number of relevant items)",
        "undefined": "ndcg: ideal DCG is 0; mrr, map: no relevant item; excluded from the mean",
    }


def _gain_function(gain: str) -> Callable[[float], float]:
    if gain == "exponential":
        return lambda label: 2.0**label - 1.0
    if gain == "linear":
        return float
    raise ValueError(f"unknown gain '{gain}' (expected one of: {', '.join(GAINS)})")


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def check_cutoffs(ks: Sequence[int]) -> tuple[int, ...]:
    """The cutoffs k of the metrics@k, or a ValueError naming what is wrong (none, not a positive
    integer, repeated)."""
    if not ks:
        raise ValueError("ks must name at least one cutoff")
    for k in ks:
        _check_k(k)
    if len(set(ks)) != len(ks):
        raise ValueError(f"ks has repeated cutoffs: {list(ks)}")
    return tuple(ks)


def _check_threshold(threshold: float) -> None:
    # A threshold <= 0 would make every item (label >= 0) relevant, which is never meant.
    if not math.isfinite(threshold) or threshold <= 0:
        raise ValueError(f"threshold must be a finite number > 0, got {threshold!r}")


def _check_labels(ranked_labels: Sequence[float]) -> None:
    # Negative or non-finite labels make NDCG meaningless (ratios outside 0..1), so refuse them.
    for rank, label in enumerate(ranked_labels, start=1):
        if not math.isfinite(label) or label < 0:
            raise ValueError(f"label at rank {rank} must be a finite number >= 0, got {label!r}")
