"""Explanations (issue 43): the library's attributions, the faithfulness check, the API flag and
the CLI. Tiny random models and the toy data: the numbers mean nothing, their sums and shapes do."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from llm4pr.baselines import ItemQualityRanker, LambdaMARTRanker, MatrixFactorisationRanker
from llm4pr.cli import main
from llm4pr.data.explanations import Explanation
from llm4pr.data.jsonl import write_jsonl
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.rankers.base import InitialOrderRanker
from llm4pr.rankers.explanation import explain, render_text, with_missing
from llm4pr.rankers.faithfulness import faithfulness
from llm4pr.serving import ServingSettings, create_app
from tests.tiny import make_model
from tests.toy import TOY_SCHEMA, toy_requests

ITEM_FIELDS = {"(id)", "title", "genres", "numerical: quality", "vec"}
USER_FIELDS = {"(id)", "gender", "favourite", "numerical: age"}
SCHEMA_NAMES = {spec.name for spec in TOY_SCHEMA.features}


@pytest.fixture(scope="module")
def llm_ranker() -> LLM4PRRanker:
    """A tiny model with every direct score path, their weights random (they start at zero)."""
    model, builder = make_model(candidate_prior=True, position_prior=True)
    with torch.no_grad():
        torch.manual_seed(1)
        model.candidate_prior.weight.normal_(std=0.5)  # type: ignore[union-attr]
        model.position_prior.normal_(std=0.5)  # type: ignore[union-attr]
    return LLM4PRRanker(model, builder, mode="first_token", batch_size=4)


@pytest.fixture(scope="module")
def lambdamart() -> LambdaMARTRanker:
    return LambdaMARTRanker(n_estimators=20, min_data_in_leaf=1, n_jobs=1, text_encoder="hashing", text_dim=8).fit(toy_requests(40, seed=1), TOY_SCHEMA)


def _checked_positions(request: PostRankRequest, result: RankResult) -> Explanation:
    explanation = result.explanations
    assert explanation is not None
    n = len(request.candidates)
    assert [c.id for c in explanation.candidates] == result.ranking
    assert sorted(c.position_before for c in explanation.candidates) == list(range(1, n + 1))
    assert [c.position_after for c in explanation.candidates] == list(range(1, n + 1))
    for candidate in explanation.candidates:
        assert request.candidate_ids[candidate.position_before - 1] == candidate.id
    return explanation


# --- LLM4PR ---------------------------------------------------------------------------------------


def test_llm4pr_attention_names_positions_and_logit_split(llm_ranker: LLM4PRRanker) -> None:
    requests = toy_requests(3, seed=5)
    results = llm_ranker.explain(requests)
    assert [r.ranking for r in results] == [r.ranking for r in llm_ranker.rank(requests)]  # explaining changes no ranking
    for request, result in zip(requests, results, strict=True):
        explanation = _checked_positions(request, result)
        user = explanation.user["qia_attention"]
        assert {f.name for f in user.fields} == USER_FIELDS and sum(f.value for f in user.fields) == pytest.approx(1.0, abs=1e-5)
        for candidate in explanation.candidates:
            attention = candidate.attributions["qia_attention"]
            assert {f.name for f in attention.fields} == ITEM_FIELDS
            assert all(set(f.features) <= SCHEMA_NAMES for f in attention.fields)
            assert sum(f.value for f in attention.fields) == pytest.approx(1.0, abs=1e-5)
            assert all(f.value >= 0 for f in attention.fields)
            terms = candidate.attributions["identifier_logit"].terms
            assert set(terms) == {"llm", "candidate_prior", "position_prior"} and terms["candidate_prior"] != 0.0
            assert candidate.score is not None and sum(terms.values()) == pytest.approx(candidate.score, abs=1e-4)
        assert any("id" in note for note in explanation.not_attributed)


def test_llm4pr_occlusion_sets_each_field_missing(llm_ranker: LLM4PRRanker) -> None:
    [request] = toy_requests(1, seed=6)
    [result] = llm_ranker.explain([request], occlusion=True)
    [masked] = llm_ranker.rank([with_missing(request, "item", ["title"])], mode="first_token")
    assert result.explanations is not None and result.scores is not None
    for candidate in result.explanations.candidates:
        occlusion = candidate.attributions["occlusion"]
        names = {(f.owner, f.name) for f in occlusion.fields}
        assert names == {("item", n) for n in ITEM_FIELDS - {"(id)"}} | {("user", n) for n in USER_FIELDS - {"(id)"}}
        title = next(f for f in occlusion.fields if f.name == "title")
        masked_score = masked.scores[masked.ranking.index(candidate.id)]  # type: ignore[index]
        assert title.value == pytest.approx(candidate.score - masked_score, abs=1e-4)  # type: ignore[operator]


def test_llm4pr_mlp_adapter_and_generate_mode_say_what_is_not_available() -> None:
    model, builder = make_model(adapter="mlp")
    ranker = LLM4PRRanker(model, builder, window=3, stride=1)
    [short, long] = toy_requests(1, n_candidates=3, seed=7) + toy_requests(1, n_candidates=5, seed=8)
    results = ranker.explain([short, long], mode="generate")
    for request, result in zip([short, long], results, strict=True):
        explanation = _checked_positions(request, result)
        assert explanation.user["qia_attention"].available is False and "mlp" in (explanation.user["qia_attention"].reason or "")
        assert all(c.score is None for c in explanation.candidates)
    assert results[0].explanations.candidates[0].attributions["identifier_logit"].available  # type: ignore[union-attr]
    assert "window" in (results[1].explanations.candidates[0].attributions["identifier_logit"].reason or "")  # type: ignore[union-attr]
    assert any("generate" in note for note in results[0].explanations.not_attributed)  # type: ignore[union-attr]


# --- baselines ------------------------------------------------------------------------------------


def test_lambdamart_contributions_and_bias_sum_to_the_raw_score(lambdamart: LambdaMARTRanker) -> None:
    requests = toy_requests(3, seed=3)
    raw = lambdamart.booster.predict(np.concatenate(lambdamart._features(requests)))
    results = lambdamart.explain(requests)
    row = 0
    for request, result in zip(requests, results, strict=True):
        explanation = _checked_positions(request, result)
        by_id = {c.id: c for c in explanation.candidates}
        for candidate in request.candidates:
            attribution = by_id[candidate.id].attributions["lightgbm_contributions"]
            total = sum(f.value for f in attribution.fields) + attribution.terms["bias"]
            assert total == pytest.approx(raw[row], abs=1e-9) and by_id[candidate.id].score == pytest.approx(raw[row], abs=1e-9)
            names = [f.name for f in attribution.fields]
            assert len(names) == len(set(names))
            assert {"quality", "age", "history summary", "history cross: genres", "query match: title"} <= set(names)
            row += 1
    groups = lambdamart.featuriser.column_groups()  # type: ignore[union-attr]
    assert len(groups) == lambdamart.featuriser.dim  # type: ignore[union-attr]


def test_mf_terms_sum_to_the_score_and_others_say_not_available() -> None:
    train, test = toy_requests(30, seed=1), toy_requests(2, seed=1)
    mf = MatrixFactorisationRanker(factors=4, epochs=5).fit(train, TOY_SCHEMA)
    for result in mf.explain(test):
        for candidate in result.explanations.candidates:  # type: ignore[union-attr]
            assert sum(candidate.attributions["mf_terms"].terms.values()) == pytest.approx(candidate.score)
    [initial] = explain(InitialOrderRanker(), test[:1])
    assert all(not c.attributions["attribution"].available for c in initial.explanations.candidates)  # type: ignore[union-attr]


# --- faithfulness ---------------------------------------------------------------------------------


def test_faithfulness_on_a_ranker_that_reads_one_feature() -> None:
    """Item quality scores by `quality` alone: masking it moves the score from q to the request's
    lowest other value minus 1; masking any other field moves nothing."""
    requests = [r for r in toy_requests(6, seed=4) if all(c.features["quality"] > 0 for c in r.candidates)]
    ranker = ItemQualityRanker("quality").fit(requests, TOY_SCHEMA)
    expected = []
    for request in requests:
        qualities = [c.features["quality"] for c in request.candidates]
        expected += [abs(q - (min(qualities[:i] + qualities[i + 1 :]) - 1.0)) for i, q in enumerate(qualities)]
    report = faithfulness(ranker, requests)
    assert report == {
        "feature_value": {
            "candidates": len(expected),
            "skipped": 0,
            "mean_abs_change_top": pytest.approx(sum(expected) / len(expected)),
            "mean_abs_change_bottom": 0.0,
            "share_top_greater": sum(e > 0 for e in expected) / len(expected),
        }
    }


def test_faithfulness_runs_on_the_tiny_llm(llm_ranker: LLM4PRRanker) -> None:
    report = faithfulness(llm_ranker, toy_requests(2, seed=9), occlusion=True)
    assert set(report) == {"qia_attention", "occlusion"}
    for entry in report.values():
        assert entry["candidates"] == 10 and entry["skipped"] == 0
        assert entry["mean_abs_change_top"] >= 0 and 0 <= entry["share_top_greater"] <= 1


def test_faithfulness_script_writes_json_with_provenance(lambdamart: LambdaMARTRanker, tmp_path: Path) -> None:
    from tests.scripts import load_script

    lambdamart.save(tmp_path / "lm")
    write_jsonl(tmp_path / "valid.jsonl", toy_requests(3, seed=2))
    report = load_script("faithfulness").run(tmp_path / "lm", tmp_path / "valid.jsonl", tmp_path / "out.json", requests=2)
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["requests"] == 2 and set(written["methods"]) == {"lightgbm_contributions"} and "provenance" in written
    assert written["methods"] == report["methods"]


# --- API ------------------------------------------------------------------------------------------


def _client(ranker: object) -> TestClient:
    return TestClient(create_app(ranker, ServingSettings(token_env="LLM4PR_TEST_TOKEN", deadline_ms=30_000)), raise_server_exceptions=True)


def test_api_explain_flag(llm_ranker: LLM4PRRanker) -> None:
    body = {**toy_requests(1, seed=10)[0].model_dump(mode="json", exclude_none=True), "request_id": "e1"}
    with _client(llm_ranker) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        plain = client.post("/v1/post-rank", params={"mode": "first_token"}, json=body)
        assert set(plain.json()) == {"request_id", "ranking", "scores", "mode", "fallback", "latency_ms"}
        explained = client.post("/v1/post-rank", params={"mode": "first_token", "explain": "true"}, json=[body])
        [answer] = explained.json()
        assert answer["ranking"] == plain.json()["ranking"] and answer["scores"] == plain.json()["scores"]
        explanation = Explanation.model_validate(answer["explanations"])
        assert [c.id for c in explanation.candidates] == answer["ranking"]
        assert {f["name"] for f in answer["explanations"]["candidates"][0]["attributions"]["qia_attention"]["fields"]} == ITEM_FIELDS
        bad = client.post("/v1/post-rank", params={"explain": "true"}, json={**body, "candidates": [{"id": "x", "features": {"quality": "high"}}]})
        assert bad.status_code == 422 and "e1" in bad.json()["error"]["message"] and "quality" in bad.json()["error"]["message"]
        assert client.post("/v1/post-rank", params={"explain": "maybe"}, json=body).status_code == 422


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_rank_explain_and_explain_command(lambdamart: LambdaMARTRanker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lambdamart.save(tmp_path / "lm")
    requests = toy_requests(2, seed=11)
    write_jsonl(tmp_path / "in.jsonl", requests)
    assert main(["rank", "--checkpoint", str(tmp_path / "lm"), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "run.jsonl"), "--explain"]) == 0
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert [Explanation.model_validate(line["explanations"]).candidates[0].id for line in lines] == [line["ranking"][0] for line in lines]
    assert main(["rank", "--checkpoint", str(tmp_path / "lm"), "--input", str(tmp_path / "in.jsonl"), "--output", str(tmp_path / "plain.jsonl")]) == 0
    assert "explanations" not in (tmp_path / "plain.jsonl").read_text()
    capsys.readouterr()
    assert main(["explain", "--checkpoint", str(tmp_path / "lm"), "--input", str(tmp_path / "in.jsonl"), "--request-id", "q1"]) == 0
    printed = capsys.readouterr().out
    assert all(candidate.id in printed for candidate in requests[1].candidates)
    assert "lightgbm_contributions" in printed and "quality" in printed and "history summary" in printed
    assert main(["explain", "--checkpoint", str(tmp_path / "lm"), "--input", str(tmp_path / "in.jsonl"), "--request-id", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_render_text_of_the_llm(llm_ranker: LLM4PRRanker) -> None:
    [request] = toy_requests(1, seed=12)
    [result] = llm_ranker.explain([request])
    text = render_text(result)
    assert all(c.id in text for c in request.candidates) and "numerical: quality" in text and "candidate_prior" in text
