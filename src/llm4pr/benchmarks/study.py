"""`llm4pr study`: train one variant of a recipe and record its validation metrics.

Design decisions are made on the validation split, one variant against another at the same example
budget (the recipe's steps and batch size). A study trains the config with `--set` overrides into
its own run folder (resumable, as `llm4pr train`), scores the WHOLE validation split in both
inference modes, and writes one self-describing JSON file: the command, the overrides, the
resolved config, the metrics, training seconds, peak memory and the provenance record. docs/
decisions.md cites these files; the test split is never touched.

`run_baseline_study` does the same for a baseline of the benchmark (fitted on the training split
without the validation split, so that its validation figures are not early-stopped on it): the
reference a variant of the model must beat before it is worth a test-split benchmark run.
"""

from __future__ import annotations

import resource
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llm4pr.provenance import git_commit, provenance
from llm4pr.data.config_files import parse_overrides
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.evaluation.metrics import check_cutoffs
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
    }
    return _write_record(record, out_dir, started, commit)


def run_baseline_study(
    baseline: str,
    data_dir: Path,
    name: str,
    out_dir: Path = Path("benchmarks/results/studies"),
    seed: int = 0,
    metrics_at: Sequence[int] = (3, 5),
    overrides: Sequence[str] = (),
) -> dict[str, Any]:
    """Fit the baseline `baseline` (constructor arguments from `overrides`, "factors=50" as `--set`
    takes them) on `data_dir`'s training split, score the whole validation split, write
    `out_dir/name.json` and return its record."""
    from llm4pr.baselines import build_baseline
    from llm4pr.data.schema import FeatureSchema
    from llm4pr.evaluation.evaluate import evaluate_run

    try:
        cutoffs = list(check_cutoffs(metrics_at))
    except ValueError as exc:
        raise DataError(f"study --metrics-at: cutoffs must be >= 1 and distinct ({exc})") from None
    params = parse_overrides(overrides)
    commit = git_commit()
    started = time.perf_counter()
    schema = FeatureSchema.load(data_dir / "schema.json")
    train = read_requests(data_dir / "train.jsonl", schema)
    valid = read_requests(data_dir / "valid.jsonl", schema)
    try:
        ranker = build_baseline(baseline, **params).fit(train, schema, None, seed)
    except (TypeError, ValueError) as exc:  # an unknown name or argument, or a baseline the data's schema cannot feed
        raise DataError(f"study --baseline {baseline}: {exc}") from None
    train_s = time.perf_counter() - started
    record = {
        "name": name,
        "command": shlex.join(
            ["llm4pr", "study", "--baseline", baseline, "--data", str(data_dir), "--name", name, "--out", str(out_dir)]
            + [word for k in cutoffs for word in ("--metrics-at", str(k))]
            + [word for override in overrides for word in ("--set", override)]
            + (["--seed", str(seed)] if seed else [])
        ),
        "baseline": baseline,
        "params": ranker.params,
        "seed": seed,
        "data": str(data_dir),
        "validation": {"ranking": evaluate_run(valid, ranker.rank(valid), ks=cutoffs)},
        "train_s": round(train_s, 1),
    }
    return _write_record(record, out_dir, started, commit)


def _write_record(record: dict[str, Any], out_dir: Path, started: float, commit: str | None) -> dict[str, Any]:
    """Add what every study file records about its making (wall time, peak memory, provenance),
    write it as `out_dir/<name>.json` and return it."""
    record = {
        **record,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "provenance": provenance(commit),
    }
    write_json(out_dir / f"{record['name']}.json", record)
    return record


def study_command(config_path: Path, data_dir: Path, name: str, overrides: Sequence[str], runs_dir: Path, out_dir: Path) -> str:
    words = ["llm4pr", "study", "--config", str(config_path), "--data", str(data_dir), "--name", name]
    for override in overrides:
        words += ["--set", override]
    return shlex.join([*words, "--runs", str(runs_dir), "--out", str(out_dir)])


def study_summary(record: dict[str, Any]) -> str:
    """One line per inference mode (or the baseline's one ranking): the validation metrics of a study."""
    lines = []
    for mode, report in record["validation"].items():
        if isinstance(report, dict) and "metrics" in report:
            lines.append(f"{record['name']} ({mode}): " + ", ".join(f"{k} {v:.4f}" for k, v in report["metrics"].items()))
    return "\n".join(lines)
