"""The HTTP service: validation errors, fallbacks, auth, micro-batching, metrics, rerank, load test.

Most tests use a fake ranker (fast, deterministic: it reverses the ranking-stage order); the
ones about real rankings use a tiny random LLM4PR model built in memory. Every client is built
with `raise_server_exceptions=True`, so a bad input that reached the catch-all 500 handler
would fail the test instead of passing as "some error".
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cohere
import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Message

from llm4pr.baselines import LambdaMARTRanker
from llm4pr.data.jsonl import write_jsonl
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.features.encoders import FeatureStats
from llm4pr.model.checkpoint import save_checkpoint
from llm4pr.model.factory import build_model
from llm4pr.model.config import ModelConfig
from llm4pr.rankers.base import InitialOrderRanker
from llm4pr.serving import ServingSettings, create_app, serve
from llm4pr.serving import app as app_module
from llm4pr.serving.batcher import BatcherUnavailable, MicroBatcher
from llm4pr.serving.loadtest import Sample, judge, run_load, summarize
from llm4pr.serving.loadtest import main as loadtest_main
from llm4pr.data.rerank import rerank_request
from llm4pr.serving.settings import is_loopback_host
from tests.tiny import make_model, tiny_model
from tests.toy import GENRES, TOY_SCHEMA, toy_requests

TOKEN_ENV = "LLM4PR_TEST_TOKEN"  # not the default name, so that a developer's own token cannot leak in


class FakeRanker:
    """Reverses the ranking-stage order (first_token: with descending scores); records every call."""

    name = "fake"

    def __init__(self, schema: FeatureSchema = TOY_SCHEMA, fail: bool = False, garble: bool = False) -> None:
        self.schema = schema
        self.fail = fail
        self.garble = garble
        self.calls: list[tuple[list[str], str | None]] = []

    def rank(self, requests: Sequence[PostRankRequest], *, mode: str | None = None) -> list[RankResult]:
        self.calls.append(([r.request_id for r in requests], mode))
        if self.fail:
            raise RuntimeError("boom")
        results = []
        for request in requests:
            ranking = request.candidate_ids[::-1][: -1 if self.garble else None]
            scores = [float(len(ranking) - i) for i in range(len(ranking))] if mode == "first_token" else None
            results.append(RankResult(request_id=request.request_id, ranking=ranking, scores=scores, mode=mode))
        return results


class RecordingRanker:
    """A real ranker that records the size and mode of every model call (to see the batching)."""

    name = "recording"

    def __init__(self, inner: LLM4PRRanker) -> None:
        self.inner = inner
        self.schema = inner.schema
        self.batches: list[tuple[int, str | None]] = []

    def rank(self, requests: Sequence[PostRankRequest], *, mode: str | None = None) -> list[RankResult]:
        self.batches.append((len(requests), mode))
        return self.inner.rank(requests, mode=mode)


def settings_for_tests(**overrides: Any) -> ServingSettings:
    return ServingSettings(**{"token_env": TOKEN_ENV, "deadline_ms": 30_000, **overrides})


@contextmanager
def serving(ranker: Any, wait_ready: bool = True, **overrides: Any) -> Iterator[TestClient]:
    """A TestClient with the app started (lifespan), after the warm-up request has run."""
    with TestClient(create_app(ranker, settings_for_tests(**overrides)), raise_server_exceptions=True) as client:
        if wait_ready:
            for _ in range(200):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(0.01)
        yield client


@contextmanager
def running_server(app: FastAPI) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert not thread.is_alive()


def request_json(request_id: str = "q1", n_candidates: int = 5, seed: int = 0) -> dict[str, Any]:
    request = toy_requests(1, n_candidates=n_candidates, seed=seed)[0]
    return {**request.model_dump(mode="json", exclude_none=True), "request_id": request_id}


def candidate_ids(body: dict[str, Any]) -> list[str]:
    return [c["id"] for c in body["candidates"]]


def metric(client: TestClient, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


@pytest.fixture(scope="module")
def tiny_ranker() -> LLM4PRRanker:
    model, builder = make_model()
    return LLM4PRRanker(model, builder, batch_size=8)


@pytest.fixture(scope="module")
def fake_client() -> Iterator[TestClient]:
    with serving(FakeRanker(), max_candidates=30, max_body_bytes=50_000, max_string_chars=200, max_requests_per_body=3) as client:
        yield client


# --- the happy path on a real (tiny) model ----------------------------------------------------


def test_post_rank_one_request_and_a_list(tiny_ranker: LLM4PRRanker) -> None:
    with serving(tiny_ranker) as client:
        assert client.get("/readyz").json() == {"status": "ready"}
        one = request_json("a")
        answer = client.post("/v1/post-rank", json=one).json()
        assert answer["request_id"] == "a" and answer["mode"] == "generate"
        assert sorted(answer["ranking"]) == sorted(candidate_ids(one))
        assert answer["fallback"] is False and answer["latency_ms"] > 0 and "scores" not in answer
        expected = tiny_ranker.rank([PostRankRequest.model_validate(one)], mode="generate")[0].ranking
        assert answer["ranking"] == expected

        many = [request_json("b", 4, seed=1), request_json("c", 6, seed=2)]
        answers = client.post("/v1/post-rank", params={"mode": "first_token"}, json=many).json()
        assert [a["request_id"] for a in answers] == ["b", "c"]
        for body, answer in zip(many, answers, strict=True):
            assert sorted(answer["ranking"]) == sorted(candidate_ids(body))
            assert answer["mode"] == "first_token" and len(answer["scores"]) == len(body["candidates"])
            assert answer["scores"] == sorted(answer["scores"], reverse=True)


def test_labels_are_accepted_and_ignored(fake_client: TestClient) -> None:
    body = request_json()
    assert all("label" in c for c in body["candidates"])
    assert fake_client.post("/v1/post-rank", json=body).status_code == 200


_FEATURE_VALUES = {
    "gender": st.sampled_from(["M", "F"]),
    "age": st.floats(0, 120, allow_nan=False),
    "favourite": st.sampled_from(GENRES),
    "title": st.text(max_size=30),
    "genres": st.lists(st.sampled_from(GENRES), max_size=3),
    "quality": st.floats(-1e6, 1e6, allow_nan=False),
    "vec": st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3),
}


def _features(owner: str) -> st.SearchStrategy[dict[str, Any]]:
    names = [spec.name for spec in TOY_SCHEMA.for_owner(owner)]  # type: ignore[arg-type]
    return st.fixed_dictionaries({}, optional={name: _FEATURE_VALUES[name] for name in names})


@st.composite
def valid_requests(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=30, unique=True))
    return {
        "request_id": draw(st.text(min_size=1, max_size=12)),
        "query": draw(st.text(max_size=40)),
        "user": {"id": draw(st.text(min_size=1, max_size=5)), "features": draw(_features("user"))},
        "history": [{"id": str(i), "features": draw(_features("item"))} for i in range(draw(st.integers(0, 3)))],
        "candidates": [{"id": i, "features": draw(_features("item"))} for i in ids],
    }


@pytest.fixture(scope="module")
def tiny_client(tiny_ranker: LLM4PRRanker) -> Iterator[TestClient]:
    with serving(tiny_ranker) as client:
        yield client


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=valid_requests(), mode=st.sampled_from(["generate", "first_token"]))
def test_every_valid_request_gets_a_permutation(tiny_client: TestClient, body: dict[str, Any], mode: str) -> None:
    response = tiny_client.post("/v1/post-rank", params={"mode": mode}, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["request_id"] == body["request_id"]
    assert sorted(answer["ranking"]) == sorted(candidate_ids(body))
    assert answer["fallback"] is False


def test_concurrent_requests_are_batched_and_rank_as_single_ones(tiny_ranker: LLM4PRRanker) -> None:
    recording = RecordingRanker(tiny_ranker)
    bodies = [request_json(f"r{i}", 3 + i % 4, seed=i) for i in range(12)]
    modes = ["generate" if i % 3 else "first_token" for i in range(12)]
    expected = [tiny_ranker.rank([PostRankRequest.model_validate(b)], mode=m)[0].ranking for b, m in zip(bodies, modes, strict=True)]
    answers: list[Any] = [None] * len(bodies)
    with serving(recording, max_batch_size=4, max_wait_ms=300) as client:
        recording.batches.clear()  # forget the warm-up
        barrier = threading.Barrier(len(bodies))

        def send(i: int) -> None:
            barrier.wait()
            answers[i] = client.post("/v1/post-rank", params={"mode": modes[i]}, json=bodies[i]).json()

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert [a["ranking"] for a in answers] == expected
    assert not any(a["fallback"] for a in answers)
    sizes = [size for size, _ in recording.batches]
    assert sum(sizes) == len(bodies) and max(sizes) > 1 and max(sizes) <= 4
    assert {mode for _, mode in recording.batches} == {"generate", "first_token"}


def test_serve_loads_a_checkpoint_and_runs_uvicorn_on_loopback(tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    config = ModelConfig(backbone=str(tiny_backbone_dir), dtype="float32", text_encoder="hashing", qia_hidden_dim=32, categorical_dim=8)
    model, _ = build_model(config, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, toy_requests(10)))
    save_checkpoint(model, tmp_path / "run" / "model")
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs))
    serve(tmp_path / "run", port=8123, settings=settings_for_tests(max_batch_size=3, drain_timeout_s=2.5), inference=InferenceConfig(window=6, stride=3))
    assert (captured["host"], captured["port"], captured["timeout_graceful_shutdown"]) == ("127.0.0.1", 8123, 3)
    ranker = captured["app"].state.service.ranker
    assert (ranker.config.batch_size, ranker.config.window, ranker.config.stride) == (3, 6, 3)
    with TestClient(captured["app"]) as client:
        body = request_json(n_candidates=8)
        answer = client.post("/v1/post-rank", json=body).json()
        assert sorted(answer["ranking"]) == sorted(candidate_ids(body)) and answer["fallback"] is False


def test_serve_answers_with_a_saved_lambdamart_in_every_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    lambdamart = LambdaMARTRanker(n_estimators=20, min_data_in_leaf=1, n_jobs=1, text_encoder="hashing", text_dim=8)
    lambdamart.fit(toy_requests(60, seed=1), TOY_SCHEMA).save(tmp_path / "lambdamart")
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs))
    serve(tmp_path / "lambdamart", settings=settings_for_tests(mode="first_token"), inference=InferenceConfig(quantize="int8"))  # LLM options do not apply
    assert isinstance(captured["app"].state.service.ranker, LambdaMARTRanker)
    bodies = [request_json(f"r{i}", 4 + i, seed=i) for i in range(3)]
    expected = lambdamart.rank([PostRankRequest.model_validate(body) for body in bodies])
    with TestClient(captured["app"], raise_server_exceptions=True) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        assert client.get("/readyz").json() == {"status": "ready"}
        for params in ({}, {"mode": "generate"}, {"mode": "first_token"}):
            answers = client.post("/v1/post-rank", params=params, json=bodies).json()
            assert [a["ranking"] for a in answers] == [r.ranking for r in expected]
            assert [a["scores"] for a in answers] == [r.scores for r in expected]
            assert all(a["mode"] == "lambdamart" and a["fallback"] is False for a in answers)
        bad = client.post("/v1/post-rank", json=_with(bodies[0], "candidates.0.features.quality", "high"))
        assert bad.status_code == 422 and bad.json()["error"]["request_id"] == "r0"


def test_a_ranker_without_a_feature_schema_is_refused() -> None:
    with pytest.raises(ValueError, match="'initial' has none"):
        create_app(InitialOrderRanker())


# --- bad input: 4xx naming the request id and the field, never a 500 ---------------------------


def _with(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `body` with the dotted `path` set (or deleted when value is ...)."""
    body = json.loads(json.dumps(body))
    *parents, last = path.split(".")
    node: Any = body
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if value is ...:
        del node[key]
    else:
        node[key] = value
    return body


GOOD = request_json("bad-1")
BAD_POST_RANK = [
    ("missing field", _with(GOOD, "query", ...), 422, ["query: Field required"]),
    ("unknown field", _with(GOOD, "colour", "red"), 422, ["colour: Extra inputs are not permitted"]),
    ("unknown feature", _with(GOOD, "candidates.0.features.colour", "red"), 422, ["candidates[0]", ".features.colour: unknown item feature"]),
    ("wrong type", _with(GOOD, "user.features.age", "old"), 422, ["user.features.age: expected a number"]),
    ("wrong id type", _with(GOOD, "candidates.1.id", 7), 422, ["candidates.1.id: Input should be a valid string"]),
    ("nan feature", _with(GOOD, "candidates.1.features.quality", math.nan), 422, ["features.quality: expected a finite number, got nan"]),
    ("infinite label", _with(GOOD, "candidates.0.label", math.inf), 422, ["candidates.0.label", "finite"]),
    ("nan embedding", _with(GOOD, "candidates.2.features.vec", [0.0, math.nan, 1.0]), 422, ["features.vec: expected a finite number"]),
    ("empty candidates", _with(GOOD, "candidates", []), 422, ["candidates: List should have at least 1 item"]),
    ("duplicate ids", _with(GOOD, "candidates.1.id", GOOD["candidates"][0]["id"]), 422, ["duplicate candidate id"]),
    ("long string", _with(GOOD, "candidates.3.features.title", "x" * 201), 422, ["candidates.3.features.title: string of 201 characters"]),
    ("long key", _with(GOOD, "user.features." + "k" * 201, 1), 422, ["user.features: a key of 201 characters"]),
    ("huge integer", _with(GOOD, "candidates.0.features.quality", 10**400), 422, ["candidates.0.features.quality: number too large"]),
    ("huge integer label", _with(GOOD, "candidates.1.label", -(10**400)), 422, ["candidates.1.label: number too large"]),
    ("too many candidates", request_json("bad-1", 31, seed=4), 413, ["candidates: 31 exceed the limit of 30"]),
]


@pytest.mark.parametrize("case, body, status, phrases", BAD_POST_RANK, ids=[c[0] for c in BAD_POST_RANK])
def test_bad_requests_name_the_request_and_the_field(fake_client: TestClient, case: str, body: Any, status: int, phrases: list[str]) -> None:
    response = fake_client.post("/v1/post-rank", content=json.dumps(body))  # json.dumps writes NaN/Infinity
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and error["request_id"] == "bad-1"
    assert "request 'bad-1'" in error["message"]
    for phrase in phrases:
        assert phrase in error["message"]


def test_huge_numbers_are_infinite_and_rejected(fake_client: TestClient) -> None:
    text = json.dumps(GOOD).replace(json.dumps(GOOD["candidates"][0]["features"]["quality"]), "1e400", 1)
    error = fake_client.post("/v1/post-rank", content=text).json()["error"]
    assert error["status"] == 422 and "expected a finite number, got inf" in error["message"]


BAD_BODIES = [
    ("malformed json", b'{"request_id": "x",', 400, "body: malformed JSON: Expecting"),
    ("empty body", b"", 400, "body: empty"),
    ("invalid utf-8", b'{"query": "\xff"}', 400, "body: malformed JSON"),
    ("nested too deeply", b"[" * 20_000, 400, "nested too deeply"),
    ("not an object", b'"hello"', 422, "body: expected a JSON object, got string"),
    ("empty list", b"[]", 422, "non-empty list of requests"),
    ("list with a non-object", json.dumps([GOOD, 3]).encode(), 422, "requests.1: expected a JSON object, got number"),
    ("list without ids", json.dumps([_with(GOOD, "request_id", ...)]).encode(), 422, "requests.0: request_id: Field required"),
    ("duplicate request ids", json.dumps([GOOD, GOOD]).encode(), 422, "request_id 'bad-1' appears more than once"),
    ("too many requests", json.dumps([request_json(f"x{i}") for i in range(4)]).encode(), 413, "4 requests exceed the limit of 3"),
    ("body too large", json.dumps(_with(GOOD, "query", "y" * 60_000)).encode(), 413, "exceed the limit of 50000 bytes"),
]


@pytest.mark.parametrize("case, content, status, phrase", BAD_BODIES, ids=[c[0] for c in BAD_BODIES])
def test_bad_bodies(fake_client: TestClient, case: str, content: bytes, status: int, phrase: str) -> None:
    response = fake_client.post("/v1/post-rank", content=content)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]["message"]


def test_chunked_body_over_the_limit_is_refused_while_reading(fake_client: TestClient) -> None:
    chunks = iter([b"[" + b" " * 10_000] * 10)  # no Content-Length: httpx streams it chunked
    response = fake_client.post("/v1/post-rank", content=chunks)
    assert response.status_code == 413
    assert "more than 50000 bytes" in response.json()["error"]["message"]


def test_urllib_gets_the_413_of_a_body_over_the_limit() -> None:
    """urllib sends the whole body before it reads the answer: the server must read it too (up to
    `max_discard_bytes`), or urllib sees a connection reset instead of the 413."""
    body = json.dumps(_with(GOOD, "query", "y" * (11 * 1024 * 1024))).encode()  # more than the socket buffers hold
    with running_server(create_app(FakeRanker(), settings_for_tests(max_body_bytes=50_000))) as url:
        chunked = iter([body[i : i + 65536] for i in range(0, len(body), 65536)])  # no length: urllib sends it chunked
        for content in (body, chunked):
            request = urllib.request.Request(f"{url}/v1/post-rank", data=content, method="POST")
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=30)
            assert refused.value.code == 413
            assert "50000 bytes" in json.loads(refused.value.read())["error"]["message"]
        with urllib.request.urlopen(urllib.request.Request(f"{url}/healthz"), timeout=30) as alive:
            assert alive.status == 200


def test_an_over_limit_body_is_read_only_up_to_the_discard_bound() -> None:
    """Past `max_discard_bytes` the server stops reading (and the connection is closed)."""
    app = create_app(FakeRanker(), settings_for_tests(max_body_bytes=1_000, max_discard_bytes=5_000))
    received: list[int] = []
    sent: list[Message] = []

    async def receive() -> Message:
        received.append(1_000)
        return {"type": "http.request", "body": b" " * 1_000, "more_body": True}  # an endless chunked body

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/post-rank", "raw_path": b"/v1/post-rank", "root_path": "", "query_string": b"", "headers": [],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 413 and 5_000 <= sum(received) <= 7_000
    declared = {**scope, "headers": [(b"content-length", b"6000")]}
    received.clear()
    asyncio.run(app(declared, receive, send))
    assert sum(received) == 0  # declared over the bound: refused without reading
    received.clear()
    asyncio.run(app({**scope, "headers": [(b"content-length", b"4000")]}, receive, send))
    assert sum(received) >= 4_000  # declared within the bound: read, so that the client can finish sending
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413, 413, 413]


def test_unknown_mode_and_unknown_route(fake_client: TestClient) -> None:
    response = fake_client.post("/v1/post-rank", params={"mode": "beam"}, json=GOOD)
    assert response.status_code == 422 and "query.mode" in response.json()["error"]["message"]
    response = fake_client.get("/v1/nothing")
    assert response.status_code == 404 and response.json()["error"]["message"] == "GET /v1/nothing: Not Found"
    assert fake_client.get("/v1/post-rank").status_code == 405


def _paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted path inside a JSON value (the targets of the fuzzing below)."""
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    paths = []
    for key, value in children:
        path = f"{prefix}.{key}" if prefix else str(key)
        paths += [path, *_paths(value, path)]
    return paths


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(_paths(GOOD)), value=JSON_VALUES | st.just(...))
def test_fuzzed_requests_get_an_answer_or_a_4xx_never_a_500(fake_client: TestClient, path: str, value: Any) -> None:
    body = _with(GOOD, path, value)
    response = fake_client.post("/v1/post-rank", content=json.dumps(body))
    assert response.status_code in (200, 413, 422), response.text
    if response.status_code == 200:
        assert sorted(response.json()["ranking"]) == sorted(candidate_ids(body))
    else:
        assert response.json()["error"]["message"]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=JSON_VALUES)
def test_fuzzed_bodies_never_get_a_500(fake_client: TestClient, fake_text_client: TestClient, value: Any) -> None:
    assert fake_client.post("/v1/post-rank", content=json.dumps(value)).status_code in (200, 400, 413, 422)
    for endpoint in RERANK_ENDPOINTS:
        assert fake_text_client.post(endpoint, content=json.dumps(value)).status_code in (200, 400, 413, 422)


def test_bad_input_never_reaches_the_catch_all(fake_client: TestClient) -> None:
    assert metric(fake_client, "llm4pr_http_requests_total", status="500") == 0.0


def test_a_bug_is_a_json_500_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise ZeroDivisionError("secret internals")

    monkeypatch.setattr(app_module, "parse_post_rank", broken)
    with TestClient(create_app(FakeRanker(), settings_for_tests()), raise_server_exceptions=False) as client:
        response = client.post("/v1/post-rank", json=GOOD)
        assert response.status_code == 500
        assert response.json() == {"error": {"status": 500, "message": "internal server error", "request_id": None}}
        assert metric(client, "llm4pr_http_requests_total", endpoint="/v1/post-rank", status="500") == 1.0


# --- fallbacks ----------------------------------------------------------------------------------


def test_a_failing_model_answers_with_the_ranking_stage_order() -> None:
    with serving(FakeRanker(fail=True), wait_ready=False) as client:
        body = request_json()
        answer = client.post("/v1/post-rank", json=body).json()
        assert answer["ranking"] == candidate_ids(body)
        assert answer["fallback"] is True and answer["fallback_reason"] == "model_error"
        readiness = client.get("/readyz")
        assert readiness.status_code == 503 and "RuntimeError: boom" in readiness.json()["reason"]
        assert client.get("/healthz").json() == {"status": "alive"}


def test_a_non_permutation_from_the_model_is_replaced_by_the_fallback() -> None:
    with serving(FakeRanker(garble=True), wait_ready=False) as client:
        body = request_json()
        answer = client.post("/v1/post-rank", json=body).json()
        assert answer["ranking"] == candidate_ids(body) and answer["fallback_reason"] == "model_error"


def test_a_zero_deadline_always_falls_back() -> None:
    ranker = FakeRanker()
    with serving(ranker, wait_ready=False, deadline_ms=0, max_wait_ms=500) as client:
        bodies = [request_json("d1"), request_json("d2", seed=1)]
        answers = client.post("/v1/post-rank", json=bodies).json()
        assert [a["ranking"] for a in answers] == [candidate_ids(b) for b in bodies]
        assert all(a["fallback"] and a["fallback_reason"] == "deadline" for a in answers)
        assert metric(client, "llm4pr_fallbacks_total", reason="deadline") == 2.0
    assert all("d1" not in ids for ids, _ in ranker.calls)  # cancelled while queued: never ranked


def test_before_start_up_requests_fall_back_as_unavailable() -> None:
    client = TestClient(create_app(FakeRanker(), settings_for_tests()))  # no `with`: no lifespan, no worker
    answer = client.post("/v1/post-rank", json=GOOD).json()
    assert answer["fallback_reason"] == "unavailable" and answer["ranking"] == candidate_ids(GOOD)


# --- auth -------------------------------------------------------------------------------------


def test_bearer_token_guards_v1_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with serving(FakeRanker()) as client:
        missing = client.post("/v1/post-rank", json=GOOD)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert "bearer token" in missing.json()["error"]["message"]
        for header in ("Bearer wrong", "Basic s3cret", "s3cret"):
            assert client.post("/v1/post-rank", json=GOOD, headers={"Authorization": header}).status_code == 401
        for endpoint in ("/v1/rerank", "/v2/rerank"):
            assert client.post(endpoint, json={"model": "m", "query": "q", "documents": ["a"]}).status_code == 401
        assert client.post("/v1/post-rank", json=GOOD, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200


def test_unauthenticated_requests_are_refused_before_the_body_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    with serving(FakeRanker()) as client:
        assert client.post("/v1/post-rank", content=b"not json").status_code == 401


# --- metrics ----------------------------------------------------------------------------------


def test_metrics_count_requests_statuses_fallbacks_and_batches() -> None:
    with serving(FakeRanker()) as client:
        for i in range(3):
            client.post("/v1/post-rank", json=request_json(f"m{i}"))
        client.post("/v1/post-rank", params={"mode": "first_token"}, json=[request_json("m3"), request_json("m4")])
        client.post("/v1/post-rank", content=b"{")
        assert metric(client, "llm4pr_http_requests_total", endpoint="/v1/post-rank", status="200") == 4.0
        assert metric(client, "llm4pr_http_requests_total", endpoint="/v1/post-rank", status="400") == 1.0
        assert metric(client, "llm4pr_rankings_total", mode="generate") == 3.0
        assert metric(client, "llm4pr_rankings_total", mode="first_token") == 2.0
        assert metric(client, "llm4pr_http_request_duration_seconds_count", endpoint="/v1/post-rank") == 5.0
        assert metric(client, "llm4pr_batch_size_count") >= 4.0  # the warm-up, then at least one per body
        assert metric(client, "llm4pr_queue_depth") == 0.0
        client.get("/no/such/path")
        assert metric(client, "llm4pr_http_requests_total", endpoint="other", status="404") == 1.0
    with serving(FakeRanker(fail=True), wait_ready=False) as client:
        client.post("/v1/post-rank", json=GOOD)
        assert metric(client, "llm4pr_fallbacks_total", mode="generate", reason="model_error") == 1.0


# --- /v1/rerank and /v2/rerank -------------------------------------------------------------------

TEXT_SCHEMA = FeatureSchema(
    dataset="text",
    features=(
        FeatureSpec(name="passage", owner="item", kind=FeatureKind.text, description="passage: {value}"),
        FeatureSpec(name="bm25", owner="item", kind=FeatureKind.numerical, description="bm25 {value:.1f}"),
    ),
)
RERANK_ENDPOINTS = ("/v1/rerank", "/v2/rerank")
DOCUMENTS = ["a cartoon about toys that come alive", "a war drama", "a comedy about a plane", "a documentary on bees"]


def text_requests(n: int) -> list[PostRankRequest]:
    return [
        PostRankRequest(
            request_id=f"t{r}",
            query=f"query {r}",
            user={"id": "anonymous"},
            candidates=[{"id": str(i), "features": {"passage": f"document {r} {i}", "bm25": float(i)}} for i in range(4)],
        )
        for r in range(n)
    ]


@pytest.fixture(scope="module")
def text_ranker() -> LLM4PRRanker:
    """A tiny random LLM4PR model whose schema can take bare text documents (no user features)."""
    model, builder = tiny_model(TEXT_SCHEMA, text_requests(5))
    return LLM4PRRanker(model, builder, batch_size=8)


@pytest.fixture(scope="module")
def fake_text_client() -> Iterator[TestClient]:
    with serving(FakeRanker(schema=TEXT_SCHEMA), max_candidates=30, max_body_bytes=50_000, max_string_chars=200) as client:
        yield client


def model_relevance(ranker: LLM4PRRanker, query: str, documents: list[str]) -> list[tuple[int, float]]:
    """(index, softmax of the first-token score) best first, straight from the ranker."""
    request = rerank_request("direct", query, documents, "passage")
    [result] = ranker.rank([request], mode="first_token")
    assert result.scores is not None and not result.fallback
    exps = [math.exp(score - max(result.scores)) for score in result.scores]
    return [(int(i), e / sum(exps)) for i, e in zip(result.ranking, exps, strict=True)]


def test_rerank_shapes_top_n_and_documents(fake_text_client: TestClient) -> None:
    documents = ["alpha", {"text": "beta"}, "gamma", "delta"]
    answer = fake_text_client.post("/v1/rerank", json={"query": "q", "documents": documents, "model": "any-name"}).json()
    assert answer["model"] == "llm4pr" and answer["id"].startswith("rerank-")
    assert [r["index"] for r in answer["results"]] == [3, 2, 1, 0]  # the fake ranker reverses, scores 4, 3, 2, 1
    scores = [r["relevance_score"] for r in answer["results"]]
    assert scores == pytest.approx([math.exp(k) / sum(math.exp(j) for j in range(4)) for k in (3, 2, 1, 0)])
    assert "document" not in answer["results"][0] and "warnings" not in answer["meta"]
    assert answer["meta"]["fallback"] is False and answer["meta"]["mode"] == "first_token"
    assert answer["meta"]["api_version"] == {"version": "1"}

    top = fake_text_client.post("/v1/rerank", json={"query": "q", "documents": documents, "top_n": 2, "return_documents": True}).json()
    assert [(r["index"], r["document"]) for r in top["results"]] == [(3, {"text": "delta"}), (2, {"text": "gamma"})]
    assert [r["relevance_score"] for r in top["results"]] == scores[:2]  # top_n cuts, it does not renormalize
    assert len(fake_text_client.post("/v1/rerank", json={"query": "q", "documents": documents, "top_n": 99}).json()["results"]) == 4

    v2_body = {"model": "m", "query": "q", "documents": ["alpha", "beta", "gamma", "delta"], "top_n": 3}
    v2 = fake_text_client.post("/v2/rerank", json=v2_body)
    assert v2.status_code == 200, v2.text
    answer2 = v2.json()
    assert set(answer2) == {"id", "results", "meta"} and answer2["meta"]["api_version"] == {"version": "2"}
    assert answer2["results"] == [{"index": i, "relevance_score": s} for i, s in zip([3, 2, 1], scores, strict=False)]


def test_rerank_v2_max_tokens_per_doc_keeps_the_first_words() -> None:
    ranker = FakeRanker(schema=TEXT_SCHEMA)
    seen: list[PostRankRequest] = []
    original = ranker.rank
    ranker.rank = lambda requests, mode=None: (seen.extend(requests), original(requests, mode))[1]  # type: ignore[method-assign]
    with serving(ranker) as client:
        body = {"model": "m", "query": "q", "documents": ["one  two\tthree four", "short", " lead space"], "max_tokens_per_doc": 2}
        assert client.post("/v2/rerank", json=body).status_code == 200
    assert [c.features["passage"] for c in seen[-1].candidates] == ["one  two", "short", " lead space"]


def test_v1_document_objects_carry_other_item_features(text_ranker: LLM4PRRanker) -> None:
    """A v1 document object may add item features of the checkpoint (here the first-stage score
    `bm25`): they reach the model as those features, in canonical types, and the ranking is the
    one /v1/post-rank gives the same candidates; objects are echoed by return_documents."""
    ranker = FakeRanker(schema=TEXT_SCHEMA)
    seen: list[PostRankRequest] = []
    original = ranker.rank
    ranker.rank = lambda requests, mode=None: (seen.extend(requests), original(requests, mode=mode))[1]  # type: ignore[method-assign]
    documents = [{"text": "alpha", "bm25": 3}, "beta", {"text": "gamma", "bm25": None}]
    with serving(ranker) as client:
        answer = client.post("/v1/rerank", json={"query": "q", "documents": documents, "return_documents": True})
        assert answer.status_code == 200, answer.text
    assert [c.features for c in seen[-1].candidates] == [{"passage": "alpha", "bm25": 3.0}, {"passage": "beta"}, {"passage": "gamma", "bm25": None}]
    assert isinstance(seen[-1].candidates[0].features["bm25"], float)
    echoed = {r["index"]: r["document"] for r in answer.json()["results"]}
    assert echoed == {0: {"text": "alpha", "bm25": 3}, 1: {"text": "beta"}, 2: {"text": "gamma"}}  # nulls are left out, as everywhere
    assert answer.json()["meta"]["fallback"] is False

    documents = [{"text": d, "bm25": float(len(d))} for d in DOCUMENTS]
    with serving(text_ranker) as client:
        reranked = client.post("/v1/rerank", json={"query": "films", "documents": documents}).json()
        request = {"request_id": "r", "query": "films", "user": {"id": "anonymous"},
                   "candidates": [{"id": str(i), "features": {"passage": d["text"], "bm25": d["bm25"]}} for i, d in enumerate(documents)]}
        ranked = client.post("/v1/post-rank", params={"mode": "first_token"}, json=request).json()
    assert [str(r["index"]) for r in reranked["results"]] == ranked["ranking"]


def test_rerank_scores_are_the_models_and_order_the_results(text_ranker: LLM4PRRanker) -> None:
    with serving(text_ranker, mode="generate") as client:  # the server default does not apply to rerank
        answer = client.post("/v2/rerank", json={"model": "llm4pr", "query": "films", "documents": DOCUMENTS}).json()
    results = [(r["index"], r["relevance_score"]) for r in answer["results"]]
    expected = model_relevance(text_ranker, "films", DOCUMENTS)
    assert [i for i, _ in results] == [i for i, _ in expected]
    assert [s for _, s in results] == pytest.approx([s for _, s in expected])
    assert answer["meta"]["mode"] == "first_token" and answer["meta"]["fallback"] is False


def test_rerank_with_the_cohere_sdk_against_a_real_server(text_ranker: LLM4PRRanker, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "s3cret")  # the SDK sends its api_key as the bearer token
    expected = model_relevance(text_ranker, "a funny film for kids", DOCUMENTS)
    with running_server(create_app(text_ranker, settings_for_tests())) as url:
        v1 = cohere.Client(api_key="s3cret", base_url=url, max_retries=0).rerank(
            query="a funny film for kids", documents=DOCUMENTS, top_n=3, return_documents=True
        )
        v2 = cohere.ClientV2(api_key="s3cret", base_url=url, max_retries=0).rerank(
            model="llm4pr", query="a funny film for kids", documents=DOCUMENTS
        )
        with pytest.raises(cohere.UnauthorizedError):
            cohere.ClientV2(api_key="wrong", base_url=url, max_retries=0).rerank(model="m", query="q", documents=["a"])
    for response, n in ((v1, 3), (v2, len(DOCUMENTS))):
        scores = [r.relevance_score for r in response.results]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
        assert [r.index for r in response.results] == [i for i, _ in expected[:n]]
        assert scores == pytest.approx([s for _, s in expected[:n]])
        assert response.meta is not None and response.meta.warnings is None
    assert [r.document.text for r in v1.results] == [DOCUMENTS[i] for i, _ in expected[:3]]
    assert v1.meta.api_version.version == "1" and v2.meta.api_version.version == "2"
    assert sum(r.relevance_score for r in v2.results) == pytest.approx(1.0)


def test_rerank_falls_back_with_uniform_scores_and_a_warning() -> None:
    with serving(FakeRanker(schema=TEXT_SCHEMA, fail=True), wait_ready=False) as client:
        for endpoint in RERANK_ENDPOINTS:
            answer = client.post(endpoint, json={"model": "m", "query": "q", "documents": ["a", "b", "c", "d"]}).json()
            assert [(r["index"], r["relevance_score"]) for r in answer["results"]] == [(i, 0.25) for i in range(4)]
            assert answer["meta"]["fallback"] is True and answer["meta"]["fallback_reason"] == "model_error"
            assert answer["meta"]["relevance"] == "uniform"
            assert "not ranked by the model" in answer["meta"]["warnings"][0]


BAD_RERANK = [
    ({"documents": ["a"]}, 422, "body: query: Field required"),
    ({"query": "q", "documents": []}, 422, "documents: List should have at least 1 item"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n: Input should be greater than 0"),
    ({"query": "q", "documents": [3]}, 422, "documents.0"),
    ({"query": "q", "documents": [{"txt": "a"}]}, 422, "documents.0"),
    ({"query": "q", "documents": ["a", {"text": "b", "year": 1}]}, 422,
     "documents[1].year: not an item feature of the served checkpoint (a document object takes 'text' and: bm25)"),
    ({"query": "q", "documents": [{"text": "b", "passage": "c"}]}, 422, "documents[0].passage: not an item feature"),
    ({"query": "q", "documents": [{"text": "b", "bm25": "high"}]}, 422, "documents[0].bm25: "),
    ({"query": "q", "documents": ["a"], "rank_fields": ["x"]}, 422, "rank_fields: Extra inputs are not permitted"),
    ({"query": "q", "documents": ["a"] * 31}, 413, "documents: 31 exceed the limit of 30"),
    ({"query": "q", "documents": ["a", "z" * 201]}, 422, "documents.1: string of 201 characters"),
    (["q"], 422, "body: expected a JSON object, got array"),
]
BAD_RERANK_V2 = [
    ({"query": "q", "documents": ["a"]}, 422, "body: model: Field required"),
    ({"model": "m", "query": "q", "documents": [{"text": "a"}]}, 422, "documents.0: Input should be a valid string"),
    ({"model": "m", "query": "q", "documents": ["a"], "return_documents": True}, 422, "return_documents: Extra inputs"),
    ({"model": "m", "query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, 422, "max_tokens_per_doc: Input should be greater than 0"),
    ({"model": "m", "query": "q", "documents": ["a"] * 31}, 413, "documents: 31 exceed the limit of 30"),
]


@pytest.mark.parametrize(
    "endpoint, body, status, phrase",
    [("/v1/rerank", *case) for case in BAD_RERANK] + [("/v2/rerank", *case) for case in BAD_RERANK_V2],
)
def test_bad_rerank_bodies(fake_text_client: TestClient, endpoint: str, body: Any, status: int, phrase: str) -> None:
    response = fake_text_client.post(endpoint, json=body)
    assert response.status_code == status, response.text
    assert phrase in response.json()["error"]["message"]


def test_rerank_refuses_generate_mode_and_ranks_more_documents_than_one_window(text_ranker: LLM4PRRanker) -> None:
    """Longer lists go through the sliding windows (tests/test_rerank_long.py has the rest)."""
    with serving(text_ranker) as client:
        for endpoint in RERANK_ENDPOINTS:
            body = {"model": "m", "query": "q", "documents": ["a", "b"]}
            response = client.post(endpoint, params={"mode": "generate"}, json=body)
            assert response.status_code == 422 and "query.mode: Input should be 'first_token'" in response.json()["error"]["message"]
            answer = client.post(endpoint, params={"mode": "first_token"}, json=body).json()
            assert answer["meta"]["relevance"] == "softmax"
            n = text_ranker.config.window + 1
            response = client.post(endpoint, json={**body, "documents": [f"d{i}" for i in range(n)]})
            assert response.status_code == 200, response.text
            assert sorted(r["index"] for r in response.json()["results"]) == list(range(n))
            assert response.json()["meta"]["relevance"] == "position"


@pytest.mark.parametrize(
    "schema, phrase",
    [
        (FeatureSchema(features=(FeatureSpec(name="price", owner="item", kind="numerical"),)), "needs an item feature of kind 'text'"),
        (TOY_SCHEMA, "cannot rank bare text documents with this checkpoint: its schema has user features (gender, age, favourite)"),
    ],
    ids=["no text feature", "user features"],
)
def test_rerank_refuses_a_checkpoint_that_cannot_take_bare_text(schema: FeatureSchema, phrase: str) -> None:
    ranker = FakeRanker(schema=schema)
    with serving(ranker) as client:
        for endpoint in RERANK_ENDPOINTS:
            response = client.post(endpoint, json={"model": "m", "query": "q", "documents": ["a"]})
            assert response.status_code == 422, response.text
            message = response.json()["error"]["message"]
            assert message.startswith(f"{endpoint} ") and phrase in message
    assert ranker.calls == [(["warm-up"], "generate")]  # refused before the body is read or the model is called


def test_openapi_documents_every_endpoint(fake_client: TestClient) -> None:
    spec = fake_client.get("/openapi.json").json()
    assert {"/v1/post-rank", "/v1/rerank", "/v2/rerank", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    body = spec["paths"]["/v1/post-rank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$ref" not in json.dumps(body) and "candidates" in json.dumps(body)
    v2 = spec["paths"]["/v2/rerank"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "max_tokens_per_doc" in json.dumps(v2) and "return_documents" not in json.dumps(v2)
    assert fake_client.get("/docs").status_code == 200


# --- the micro-batcher on its own ---------------------------------------------------------------


def _rank_reversed(calls: list[tuple[list[str], str]]) -> Any:
    def rank(requests: Sequence[PostRankRequest], mode: str) -> list[RankResult]:
        calls.append(([r.request_id for r in requests], mode))
        return [RankResult(request_id=r.request_id, ranking=r.candidate_ids[::-1]) for r in requests]

    return rank


def test_batcher_groups_by_mode_caps_the_batch_and_drains_on_close() -> None:
    calls: list[tuple[list[str], str]] = []
    batcher = MicroBatcher(_rank_reversed(calls), max_batch_size=2, max_wait_ms=1000, max_queue_size=10)
    requests = toy_requests(5)
    modes = ["generate", "first_token", "generate", "generate", "first_token"]
    futures = [batcher.submit(r, m) for r, m in zip(requests, modes, strict=True)]  # queued before the worker starts
    batcher.start()
    assert batcher.close(timeout_s=10)
    assert [f.result().ranking for f in futures] == [r.candidate_ids[::-1] for r in requests]
    assert calls == [(["q0", "q2"], "generate"), (["q1", "q4"], "first_token"), (["q3"], "generate")]
    with pytest.raises(BatcherUnavailable, match="shutting down"):
        batcher.submit(requests[0], "generate")


def test_batcher_queue_limit_and_cancelled_requests() -> None:
    calls: list[tuple[list[str], str]] = []
    batcher = MicroBatcher(_rank_reversed(calls), max_batch_size=8, max_wait_ms=0, max_queue_size=2)
    first, second = toy_requests(2)
    cancelled = batcher.submit(first, "generate")
    kept = batcher.submit(second, "generate")
    with pytest.raises(BatcherUnavailable, match="queue is full"):
        batcher.submit(first, "generate")
    assert batcher.pending() == 2 and cancelled.cancel()
    batcher.submit(first, "generate").cancel()  # a cancelled request frees its place in the queue
    batcher.start()
    assert batcher.close(timeout_s=10)
    assert kept.result().request_id == "q1" and calls == [(["q1"], "generate")]


# --- the load test ----------------------------------------------------------------------------


def test_loadtest_summary_on_fake_samples() -> None:
    samples = [Sample(200, 0.010), Sample(200, 0.020, fallback=True), Sample(200, 0.030, malformed=True), Sample(503, 0.040), Sample(0, 5.0)]
    summary = summarize(samples, wall_s=2.0)
    assert (summary["requests"], summary["answered"], summary["requests_per_s"]) == (5, 4, 2.0)
    assert summary["status_counts"] == {"200": 3, "503": 1, "no_answer": 1}
    assert (summary["server_errors"], summary["no_answer"], summary["fallbacks"], summary["malformed_rankings"]) == (1, 1, 1, 1)
    assert summary["latency_ms"]["p50"] == pytest.approx(25.0) and summary["latency_ms"]["p99"] == pytest.approx(39.7)
    assert summarize([], 1.0)["latency_ms"] == {"p50": None, "p95": None, "p99": None}


def test_loadtest_judges_rankings() -> None:
    request = toy_requests(1)[0]
    ids = request.candidate_ids
    assert judge(request, {"request_id": "q0", "ranking": ids[::-1], "fallback": False}) == (False, False)
    assert judge(request, {"request_id": "q0", "ranking": ids, "fallback": True}) == (True, False)
    assert judge(request, {"request_id": "q0", "ranking": ids[:-1]})[1]
    assert judge(request, {"request_id": "q0", "ranking": ids + ids[:1]})[1]
    assert judge(request, {"request_id": "other", "ranking": ids})[1]
    assert judge(request, None)[1] and judge(request, [])[1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--url", "http://example.com:8000"], "not loopback"),
        (["--url", "ftp://127.0.0.1"], "http(s) URL"),
        (["--url", "http://127.0.0.1:8000", "--concurrency", "257"], "outside (0, 256]"),
        (["--url", "http://127.0.0.1:8000", "--duration", "601"], "outside (0, 600]"),
        (["--url", "http://127.0.0.1:8000", "--duration", "0"], "outside (0, 600]"),
    ],
)
def test_loadtest_refuses_unbounded_or_remote_runs(argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        loadtest_main([*argv, "--requests", str(tmp_path / "r.jsonl")])
    assert exited.value.code == 2 and message in capsys.readouterr().err


def test_loopback_hosts() -> None:
    assert all(is_loopback_host(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"))
    assert not any(is_loopback_host(h) for h in ("0.0.0.0", "10.0.0.1", "example.com", ""))


async def _load_in_process(app: FastAPI, requests: list[PostRankRequest]) -> tuple[list[Sample], float]:
    async with app.router.lifespan_context(app):
        return await run_load(
            "http://127.0.0.1:8000", requests, concurrency=4, duration_s=0.5, transport=httpx.ASGITransport(app=app)
        )


def test_run_load_against_the_app_in_process() -> None:
    requests = toy_requests(3)
    samples, wall_s = asyncio.run(_load_in_process(create_app(FakeRanker(), settings_for_tests()), requests))
    summary = summarize(samples, wall_s)
    assert summary["requests"] > 4 and summary["status_counts"] == {"200": summary["requests"]}
    assert summary["malformed_rankings"] == 0 and summary["server_errors"] == 0


def test_loadtest_main_against_a_real_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_server(create_app(FakeRanker(), settings_for_tests())) as url:
        write_jsonl(tmp_path / "requests.jsonl", toy_requests(4))
        out = tmp_path / "summary.json"
        code = loadtest_main(
            ["--url", url, "--requests", str(tmp_path / "requests.jsonl"), "--concurrency", "3", "--duration", "1", "--out", str(out)]
        )
        assert code == 0, capsys.readouterr().out
        summary = json.loads(out.read_text())
        assert summary["requests"] > 3 and summary["malformed_rankings"] == 0 and summary["no_answer"] == 0
        assert summary["provenance"]["machine"]["processor"] and summary["provenance"]["libraries"]["httpx"]
        assert "answered/s" in capsys.readouterr().out
        big = json.dumps(_with(GOOD, "query", "y" * (11 * 1024 * 1024)))  # over the default 10 MiB
        assert httpx.post(f"{url}/v1/post-rank", content=big, timeout=30).status_code == 413


@pytest.mark.slow
def test_rerank_of_a_held_out_semanlink_query_equals_llm4pr_rank(
    tiny_train_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A text checkpoint trained (tiny) on the Semanlink layout, served: a held-out query's documents
    come back from /v1/post-rank (both modes) and from /v1 and /v2 rerank in the order `llm4pr rank`
    gives the same request (documents as candidates with the schema's text feature, an anonymous
    user, as the rerank endpoints build it)."""
    import uvicorn

    from llm4pr.cli import main
    from llm4pr.data.jsonl import read_requests
    from llm4pr.data.semanlink import prepare_semanlink
    from llm4pr.data.rerank import ANONYMOUS_USER
    from llm4pr.training.trainer import Trainer

    data = tmp_path / "semanlink"
    # every tag query held out (test); training sees only the title pseudo-queries
    prepare_semanlink(Path(__file__).parent / "fixtures" / "semanlink", data, split_ratio=(0.0, 0.0, 1.0), pseudo_queries=True)
    # as configs/semanlink.yaml: no id embedding, no history, the query's match with each text as an input
    model = {**tiny_train_config().model.model_dump(mode="json"), "embed_ids": False, "max_history": 0, "query_similarity": True}
    Trainer(tiny_train_config(model=model), data, tmp_path / "run", progress=False).run()
    held_out = max(read_requests(data / "test.jsonl"), key=lambda r: len(r.candidates))
    assert len(held_out.candidates) >= 3
    documents = [str(c.features["text"]) for c in held_out.candidates]
    request = {
        "request_id": held_out.request_id,
        "query": held_out.query,
        "user": {"id": ANONYMOUS_USER},
        "candidates": [{"id": str(index), "features": {"text": text}} for index, text in enumerate(documents)],
    }
    write_jsonl(tmp_path / "request.jsonl", [request])
    captured: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: captured.update(app=app, **kwargs))
    serve(tmp_path / "run", settings=settings_for_tests(mode="first_token"))
    with TestClient(captured["app"], raise_server_exceptions=True) as client:
        for _ in range(500):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.01)
        for mode in ("generate", "first_token"):
            assert main(["rank", "--checkpoint", str(tmp_path / "run"), "--input", str(tmp_path / "request.jsonl"), "--output", str(tmp_path / f"{mode}.jsonl"), "--mode", mode]) == 0
            ranked = json.loads((tmp_path / f"{mode}.jsonl").read_text(encoding="utf-8"))["ranking"]
            served = client.post("/v1/post-rank", params={"mode": mode}, json=request).json()
            assert served["ranking"] == ranked and served["fallback"] is False, mode
        # rerank scores documents: first_token, the mode whose scores compare documents
        v2 = client.post("/v2/rerank", json={"model": "llm4pr", "query": held_out.query, "documents": documents}).json()
        v1 = client.post("/v1/rerank", json={"query": held_out.query, "documents": documents}).json()
        assert [r["index"] for r in v2.get("results", [])] == [int(i) for i in ranked], v2
        assert [r["index"] for r in v1.get("results", [])] == [int(i) for i in ranked], v1
    capsys.readouterr()
