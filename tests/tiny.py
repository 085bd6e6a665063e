"""Checks shared by the dataset converter tests, and a tiny LLM4PR model for any schema.

Converters are only useful if everything downstream reads their output unchanged: the request
contract (`check_contract`), `evaluate`, a baseline and the model with its sliding window for
long lists (`check_prepared_folder`, a few seconds on a CPU).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from llm4pr.baselines import LambdaMARTRanker
from llm4pr.data.jsonl import read_requests
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.features.encoders import FeatureStats
from llm4pr.features.text_encoder import load_text_encoder
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.backbone import tiny_backbone
from llm4pr.model.factory import build_model
from llm4pr.model.llm4pr import LLM4PRModel, ModelConfig
from llm4pr.model.prompts import PromptBuilder
from llm4pr.rankers.base import InitialOrderRanker

TINY = ModelConfig(backbone="tiny", dtype="float32", text_encoder="hashing", qia_hidden_dim=32, categorical_dim=8)
SPLITS = ("train", "valid", "test")
OUTPUT_FILES = ["prepare.json", "schema.json", "test.jsonl", "train.jsonl", "valid.jsonl"]


def read_prepared(out: Path) -> dict[str, dict[str, Any]]:
    """request_id -> request as written (JSON), with its split added under '_split'; file order kept."""
    requests = {}
    for split in SPLITS:
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            request = json.loads(line)
            requests[request["request_id"]] = {**request, "_split": split}
    return requests


def check_contract(out: Path, report: dict[str, Any]) -> FeatureSchema:
    """The folder holds exactly the output files, `prepare.json` is the returned report with true
    hashes, and every request passes validation against `schema.json`; returns the schema."""
    assert sorted(path.name for path in out.iterdir()) == OUTPUT_FILES  # no scratch file left behind
    assert json.loads((out / "prepare.json").read_text(encoding="utf-8")) == report
    for name, entry in report["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    schema = FeatureSchema.load(out / "schema.json")
    for split in SPLITS:
        read_requests(out / f"{split}.jsonl", schema)  # every feature declared and of its kind
    return schema


def save_tiny_backbone(folder: Path, seed: int = 0) -> Path:
    """A tiny random backbone saved as a local model folder, for configs and checkpoints that name it."""
    model, tokenizer = tiny_backbone(seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_model(
    schema: FeatureSchema, train_requests: list[PostRankRequest], seed: int = 0
) -> tuple[LLM4PRModel, PromptBuilder]:
    """An untrained LLM4PR model on a random tiny backbone, its encoders fitted to `train_requests`."""
    torch.manual_seed(seed)
    backbone, tokenizer = tiny_backbone(seed=seed)
    stats = FeatureStats.fit(schema, train_requests)
    model, tokenizer = build_model(TINY, schema, stats, backbone, tokenizer, load_text_encoder("hashing"))
    model.eval()
    return model, PromptBuilder(tokenizer, TINY.identifiers)


def assert_permutations(requests: list[PostRankRequest], results: list[RankResult]) -> None:
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    for request, result in zip(requests, results, strict=True):
        assert not result.fallback, f"{result.request_id}: fell back: {result.error}"
        assert sorted(result.ranking) == sorted(request.candidate_ids), result.request_id


def check_prepared_folder(out: Path) -> dict[str, Any]:
    """Load a prepared folder with its schema, then evaluate the ranking-stage order, LambdaMART and
    a tiny LLM4PR model on its test requests; return the ranking-stage order's evaluation report.

    Without training requests (a BEIR set judged for test only) the encoders and the baseline are
    fitted on the test requests: this checks that things run, not how well.
    """
    schema = FeatureSchema.load(out / "schema.json")
    requests = {split: read_requests(out / f"{split}.jsonl", schema) for split in SPLITS}
    test = requests["test"]
    fit_on = requests["train"] or test
    report = evaluate_run(test, InitialOrderRanker().rank(test))

    model, builder = tiny_model(schema, fit_on)
    ranked = LLM4PRRanker(model, builder).rank(test)
    assert_permutations(test, ranked)
    evaluate_run(test, ranked)

    baseline = LambdaMARTRanker(n_estimators=5, min_data_in_leaf=1, text_encoder="hashing")
    baseline_ranked = baseline.fit(fit_on, schema, seed=0).rank(test)
    assert_permutations(test, baseline_ranked)
    evaluate_run(test, baseline_ranked)
    return report
