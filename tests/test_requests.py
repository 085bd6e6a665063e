"""The request format and the feature schema reject bad input with messages that say where."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, read_run, write_jsonl
from llm4pr.data.schema import FeatureSchema, FeatureSpec


@pytest.fixture()
def schema() -> FeatureSchema:
    return FeatureSchema(
        features=(
            FeatureSpec(name="gender", owner="user", kind="categorical", description="gender {value}"),
            FeatureSpec(name="age", owner="user", kind="numerical", description="{value:.0f} years old"),
            FeatureSpec(name="title", owner="item", kind="text", description="titled {value}"),
            FeatureSpec(name="genres", owner="item", kind="multi_categorical"),
            FeatureSpec(name="vec", owner="item", kind="embedding", dim=2),
        )
    )


def _request(**overrides: object) -> dict:
    request = {
        "request_id": "r1",
        "query": "what to watch",
        "user": {"id": "42", "features": {"gender": "M", "age": 25}},
        "history": [{"id": "50", "features": {"genres": ["Action"]}}],
        "candidates": [
            {"id": "242", "features": {"title": "Kolya", "genres": ["Comedy"], "vec": [0.1, 0.2]}, "label": 4},
            {"id": "302", "features": {"title": "L.A. Confidential"}, "label": 5},
        ],
    }
    request.update(overrides)
    return request


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _read_error(tmp_path: Path, lines: list[str], schema: FeatureSchema | None = None) -> str:
    path = _write_lines(tmp_path / "requests.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_requests(path, schema)
    return str(info.value)


def test_valid_file_round_trips(tmp_path: Path, schema: FeatureSchema) -> None:
    path = tmp_path / "ok.jsonl"
    write_jsonl(path, [_request(), _request(request_id="r2")])
    requests = read_requests(path, schema)
    assert [r.request_id for r in requests] == ["r1", "r2"]
    assert requests[0].candidate_ids == ["242", "302"]
    assert requests[0].labels == [4.0, 5.0]
    assert requests[0].user.features["age"] == 25.0


def test_bad_json_names_file_and_line(tmp_path: Path) -> None:
    message = _read_error(tmp_path, [json.dumps(_request()), "{not json", json.dumps(_request(request_id="r3"))])
    assert "requests.jsonl:2: invalid JSON" in message
    assert "1 bad line" in message


def test_every_bad_line_is_reported(tmp_path: Path) -> None:
    lines = [json.dumps(_request(request_id=f"r{i}", candidates=[])) for i in range(3)]
    message = _read_error(tmp_path, lines)
    assert "3 bad line(s)" in message
    for number in (1, 2, 3):
        assert f"requests.jsonl:{number}: request 'r{number - 1}': candidates" in message


def test_missing_field(tmp_path: Path) -> None:
    request = _request()
    del request["query"]
    message = _read_error(tmp_path, [json.dumps(request)])
    assert "request 'r1': query: Field required" in message


def test_wrong_type(tmp_path: Path) -> None:
    message = _read_error(tmp_path, [json.dumps(_request(query=7))])
    assert "request 'r1': query: Input should be a valid string" in message


def test_unknown_top_level_field(tmp_path: Path) -> None:
    message = _read_error(tmp_path, [json.dumps(_request(extra=1))])
    assert "extra: Extra inputs are not permitted" in message


def test_empty_candidate_list(tmp_path: Path) -> None:
    message = _read_error(tmp_path, [json.dumps(_request(candidates=[]))])
    assert "candidates: List should have at least 1 item" in message


def test_duplicate_candidate_ids(tmp_path: Path) -> None:
    candidates = [{"id": "7", "label": 1}, {"id": "7", "label": 2}]
    message = _read_error(tmp_path, [json.dumps(_request(candidates=candidates))])
    assert "duplicate candidate id '7' at candidates[1]" in message


def test_unknown_feature(tmp_path: Path, schema: FeatureSchema) -> None:
    candidates = [{"id": "1", "features": {"colour": "red"}}]
    message = _read_error(tmp_path, [json.dumps(_request(candidates=candidates))], schema)
    assert "request 'r1': candidates[0] (id '1').features.colour: unknown item feature" in message


def test_feature_of_wrong_kind(tmp_path: Path, schema: FeatureSchema) -> None:
    user = {"id": "42", "features": {"age": "old"}}
    message = _read_error(tmp_path, [json.dumps(_request(user=user))], schema)
    assert "request 'r1': user.features.age: expected a number, got str" in message


def test_embedding_of_wrong_size(tmp_path: Path, schema: FeatureSchema) -> None:
    candidates = [{"id": "1", "features": {"vec": [1.0, 2.0, 3.0]}}]
    message = _read_error(tmp_path, [json.dumps(_request(candidates=candidates))], schema)
    assert "features.vec: expected 2 numbers (embedding), got 3" in message


def test_nan_is_rejected(tmp_path: Path) -> None:
    line = json.dumps(_request()).replace('"label": 4', '"label": NaN')
    message = _read_error(tmp_path, [line])
    assert "NaN is not a valid JSON number" in message


def test_duplicate_request_ids(tmp_path: Path) -> None:
    message = _read_error(tmp_path, [json.dumps(_request()), json.dumps(_request())])
    assert "duplicate request ids: ['r1']" in message


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_requests(tmp_path / "nope.jsonl")


def test_run_file(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "run.jsonl", [json.dumps({"request_id": "r1", "ranking": ["a", "b"]})])
    assert read_run(path)[0].ranking == ["a", "b"]
    bad = _write_lines(tmp_path / "bad.jsonl", [json.dumps({"request_id": "r1", "ranking": "a"})])
    with pytest.raises(DataError, match="bad.jsonl:1: request 'r1': ranking: Input should be a valid list"):
        read_run(bad)


def test_schema_round_trip_and_errors(tmp_path: Path, schema: FeatureSchema) -> None:
    schema.save(tmp_path / "schema.json")
    assert FeatureSchema.load(tmp_path / "schema.json") == schema
    assert schema.spec("user", "age").describe(25.0) == "25 years old"  # type: ignore[union-attr]
    assert schema.spec("item", "genres").describe(["Action", "Drama"]) == "genres Action, Drama"  # type: ignore[union-attr]
    described = schema.describe("item", {"genres": ["Action"], "vec": [0.123456789, 0.5]})
    assert "genres Action" in described and "0.123" not in described and "vec" not in described  # vectors are not words
    (tmp_path / "bad.json").write_text(json.dumps({"features": [{"name": "v", "owner": "item", "kind": "embedding"}]}))
    with pytest.raises(DataError, match="bad.json: invalid schema: .*kind 'embedding' needs 'dim'"):
        FeatureSchema.load(tmp_path / "bad.json")
    (tmp_path / "tmpl.json").write_text(
        json.dumps({"features": [{"name": "v", "owner": "item", "kind": "text", "description": "{oops}"}]})
    )
    with pytest.raises(DataError, match="does not render"):
        FeatureSchema.load(tmp_path / "tmpl.json")
