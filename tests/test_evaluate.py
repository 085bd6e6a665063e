"""Run checking, the ranking-stage baseline, run evaluation and the printed table."""

from __future__ import annotations

import math

import pytest

from llm4pr.data.errors import DataError
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.evaluation.evaluate import check_run, evaluate_run, format_report_table
from llm4pr.rankers.base import InitialOrderRanker
from tests.scripts import load_script
from tests.toy import toy_requests


def _request(request_id: str, labels: dict[str, float | None]) -> PostRankRequest:
    return PostRankRequest.model_validate(
        {
            "request_id": request_id,
            "query": "what to watch",
            "user": {"id": "u1"},
            "candidates": [
                {"id": item_id} | ({} if label is None else {"label": label})
                for item_id, label in labels.items()
            ],
        }
    )


@pytest.fixture()
def requests() -> list[PostRankRequest]:
    return [
        _request("r1", {"a": 0, "b": 3, "c": 1}),
        _request("r2", {"x": 2, "y": 0}),
        _request("r3", {"p": 0, "q": 0}),
    ]


def _run(**rankings: list[str]) -> list[RankResult]:
    return [RankResult(request_id=rid, ranking=ranking) for rid, ranking in rankings.items()]


def test_a_valid_run_passes(requests: list[PostRankRequest]) -> None:
    check_run(requests, _run(r1=["b", "c", "a"], r2=["y", "x"], r3=["q", "p"]))


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        (_run(r1=["b", "c", "a"], r2=["y", "x"]), r"request 'r3': missing from the run"),
        (_run(r1=["b", "b", "a"], r2=["y", "x"], r3=["q", "p"]), r"request 'r1': .*duplicated ids \['b'\]"),
        (_run(r1=["b", "c", "a"], r2=["y", "x", "z"], r3=["q", "p"]), r"request 'r2': .*unknown ids \['z'\]"),
        (_run(r1=["b", "a"], r2=["y", "x"], r3=["q", "p"]), r"request 'r1': .*missing ids \['c'\]"),
        (
            _run(r1=["b", "c", "a"], r2=["y", "x"], r3=["q", "p"], r9=["a"]),
            r"request 'r9': is in the run but not in the data",
        ),
    ],
    ids=["missing-request", "duplicate-id", "unknown-id", "missing-id", "extra-request"],
)
def test_check_run_names_the_request_and_the_problem(
    requests: list[PostRankRequest], run: list[RankResult], expected: str
) -> None:
    with pytest.raises(DataError, match=expected) as info:
        check_run(requests, run)
    assert "1 problem(s)" in str(info.value)


def test_check_run_reports_a_request_answered_twice(requests: list[PostRankRequest]) -> None:
    run = _run(r1=["b", "c", "a"], r2=["y", "x"], r3=["q", "p"]) + _run(r2=["x", "y"])
    with pytest.raises(DataError, match="request 'r2': appears 2 times in the run"):
        check_run(requests, run)


def test_check_run_lists_at_most_20_requests_and_counts_all() -> None:
    many = [_request(f"r{i}", {"a": 1}) for i in range(25)]
    with pytest.raises(DataError) as info:
        check_run(many, [])
    message = str(info.value)
    assert "25 problem(s)" in message
    assert "request 'r19': missing" in message and "request 'r20'" not in message
    assert "... and 5 more" in message


def test_initial_run_is_the_ranking_stage_order(requests: list[PostRankRequest]) -> None:
    run = InitialOrderRanker().rank(requests)
    assert [(r.request_id, r.ranking) for r in run] == [
        ("r1", ["a", "b", "c"]),
        ("r2", ["x", "y"]),
        ("r3", ["p", "q"]),
    ]
    check_run(requests, run)


def test_evaluate_run_on_a_tiny_dataset(requests: list[PostRankRequest]) -> None:
    # Ranked labels: r1 [1, 3, 0] (a poor order), r2 [2, 0] (ideal), r3 [0, 0] (undefined).
    run = _run(r1=["c", "b", "a"], r2=["x", "y"], r3=["p", "q"])
    report = evaluate_run(requests, run, ks=(1, 3))
    assert set(report) == {"metrics", "n_requests", "n_undefined", "conventions"}
    assert report["n_requests"] == 3
    assert report["n_undefined"] == {name: 1 for name in report["metrics"]}
    # r1 exponential gains [1, 7, 0]: NDCG@1 = 1/7, NDCG@3 = (1 + 7/log2 3) / (7 + 1/log2 3); r2 = 1.
    assert report["metrics"]["ndcg@1"] == pytest.approx((1 / 7 + 1) / 2)
    r1_ndcg3 = (1 + 7 / math.log2(3)) / (7 + 1 / math.log2(3))
    assert report["metrics"]["ndcg@3"] == pytest.approx((r1_ndcg3 + 1) / 2)
    # Max-label rule: r1's label 3 is at rank 2, r2's label 2 at rank 1.
    assert report["metrics"]["mrr@1"] == pytest.approx(0.5)
    assert report["metrics"]["mrr@3"] == pytest.approx(0.75)
    assert report["metrics"]["map@3"] == pytest.approx(0.75)
    assert report["conventions"]["ks"] == [1, 3]

    linear = evaluate_run(requests, run, ks=(1,), gain="linear", threshold=1, per_request=True)
    assert linear["metrics"]["ndcg@1"] == pytest.approx((1 / 3 + 1) / 2)
    # Threshold 1: r1's first relevant item (label 1) is at rank 1.
    assert linear["metrics"]["mrr@1"] == 1.0
    assert linear["per_request"]["r3"] == {"ndcg@1": None, "mrr@1": None, "map@1": None}


def test_evaluate_run_requires_every_label(requests: list[PostRankRequest]) -> None:
    unlabelled = requests + [_request("r4", {"m": 1, "n": None})]
    with pytest.raises(DataError, match=r"request 'r4': candidates without label: \['n'\]"):
        evaluate_run(unlabelled, InitialOrderRanker().rank(unlabelled))


def test_evaluate_run_rejects_a_bad_run(requests: list[PostRankRequest]) -> None:
    with pytest.raises(DataError, match="request 'r3': missing from the run"):
        evaluate_run(requests, InitialOrderRanker().rank(requests)[:2])


def test_format_report_table(requests: list[PostRankRequest]) -> None:
    report = evaluate_run(requests, InitialOrderRanker().rank(requests), ks=(3, 5))
    table = format_report_table(report)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "value", "requests"]
    for name in ["ndcg@3", "ndcg@5", "mrr@3", "mrr@5", "map@3", "map@5"]:
        assert any(line.startswith(name) for line in lines)
    assert "2/3" in table  # each metric averages the 2 defined requests out of 3
    assert len({len(line) for line in lines}) == 1  # aligned columns


def test_format_report_table_shows_undefined_metrics_as_na() -> None:
    only_zeros = [_request("z", {"a": 0})]
    table = format_report_table(evaluate_run(only_zeros, InitialOrderRanker().rank(only_zeros), ks=(1,)))
    assert "n/a" in table and "0/1" in table


def test_combine_with_order_spans_the_model_and_the_given_order() -> None:
    script = load_script("combine_with_order")
    requests = toy_requests(4, n_candidates=5, seed=2)
    # The model's scores reverse the given order: its ranking is the given one backwards.
    run = [RankResult(request_id=r.request_id, ranking=r.candidate_ids[::-1], scores=[5.0, 4.0, 3.0, 2.0, 1.0]) for r in requests]
    assert [m.ranking for m in script.mix_with_order(requests, run, 0.0)] == [r.candidate_ids[::-1] for r in requests]
    assert [m.ranking for m in script.mix_with_order(requests, run, 1e6)] == [r.candidate_ids for r in requests]
    unscored = [RankResult(request_id=r.request_id, ranking=r.candidate_ids) for r in requests]
    with pytest.raises(ValueError, match="the run has no scores"):
        script.mix_with_order(requests, unscored, 1.0)
    # A reference run instead of the given order: its scores put the third candidate first
    reference = [RankResult(request_id=r.request_id, ranking=r.candidate_ids, scores=[0.0, 1.0, 9.0, 2.0, 3.0]) for r in requests]
    mixed = script.mix_with_order(requests, run, 1e6, reference)
    assert [m.ranking for m in mixed] == [[r.candidate_ids[i] for i in (2, 4, 3, 1, 0)] for r in requests]
    assert [m.ranking for m in script.mix_with_order(requests, run, 0.0, reference)] == [r.candidate_ids[::-1] for r in requests]
    with pytest.raises(ValueError, match="the reference run has no scores"):
        script.mix_with_order(requests, run, 1.0, unscored)
