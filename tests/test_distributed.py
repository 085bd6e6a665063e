"""Data-parallel training under Accelerate: two CPU processes (gloo) train what one process trains."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from llm4pr.data.jsonl import read_requests
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.training.config import TrainConfig
from llm4pr.training.trainer import Trainer
from tests.tiny import TrainConfigFactory
from tests.toy import TOY_SCHEMA

WEIGHT_FILES = ("adaptation/encoders.safetensors", "model/encoders.safetensors", "model/adapter/adapter_model.safetensors")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_train_config: TrainConfigFactory, toy_data_dir: Path) -> tuple[Path, Path]:
    config = tiny_train_config(gradient_checkpointing=True).model_dump(mode="json")
    config["model"]["lora"]["dropout"] = 0.0  # no dropout: the processes' noise differs from one process's
    path = tmp_path_factory.mktemp("dp") / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, toy_data_dir


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return {f"{name}:{key}": tensor for name in WEIGHT_FILES for key, tensor in load_file(run_dir / name).items()}


def assert_same_weights(one: Path, other: Path) -> None:
    a, b = weights(one), weights(other)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)


def train(config: Path, data: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "llm4pr", "--verbose", "train", "--config", str(config), "--data", str(data), "--out", str(out), "--device", "cpu", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    Trainer(TrainConfig.load(config), data, tmp_path / "one", device="cpu", progress=False).run()

    # adaptation in one launch, then learning to post-rank resumed from it in another
    first = train(config, data, tmp_path / "two", "--num-processes", "2", "--stage", "adaptation")
    assert first.returncode == 0, first.stderr[-3000:]
    second = train(config, data, tmp_path / "two", "--num-processes", "2")
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("run folder:") == 1  # only the main process reports
    assert "training process 2 of 2 (MULTI_CPU, gloo)" in second.stderr  # really two processes
    assert_same_weights(tmp_path / "one", tmp_path / "two")
    # gradients reached the encoders in both stages (through the checkpointed backbone)
    trained = weights(tmp_path / "two")
    moved = [k.split(":", 1)[1] for k in trained if k.startswith("model/encoders")]
    assert any(not torch.equal(trained[f"model/encoders.safetensors:{k}"], trained[f"adaptation/encoders.safetensors:{k}"]) for k in moved)

    # the checkpoint reloads and ranks like the single-process one
    requests = read_requests(data / "test.jsonl", TOY_SCHEMA)[:6]
    ours = LLM4PRRanker.from_pretrained(tmp_path / "two").rank(requests, mode="first_token")
    theirs = LLM4PRRanker.from_pretrained(tmp_path / "one").rank(requests, mode="first_token")
    assert [r.ranking for r in ours] == [r.ranking for r in theirs]


def test_activation_checkpointing_changes_nothing_but_memory(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    raw = yaml.safe_load(config.read_text())
    with_checkpointing = TrainConfig.model_validate(raw)
    without = TrainConfig.model_validate({**raw, "gradient_checkpointing": False})
    Trainer(with_checkpointing, data, tmp_path / "with", device="cpu", progress=False).run()
    Trainer(without, data, tmp_path / "without", device="cpu", progress=False).run()
    assert_same_weights(tmp_path / "with", tmp_path / "without")


def test_global_batch_must_split_evenly(setup: tuple[Path, Path], tmp_path: Path) -> None:
    config, data = setup
    raw = yaml.safe_load(config.read_text())
    raw["post_rank"]["batch_size"] = 3
    (tmp_path / "odd.yaml").write_text(yaml.safe_dump(raw))
    result = train(tmp_path / "odd.yaml", data, tmp_path / "run", "--num-processes", "2")
    assert result.returncode != 0
    assert "post_rank.batch_size 3 (the global batch) must be a multiple of the 2 training processes" in result.stderr
