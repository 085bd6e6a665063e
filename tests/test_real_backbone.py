"""The real offline defaults end to end: SmolLM2-135M, MiniLM and ML-100K, a few training steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm4pr.data.jsonl import read_requests
from llm4pr.data.movielens import prepare_movielens
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.training.config import TrainConfig
from llm4pr.training.trainer import Trainer


@pytest.mark.slow
def test_real_backbone_trains_and_ranks(tmp_path: Path) -> None:
    data_dir = tmp_path / "ml100k"
    prepare_movielens("recbole", data_dir)
    config = TrainConfig.model_validate(
        {
            "max_train_requests": 16,
            "max_valid_requests": 4,
            "checkpoint_every": 100,
            "model": {"qia_hidden_dim": 64},
            "adaptation": {"steps": 2, "batch_size": 2},
            "post_rank": {"steps": 2, "batch_size": 2},
        }
    )
    report = Trainer(config, data_dir, tmp_path / "run", progress=False).run()
    assert report["n_requests"] == 4
    test = read_requests(data_dir / "test.jsonl")[:3]
    results = LLM4PRRanker.from_pretrained(tmp_path / "run").rank(test)
    for request, result in zip(test, results, strict=True):
        assert sorted(result.ranking) == sorted(request.candidate_ids)
        assert not result.fallback
