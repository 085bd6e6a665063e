"""`llm4pr rank --engine ray` on a local 2-CPU Ray: the same rankings as `llm4pr rank`, request for request."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray

from llm4pr.cli import main
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import dumps_line, read_run
from llm4pr.data.requests import RankResult
from llm4pr.features.encoders import FeatureStats
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ray_batch import rank_with_ray, read_results
from llm4pr.model.checkpoint import save_checkpoint
from llm4pr.model.factory import add_lora, build_model
from llm4pr.model.config import LoraSettings, ModelConfig
from tests.toy import TOY_SCHEMA, toy_requests

pytestmark = pytest.mark.slow
OPTIONS = InferenceConfig(mode="first_token", batch_size=4, window=20, stride=10)


@pytest.fixture(scope="module")
def local_ray():  # type: ignore[no-untyped-def]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("ray-model")
    requests = toy_requests(20, seed=1)
    config = ModelConfig(backbone=str(tiny_backbone_dir), text_encoder="hashing", qia_hidden_dim=16, categorical_dim=4,
                         lora=LoraSettings(r=2, alpha=4))
    model, _ = build_model(config, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, requests))
    add_lora(model, config.lora)
    save_checkpoint(model, folder / "checkpoint")
    return folder / "checkpoint"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """18 requests in two JSON-lines shards and one Parquet file."""
    folder = tmp_path_factory.mktemp("ray-inputs")
    requests = toy_requests(18, seed=5)
    (folder / "jsonl").mkdir()
    for shard, part in enumerate((requests[:10], requests[10:])):
        (folder / "jsonl" / f"part-{shard}.jsonl").write_text("".join(dumps_line(r) + "\n" for r in part))
    (folder / "all.jsonl").write_text("".join(dumps_line(r) + "\n" for r in requests))
    (folder / "parquet").mkdir()
    table = pa.Table.from_pylist([r.model_dump(mode="json", exclude_none=True) for r in requests])
    pq.write_table(table, folder / "parquet" / "requests.parquet")
    return folder


def by_id(results: list[RankResult]) -> dict[str, RankResult]:
    return {r.request_id: r for r in results}


def assert_same_results(ray_results: list[RankResult], local_results: list[RankResult]) -> None:
    ours, theirs = by_id(ray_results), by_id(local_results)
    assert len(ray_results) == len(ours) == len(theirs) == 18
    for request_id, expected in theirs.items():
        got = ours[request_id]
        assert got.ranking == expected.ranking, request_id
        assert got.scores == pytest.approx(expected.scores, abs=1e-5)
        assert not got.fallback


def test_ray_engine_equals_local_ranking(local_ray, checkpoint: Path, inputs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert main(["rank", "--checkpoint", str(checkpoint), "--input", str(inputs / "all.jsonl"), "--output", str(tmp_path / "local.jsonl"),
                 "--mode", "first_token", "--batch-size", "4"]) == 0
    local = read_run(tmp_path / "local.jsonl")

    # JSON lines: a folder of shards, two workers sharing the 2 CPUs with the readers and writers
    assert main(["rank", "--engine", "ray", "--checkpoint", str(checkpoint), "--input", str(inputs / "jsonl"), "--output", str(tmp_path / "out"),
                 "--mode", "first_token", "--batch-size", "4", "--workers", "2", "--cpus-per-worker", "0.5", "--ray-batch-size", "5"]) == 0
    assert_same_results(read_results(tmp_path / "out"), local)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # the temporary folder was renamed away

    # Parquet in, Parquet out (a glob)
    count = rank_with_ray(checkpoint, str(inputs / "parquet" / "*.parquet"), tmp_path / "pq", OPTIONS, workers=1, batch_size=7)
    assert count == 18
    assert {p.suffix for p in (tmp_path / "pq").iterdir()} == {".parquet"}
    assert_same_results(read_results(tmp_path / "pq"), local)


def test_bad_request_names_file_and_request(local_ray, checkpoint: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    requests = [json.loads(dumps_line(r)) for r in toy_requests(3, seed=5)]
    requests[1]["candidates"][0]["features"]["colour"] = "red"
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in requests))
    with pytest.raises(DataError, match=r"bad\.jsonl: request 'q1': candidates\[0\] \(id '.*'\)\.features\.colour: unknown item feature"):
        rank_with_ray(checkpoint, str(bad), tmp_path / "out", OPTIONS)
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_input_and_resource_errors(local_ray, checkpoint: Path, inputs: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match="no input files"):
        rank_with_ray(checkpoint, str(tmp_path / "missing-*.jsonl"), tmp_path / "out", OPTIONS)
    with pytest.raises(DataError, match="leave no CPU for reading and writing"):
        rank_with_ray(checkpoint, str(inputs / "all.jsonl"), tmp_path / "out", OPTIONS, workers=2, cpus_per_worker=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.json").write_text("{}\n")
    with pytest.raises(DataError, match="folder exists and is not empty"):
        rank_with_ray(checkpoint, str(inputs / "all.jsonl"), tmp_path / "full", OPTIONS)
