"""Rerank calls longer than the model's window: sliding windows, every document once, monotone
scores derived from the final position, Cohere's `top_n` and `return_documents`, the 413 of
`max_candidates`, and `scripts/bench_rerank.py`. A tiny random model: fast, the order arbitrary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cohere
import pytest
from cohere.core.api_error import ApiError as CohereApiError

from llm4pr.data.rerank import rerank_request
from llm4pr.features.encoders import FeatureStats
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.checkpoint import save_checkpoint
from llm4pr.model.config import ModelConfig
from llm4pr.model.factory import build_model
from llm4pr.serving import create_app
from llm4pr.serving.schemas import position_scores
from tests.scripts import load_script
from tests.test_serving import TEXT_SCHEMA, TOKEN_ENV, running_server, serving, settings_for_tests, text_requests
from tests.tiny import tiny_model

N = 100  # documents: five windows' worth at the default window of 20 (stride 10: 9 passes)


def documents(n: int) -> list[str]:
    return [f"doc {i} {'films' if i % 7 == 0 else 'bees'}" for i in range(n)]


@pytest.fixture(scope="module")
def long_ranker() -> LLM4PRRanker:
    """A tiny model that takes rerank calls, with the default window (20) and stride (10)."""
    model, builder = tiny_model(TEXT_SCHEMA, text_requests(5))
    return LLM4PRRanker(model, builder, batch_size=8)


def expected_order(ranker: LLM4PRRanker, query: str, docs: list[str]) -> list[int]:
    """The sliding-window order of /v1/post-rank for the same documents (first_token)."""
    [result] = ranker.rank([rerank_request("direct", query, docs, "passage")], mode="first_token")
    assert not result.fallback and result.scores is None  # several windows: no scores that compare
    return [int(i) for i in result.ranking]


def assert_monotone(scores: list[float]) -> None:
    assert all(a >= b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert all(0 < s <= 1 for s in scores)


def test_position_scores_sum_to_one_and_decrease() -> None:
    assert position_scores(1) == [1.0]
    for n in (2, 21, 1000):
        scores = position_scores(n)
        assert sum(scores) == pytest.approx(1.0) and all(a > b for a, b in zip(scores, scores[1:], strict=False))


def test_cohere_sdks_rerank_100_documents(long_ranker: LLM4PRRanker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    docs = documents(N)
    expected = expected_order(long_ranker, "films", docs)
    with running_server(create_app(long_ranker, settings_for_tests())) as url:
        v2 = cohere.ClientV2(api_key="s3cret", base_url=url, max_retries=0)
        v1 = cohere.Client(api_key="s3cret", base_url=url, max_retries=0)
        full = v2.rerank(model="llm4pr", query="films", documents=docs)
        top = v2.rerank(model="llm4pr", query="films", documents=docs, top_n=7)
        more = v2.rerank(model="llm4pr", query="films", documents=docs, top_n=10 * N)
        old = v1.rerank(query="films", documents=docs, top_n=5, return_documents=True)
    indices = [r.index for r in full.results]
    assert sorted(indices) == list(range(N)) and indices == expected  # every document exactly once, the windows' order
    scores = [r.relevance_score for r in full.results]
    assert_monotone(scores)
    assert scores == pytest.approx(position_scores(N)) and sum(scores) == pytest.approx(1.0)
    assert full.meta is not None and full.meta.warnings is None and getattr(full.meta, "relevance") == "position"
    assert [(r.index, r.relevance_score) for r in top.results] == [(r.index, r.relevance_score) for r in full.results[:7]]
    assert len(more.results) == N  # top_n over the count: all of them
    assert [r.index for r in old.results] == expected[:5]
    assert [r.document.text for r in old.results] == [docs[i] for i in expected[:5]]  # the original index's text
    assert_monotone([r.relevance_score for r in old.results])


def test_one_over_the_limit_is_a_413_naming_the_limit_and_the_count(long_ranker: LLM4PRRanker) -> None:
    with running_server(create_app(long_ranker, settings_for_tests(max_candidates=N))) as url:
        v2 = cohere.ClientV2(api_key="any", base_url=url, max_retries=0)
        assert len(v2.rerank(model="m", query="q", documents=documents(N)).results) == N  # at the limit: fine
        with pytest.raises(CohereApiError) as refused:
            v2.rerank(model="m", query="q", documents=documents(N + 1))
        assert refused.value.status_code == 413
        assert f"documents: {N + 1} exceed the limit of {N} (the server's max_candidates)" in json.dumps(refused.value.body)
    with serving(long_ranker, max_candidates=N) as client:
        for endpoint in ("/v1/rerank", "/v2/rerank"):
            response = client.post(endpoint, json={"model": "m", "query": "q", "documents": documents(N + 1)})
            assert response.status_code == 413 and f"{N + 1} exceed the limit of {N}" in response.json()["error"]["message"]
        request = rerank_request("long", "q", documents(N + 1), "passage").model_dump(mode="json", exclude_none=True)
        response = client.post("/v1/post-rank", json=request)
        assert response.status_code == 413 and f"candidates: {N + 1} exceed the limit of {N}" in response.json()["error"]["message"]
        request["candidates"] = request["candidates"][:N]
        answer = client.post("/v1/post-rank", params={"mode": "first_token"}, json=request).json()
        assert sorted(answer["ranking"], key=int) == [str(i) for i in range(N)] and answer["fallback"] is False


@pytest.mark.parametrize("window, stride", [(6, 3), (5, 4)])
def test_every_window_setting_returns_every_document_once(window: int, stride: int) -> None:
    model, builder = tiny_model(TEXT_SCHEMA, text_requests(5))
    ranker = LLM4PRRanker(model, builder, window=window, stride=stride)
    with serving(ranker) as client:
        for n in (window, window + 1, 23):
            answer = client.post("/v2/rerank", json={"model": "m", "query": "films", "documents": documents(n)}).json()
            assert sorted(r["index"] for r in answer["results"]) == list(range(n)), answer
            assert_monotone([r["relevance_score"] for r in answer["results"]])
            assert answer["meta"]["relevance"] == ("softmax" if n <= window else "position")


def test_the_in_call_bm25_estimate_is_computed_once_with_the_same_ranking() -> None:
    """A model with `first_stage_bm25` estimates the missing score over ALL the call's documents;
    computing it once per long list (not per window) must not change the ranking."""
    model, builder = tiny_model(TEXT_SCHEMA, text_requests(5), first_stage_bm25="bm25")
    once = LLM4PRRanker(model, builder)
    per_window = LLM4PRRanker(model, builder)
    per_window._estimate = None  # the prompter then estimates it again for every window
    requests = [rerank_request(f"r{n}", "films about bees", documents(n), "passage") for n in (12, 45)]
    # the estimate is applied before decoding, whatever the mode: first_token is the fast one to compare
    assert [r.ranking for r in once.rank(requests, mode="first_token")] == [r.ranking for r in per_window.rank(requests, mode="first_token")]


def test_bench_rerank_script_times_each_size(tiny_backbone_dir: Path, tmp_path: Path) -> None:
    config = ModelConfig(backbone=str(tiny_backbone_dir), dtype="float32", text_encoder="hashing", qia_hidden_dim=32, categorical_dim=8)
    model, _ = build_model(config, TEXT_SCHEMA, FeatureStats.fit(TEXT_SCHEMA, text_requests(5)))
    save_checkpoint(model, tmp_path / "run" / "model")
    bench = load_script("bench_rerank")
    report: dict[str, Any] = bench.run(
        tmp_path / "run", [3, 25], tmp_path / "bench.json", repeats=2, warmup=0, inference=InferenceConfig(window=6, stride=3)
    )
    written = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    assert written == report and "provenance" in written and written["window"] == 6
    assert [(row["documents"], row["windows"], row["calls"], row["fallbacks"]) for row in written["sizes"]] == [(3, 1, 2, 0), (25, 8, 2, 0)]  # ends 25, 22, ..., 4
    assert all(row["latency_ms"]["min"] > 0 for row in written["sizes"])
