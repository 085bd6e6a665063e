"""Metrics: hand-worked cases for every convention, then agreement with ranx on random data."""

from __future__ import annotations

import math
import random

import pytest

from llm4pr.data.errors import DataError
from llm4pr.evaluation.metrics import (
    average_precision_at_k,
    dcg_at_k,
    mrr_at_k,
    ndcg_at_k,
    relevant_flags,
    score_requests,
)

# The worked example: labels of the items at ranks 1..6.
LABELS = [3, 2, 3, 0, 1, 2]
L3, L5, L6, L7 = math.log2(3), math.log2(5), math.log2(6), math.log2(7)  # discounts 1/log2(rank+1)


def test_dcg_exponential_and_linear_gain_by_hand() -> None:
    # Exponential gains 2^l - 1 = [7, 3, 7, 0, 1, 3]; discounts 1, 1/log2 3, 1/2, ...
    # DCG@3 = 7 + 3/log2(3) + 7/2 = 10.5 + 1.892789 = 12.392789
    assert dcg_at_k(LABELS, 3) == pytest.approx(7 + 3 / L3 + 7 / 2)
    assert dcg_at_k(LABELS, 3) == pytest.approx(12.392789, abs=1e-6)
    # Linear gains = labels: DCG@3 = 3 + 2/log2(3) + 3/2 = 5.761860
    assert dcg_at_k(LABELS, 3, gain="linear") == pytest.approx(3 + 2 / L3 + 3 / 2)
    assert dcg_at_k(LABELS, 3, gain="linear") == pytest.approx(5.761860, abs=1e-6)


def test_ndcg_by_hand() -> None:
    # Ideal order [3, 3, 2, 2, 1, 0]: exponential gains [7, 7, 3, 3, 1, 0].
    # IDCG@3 = 7 + 7/log2(3) + 3/2 = 12.916508 -> NDCG@3 = 12.392789 / 12.916508 = 0.959454
    assert ndcg_at_k(LABELS, 3) == pytest.approx((7 + 3 / L3 + 7 / 2) / (7 + 7 / L3 + 3 / 2))
    assert ndcg_at_k(LABELS, 3) == pytest.approx(0.959454, abs=1e-6)
    # Linear: IDCG@3 = 3 + 3/log2(3) + 2/2 = 5.892789 -> NDCG@3 = 5.761860 / 5.892789 = 0.977782
    assert ndcg_at_k(LABELS, 3, gain="linear") == pytest.approx((3 + 2 / L3 + 3 / 2) / (3 + 3 / L3 + 1))
    assert ndcg_at_k(LABELS, 3, gain="linear") == pytest.approx(0.977782, abs=1e-6)
    # Whole list: DCG@6 = 7 + 3/log2 3 + 7/2 + 0 + 1/log2 6 + 3/log2 7 = 13.848264
    #             IDCG@6 = 7 + 7/log2 3 + 3/2 + 3/log2 5 + 1/log2 6 + 0 = 14.595391 -> 0.948810
    dcg6 = 7 + 3 / L3 + 7 / 2 + 0 + 1 / L6 + 3 / L7
    idcg6 = 7 + 7 / L3 + 3 / 2 + 3 / L5 + 1 / L6
    assert ndcg_at_k(LABELS, 6) == pytest.approx(dcg6 / idcg6)
    assert ndcg_at_k(LABELS, 6) == pytest.approx(0.948810, abs=1e-6)
    # A k beyond the list length scores the whole list; the ideal order scores 1.
    assert ndcg_at_k(LABELS, 10) == pytest.approx(ndcg_at_k(LABELS, 6))
    assert ndcg_at_k(sorted(LABELS, reverse=True), 3) == pytest.approx(1.0)
    # Ideal truncated at k: one relevant item at rank 2 of 3 -> (1/log2 3) / 1.
    assert ndcg_at_k([0, 1, 0], 1) == 0.0
    assert ndcg_at_k([0, 1, 0], 2) == pytest.approx(1 / L3)


def test_all_zero_labels_make_ndcg_mrr_map_undefined() -> None:
    assert ndcg_at_k([0, 0, 0], 3) is None
    assert ndcg_at_k([0, 0, 0], 3, gain="linear") is None
    assert mrr_at_k([0, 0, 0], 3) is None
    assert average_precision_at_k([0, 0, 0], 3) is None
    # A threshold nobody reaches is undefined too.
    assert mrr_at_k([1, 2], 2, threshold=3) is None
    assert average_precision_at_k([1, 2], 2, threshold=3) is None


def test_mrr_max_label_rule_and_threshold() -> None:
    # Max label 3 sits at ranks 2 and 4: MRR@1 = 0, MRR@2 = MRR@4 = 1/2.
    assert mrr_at_k([2, 3, 1, 3], 1) == 0.0
    assert mrr_at_k([2, 3, 1, 3], 2) == 0.5
    assert mrr_at_k([2, 3, 1, 3], 4) == 0.5
    # Fractional labels: only the maximum (4.5) is relevant, at rank 3.
    assert mrr_at_k([4.0, 1.5, 4.5], 3) == pytest.approx(1 / 3)
    # Threshold 2: the first label >= 2 is at rank 3.
    assert mrr_at_k([1, 0, 2, 3], 2, threshold=2) == 0.0
    assert mrr_at_k([1, 0, 2, 3], 3, threshold=2) == pytest.approx(1 / 3)
    assert relevant_flags([1, 0, 2, 3], threshold=2) == [False, False, True, True]
    assert relevant_flags([1, 0, 2, 3]) == [False, False, False, True]


def test_average_precision_by_hand() -> None:
    # Max-label rule on LABELS: relevant ranks 1 and 3 (2 relevant items).
    assert average_precision_at_k(LABELS, 1) == 1.0  # (1/1) / min(1, 2)
    assert average_precision_at_k(LABELS, 2) == 0.5  # (1/1) / min(2, 2)
    assert average_precision_at_k(LABELS, 3) == pytest.approx((1 + 2 / 3) / 2)  # 0.833333
    # Threshold 2: relevant ranks 1, 2, 3, 6 (4 relevant items).
    assert average_precision_at_k(LABELS, 3, threshold=2) == 1.0  # (1 + 1 + 1) / min(3, 4)
    assert average_precision_at_k(LABELS, 6, threshold=2) == pytest.approx((3 + 4 / 6) / 4)  # 0.916667


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ndcg_at_k(LABELS, 0)
    with pytest.raises(ValueError, match="unknown gain 'log'"):
        ndcg_at_k(LABELS, 3, gain="log")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threshold must be"):
        mrr_at_k(LABELS, 3, threshold=0)
    with pytest.raises(ValueError, match="rank 2 must be a finite number >= 0"):
        ndcg_at_k([1, -1], 2)
    with pytest.raises(ValueError, match="repeated cutoffs"):
        score_requests({"a": LABELS}, ks=(3, 3))
    with pytest.raises(ValueError, match="no requests"):
        score_requests({})


def test_score_requests_averages_defined_requests_and_counts_the_rest() -> None:
    ranked = {"a": LABELS, "zeros": [0, 0, 0], "c": [0, 1]}
    report = score_requests(ranked, ks=(1, 3), keep_per_request=True)
    assert report.n_requests == 3
    assert list(report.metrics) == ["ndcg@1", "ndcg@3", "mrr@1", "mrr@3", "map@1", "map@3"]
    assert report.n_undefined == {name: 1 for name in report.metrics}
    # ndcg@1: a = 7/7 = 1, c = 0/1 = 0 -> 0.5; "zeros" is counted, not averaged as 0 or 1.
    assert report.metrics["ndcg@1"] == pytest.approx(0.5)
    assert report.metrics["ndcg@3"] == pytest.approx((0.959454 + 1 / L3) / 2, abs=1e-6)
    # mrr@3: a = 1 (max label at rank 1), c = 1/2 -> 0.75
    assert report.metrics["mrr@3"] == pytest.approx(0.75)
    assert report.metrics["map@3"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5) / 2)
    assert report.per_request is not None and report.per_request["zeros"]["ndcg@3"] is None
    as_dict = report.to_dict()
    assert set(as_dict) == {"metrics", "n_requests", "n_undefined", "conventions", "per_request"}
    assert as_dict["conventions"]["gain"] == "2^label - 1"
    assert as_dict["conventions"]["ks"] == [1, 3]
    assert "maximum label" in as_dict["conventions"]["relevance"]
    assert "per_request" not in score_requests(ranked, ks=(1,)).to_dict()


def test_a_metric_no_request_defines_is_none() -> None:
    report = score_requests({"a": [0, 0], "b": [0]}, ks=(2,))
    assert report.metrics == {"ndcg@2": None, "mrr@2": None, "map@2": None}
    assert report.n_undefined == {"ndcg@2": 2, "mrr@2": 2, "map@2": 2}


def test_bad_labels_name_the_request() -> None:
    with pytest.raises(DataError, match="request 'bad'.*rank 1"):
        score_requests({"ok": [1, 0], "bad": [-2, 1]}, ks=(1,))


# ---- agreement with ranx, an independent implementation ------------------------------------


def against_ranx(test):
    """ranx runs interpreted in tests (conftest.py); its internal cast warning is muted."""
    return pytest.mark.filterwarnings("ignore:unsafe cast from uint64 to int64")(test)


def _random_requests(seed: int, n: int = 200) -> dict[str, list[int]]:
    """Ranked integer labels 0..5 per request (1..12 items), plus one all-zero request."""
    rng = random.Random(seed)
    requests = {}
    for index in range(n):
        labels = [rng.randint(0, 5) for _ in range(rng.randint(1, 12))]
        rng.shuffle(labels)
        requests[f"q{index}"] = labels
    requests["all-zero"] = [0, 0, 0]
    return requests


def _ranx_per_query(qrels: dict, ranked: dict[str, list[int]], metric: str) -> dict[str, float]:
    """ranx scores per query for rankings given as ranked label lists (doc ids 'd<rank>')."""
    ranx = pytest.importorskip("ranx")
    # Strictly decreasing scores, so ranx's own sort reproduces our order without ties.
    run = ranx.Run(
        {
            qid: {f"d{rank}": float(len(labels) - rank) for rank in range(len(labels))}
            for qid, labels in ranked.items()
        }
    )
    ranx_qrels = ranx.Qrels(qrels)
    ranx.evaluate(ranx_qrels, run, metric)
    return dict(run.scores[metric])


def _qrels(ranked: dict[str, list[int]], relevance) -> dict[str, dict[str, int]]:
    """Qrels with the given per-item relevance; ranx ignores 0, so only positive ones are kept."""
    return {
        qid: {f"d{rank}": rel for rank, rel in enumerate(relevance(labels)) if rel > 0}
        for qid, labels in ranked.items()
    }


@against_ranx
@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize(("gain", "ranx_name"), [("exponential", "ndcg_burges"), ("linear", "ndcg")])
def test_ndcg_agrees_with_ranx(k: int, gain: str, ranx_name: str) -> None:
    # ranx "ndcg" is Järvelin's linear gain, "ndcg_burges" is 2^rel - 1; both 1/log2(rank+1).
    ranked = _random_requests(seed=k)
    # ranx scores an all-zero request 0 where we say "undefined", so compare defined ones only.
    defined = {qid: labels for qid, labels in ranked.items() if max(labels) > 0}
    expected = _ranx_per_query(_qrels(defined, lambda labels: labels), defined, f"{ranx_name}@{k}")
    for qid, labels in ranked.items():
        ours = ndcg_at_k(labels, k, gain=gain)  # type: ignore[arg-type]
        if qid in defined:
            assert ours == pytest.approx(expected[qid], abs=1e-9), qid
        else:
            assert ours is None


@against_ranx
@pytest.mark.parametrize("k", [1, 3, 5, 10])
@pytest.mark.parametrize("threshold", [None, 3])
def test_mrr_and_map_agree_with_ranx(k: int, threshold: int | None) -> None:
    ranked = _random_requests(seed=100 + k)
    defined = {qid: labels for qid, labels in ranked.items() if any(relevant_flags(labels, threshold))}
    # Hand ranx binary relevance computed by our rule (max label, or label >= threshold), so both
    # libraries agree on which items are relevant and the metric arithmetic is what is compared.
    qrels = _qrels(defined, lambda labels: [int(flag) for flag in relevant_flags(labels, threshold)])
    ranx_mrr = _ranx_per_query(qrels, defined, f"mrr@{k}")
    ranx_map = _ranx_per_query(qrels, defined, f"map@{k}")
    for qid, labels in ranked.items():
        mrr = mrr_at_k(labels, k, threshold)
        ap = average_precision_at_k(labels, k, threshold)
        if qid not in defined:
            assert mrr is None and ap is None
            continue
        assert mrr == pytest.approx(ranx_mrr[qid], abs=1e-9), qid
        # ranx divides AP@k by the number of relevant items R; we divide by min(k, R).
        n_relevant = len(qrels[qid])
        assert ap * min(k, n_relevant) / n_relevant == pytest.approx(ranx_map[qid], abs=1e-9), qid


@against_ranx
def test_mrr_threshold_agrees_with_ranx_relevance_level() -> None:
    # Independent of our relevance rule: ranx's own "-l3" level (label >= 3) on graded qrels.
    ranked = _random_requests(seed=7)
    defined = {qid: labels for qid, labels in ranked.items() if max(labels) >= 3}
    expected = _ranx_per_query(_qrels(defined, lambda labels: labels), defined, "mrr@5-l3")
    for qid, labels in defined.items():
        assert mrr_at_k(labels, 5, threshold=3) == pytest.approx(expected[qid], abs=1e-9), qid


@against_ranx
def test_map_over_the_whole_list_equals_ranx_exactly() -> None:
    # With k >= every list length, min(k, R) = R, so no rescaling is needed.
    ranked = _random_requests(seed=11)
    defined = {qid: labels for qid, labels in ranked.items() if max(labels) > 0}
    qrels = _qrels(defined, lambda labels: [int(flag) for flag in relevant_flags(labels)])
    expected = _ranx_per_query(qrels, defined, "map@12")
    for qid, labels in defined.items():
        assert average_precision_at_k(labels, 12) == pytest.approx(expected[qid], abs=1e-9), qid


def test_paired_bootstrap_of_equal_shifted_and_noisy_rows() -> None:
    from llm4pr.evaluation.significance import paired_bootstrap

    base = [0.2, 0.5, 0.9, 0.4, None, 0.7]
    same = paired_bootstrap(base, base)
    assert (same.mean, same.low, same.high, same.n) == (0.0, 0.0, 0.0, 5)  # the undefined request is left out
    shifted = paired_bootstrap([None if v is None else v + 0.1 for v in base], base)
    assert shifted.mean == pytest.approx(0.1) and shifted.low == pytest.approx(0.1) and shifted.high == pytest.approx(0.1)
    rng = random.Random(0)
    b = [rng.random() for _ in range(400)]
    better = [v + 0.05 + rng.gauss(0, 0.2) for v in b]
    found = paired_bootstrap(better, b)
    assert 0 < found.low < found.mean < found.high and found.high - found.low < 0.1
    assert paired_bootstrap(better, b) == found  # seeded: the same interval every time
    tie = paired_bootstrap([v + rng.gauss(0, 0.2) for v in b], b)
    assert tie.low < 0 < tie.high
    with pytest.raises(ValueError, match="same requests"):
        paired_bootstrap(base, base[:3])
    with pytest.raises(ValueError, match="no request"):
        paired_bootstrap([None, 0.5], [0.5, None])
