"""The score ensemble: the mean of the members' standardised scores, members that fail left out,
and `llm4pr rank` with several saved rankers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from llm4pr.baselines import build_baseline
from llm4pr.cli import main
from llm4pr.data.jsonl import read_requests, read_run
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.rankers.base import Mode, fallback_result
from llm4pr.rankers.ensemble import ScoreEnsemble, standardised
from tests.toy import TOY_SCHEMA, toy_requests, write_toy_data


class Fixed:
    """A member that scores every request's candidates with the given values (in request order)."""

    name = "fixed"

    def __init__(self, values: Sequence[float] | None, schema: FeatureSchema | None = TOY_SCHEMA, fail: bool = False) -> None:
        self.values, self._schema, self.fail = values, schema, fail
        self.modes: list[Mode | None] = []

    @property
    def schema(self) -> FeatureSchema | None:
        return self._schema

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        self.modes.append(mode)
        if self.fail:
            return [fallback_result(r, "model error") for r in requests]
        out = []
        for r in requests:
            scores = None if self.values is None else list(self.values)
            out.append(RankResult(request_id=r.request_id, ranking=r.candidate_ids, scores=scores))
        return out


@pytest.fixture
def request_() -> PostRankRequest:
    return toy_requests(1, n_candidates=4)[0]


def test_the_mean_of_standardised_scores_decides_whatever_the_scales(request_: PostRankRequest) -> None:
    ids = request_.candidate_ids
    big = Fixed([100.0, 300.0, 200.0, 0.0])  # z: -0.45, 1.34, 0.45, -1.34
    small = Fixed([0.1, 0.4, 0.2, 0.3])  # z: -1.34, 1.34, -0.45, 0.45; alone each ranks otherwise
    (result,) = ScoreEnsemble([big, small]).rank([request_])
    expected = (standardised(request_, big.rank([request_])[0]) + standardised(request_, small.rank([request_])[0])) / 2
    assert result.ranking == [ids[i] for i in np.argsort(-expected, kind="stable")] == [ids[1], ids[2], ids[3], ids[0]]
    assert result.scores == pytest.approx(sorted(expected, reverse=True))
    assert big.modes[0] == small.modes[0] == "first_token"  # members rank in first_token mode
    assert result.mode == "ensemble of 2 (2 scored)" and not result.fallback


def test_members_that_fail_are_left_out_and_none_left_falls_back(request_: PostRankRequest) -> None:
    ids = request_.candidate_ids
    scored = Fixed([1.0, 3.0, 2.0, 0.0])
    (result,) = ScoreEnsemble([scored, Fixed(None, fail=True), Fixed(None)]).rank([request_])
    assert result.ranking == [ids[1], ids[2], ids[0], ids[3]] and result.mode == "ensemble of 3 (1 scored)"
    (result,) = ScoreEnsemble([Fixed(None, fail=True), Fixed(None)]).rank([request_])
    assert result.fallback and result.ranking == ids
    assert "no member of the ensemble scored the request (model error; no scores)" in (result.error or "")
    (result,) = ScoreEnsemble([Fixed([float("nan")] * 4), Fixed([2.0, 2.0, 2.0, 2.0])]).rank([request_])
    assert result.ranking == ids and result.mode == "ensemble of 2 (1 scored)"  # NaN scores do not count; equal ones keep the order


def test_an_ensemble_is_checked_when_built_and_ranks_by_scores_only(request_: PostRankRequest) -> None:
    with pytest.raises(ValueError, match="at least 2 rankers, got 1"):
        ScoreEnsemble([Fixed([1.0])])
    other = TOY_SCHEMA.model_copy(update={"features": TOY_SCHEMA.features[:1]})
    with pytest.raises(ValueError, match="different feature schemas"):
        ScoreEnsemble([Fixed([1.0]), Fixed([1.0], schema=other)])
    with pytest.raises(ValueError, match="mode 'first_token', not 'generate'"):
        ScoreEnsemble([Fixed([1.0] * 4), Fixed([1.0] * 4)]).rank([request_], mode="generate")


def test_rank_with_several_saved_rankers_writes_the_ensembles_ranking(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_toy_data(tmp_path / "data", n_train=60, n_valid=10)
    folders = []
    for name, params in (("item_quality", ["--set", "feature=quality"]), ("mf", ["--set", "factors=4", "--set", "epochs=20"])):
        folders.append(tmp_path / name)
        assert main(["fit-baseline", "--baseline", name, "--data", str(data), "--out", str(folders[-1]), *params]) == 0
    out = tmp_path / "run.jsonl"
    assert main(["rank", "--checkpoint", *map(str, folders), "--input", str(data / "test.jsonl"), "--output", str(out)]) == 0
    assert "(0 fallbacks)" in capsys.readouterr().out
    requests = read_requests(data / "test.jsonl", TOY_SCHEMA)
    members = [build_baseline("item_quality", feature="quality").fit(requests, TOY_SCHEMA)]
    members.append(build_baseline("mf", factors=4, epochs=20).fit(read_requests(data / "train.jsonl", TOY_SCHEMA), TOY_SCHEMA, seed=0))
    expected = ScoreEnsemble(members).rank(requests)
    assert [r.ranking for r in read_run(out)] == [r.ranking for r in expected]
    assert main(["rank", "--engine", "ray", "--checkpoint", *map(str, folders), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "r")]) == 2
    assert "--engine ray ranks with one checkpoint" in capsys.readouterr().err
    assert main(["rank", "--checkpoint", str(folders[0]), str(tmp_path / "missing"), "--input", str(data / "test.jsonl"), "--output", str(out)]) == 2
    assert "missing: no such folder" in capsys.readouterr().err
