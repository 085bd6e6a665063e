"""`llm4pr study`: train one variant of a recipe and record its validation metrics.

Design decisions are made on the validation split, one variant against another at the same example
budget (the recipe's steps and batch size). A study trains the config with `--set` overrides into
its own run folder (resumable, as `llm4pr train`), scores the WHOLE validation split in both
inference modes, and writes one self-describing JSON file: the command, the overrides, the
resolved config, the metrics, training seconds, peak memory and the provenance record. docs/
decisions.md cites these files; the test split is never touched.
"""

from __future__ import annotations

import resource
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4pr.benchmarks.provenance import git_commit, provenance
from llm4pr.data.config_files import parse_overrides
from llm4pr.data.jsonl import write_json
from llm4pr.training.config import TrainConfig

ALL_VALIDATION = "max_valid_requests=null"  # a study scores every validation request


def run_study(
    config_path: Path,
    data_dir: Path,
    name: str,
    overrides: Sequence[str] = (),
    runs_dir: Path = Path("runs/studies"),
    out_dir: Path = Path("benchmarks/results/studies"),
) -> dict[str, Any]:
    """Train (or resume) the variant `name` and write `out_dir/name.json`; return its record (with
    the `llm4pr study` command line that reproduces it)."""
    from llm4pr.training.trainer import Trainer, training_seconds

    commit = git_commit()
    started = time.perf_counter()
    assignments = [ALL_VALIDATION, *overrides]
    config = TrainConfig.load(config_path, assignments)
    run_dir = runs_dir / name
    report = Trainer(config, data_dir, run_dir).run()
    record = {
        "name": name,
        "command": study_command(config_path, data_dir, name, overrides, runs_dir, out_dir),
        "base_config": str(config_path),
        "overrides": parse_overrides(overrides),
        "config": config.model_dump(mode="json"),
        "data": str(data_dir),
        "run_dir": str(run_dir),
        "validation": report,
        "train_s": training_seconds(run_dir),
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "provenance": provenance(commit),
    }
    write_json(out_dir / f"{name}.json", record)
    return record


def study_command(config_path: Path, data_dir: Path, name: str, overrides: Sequence[str], runs_dir: Path, out_dir: Path) -> str:
    words = ["llm4pr", "study", "--config", str(config_path), "--data", str(data_dir), "--name", name]
    for override in overrides:
        words += ["--set", override]
    return shlex.join([*words, "--runs", str(runs_dir), "--out", str(out_dir)])


def study_summary(record: dict[str, Any]) -> str:
    """One line per inference mode: the validation metrics of a study."""
    lines = []
    for mode in ("generate", "first_token"):
        metrics = record["validation"].get(mode, {}).get("metrics", {})
        lines.append(f"{record['name']} ({mode}): " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return "\n".join(lines)
