"""`llm4pr evaluate`: score a run file, the ranking-stage order, or a checkpoint, and report.

For a checkpoint the report adds what a post-ranking service cares about: how often the model's
own output was a valid permutation (`valid_ratio`), how many outputs needed repair or fell back
to the ranking-stage order, mean input tokens per request, and latency p50/p95 per batch call
(per request when `--batch-size 1`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm4pr.data.jsonl import read_requests, read_run, write_json
from llm4pr.data.requests import RankResult
from llm4pr.evaluation.evaluate import evaluate_run, format_report_table
from llm4pr.evaluation.metrics import Gain
from llm4pr.inference.config import InferenceConfig
from llm4pr.provenance import git_commit, provenance
from llm4pr.rankers.base import InitialOrderRanker


def evaluate_command(
    data: Path,
    *,
    run: str | None = None,
    checkpoint: Path | None = None,
    config: InferenceConfig | None = None,
    out: Path | None = None,
    ks: Sequence[int] = (3, 5),
    gain: Gain = "exponential",
    threshold: float | None = None,
) -> dict[str, Any]:
    """Score `run` ("initial": the ranking-stage order; else a run file) or what `checkpoint` ranks
    with `config` on the labelled requests of `data`; print the table, write the report to `out`."""
    commit = git_commit()
    extra: dict[str, Any]
    if checkpoint is not None:
        from llm4pr.inference.ranker import LLM4PRRanker

        ranker = LLM4PRRanker.from_pretrained(checkpoint, config, progress=True)
        requests = read_requests(data, ranker.schema)
        ranked = ranker.rank(requests)
        settings = ranker.config
        extra = {"system": f"llm4pr ({checkpoint})", "mode": settings.mode, "batch_size": settings.batch_size, "quantize": settings.quantize,
                 "dtype": ranker.model.backbone_dtype, "shifts": settings.shifts}
        extra.update(inference_statistics(ranked, [ranker.prompt_length(r) for r in requests]))
    elif run is not None:
        requests = read_requests(data)
        if run == "initial":
            ranked, extra = InitialOrderRanker().rank(requests), {"system": "initial (ranking-stage order)"}
        else:
            ranked, extra = read_run(run), {"system": f"run file {run}"}
    else:
        raise ValueError("evaluate a run or a checkpoint: give one of them")
    report = evaluate_run(requests, ranked, ks=ks, gain=gain, threshold=threshold)
    report.update(extra)
    return publish_report(report, commit, format_report_table, out)


def publish_report(
    report: dict[str, Any], commit: str | None, table: Callable[[dict[str, Any]], str], out: Path | None
) -> dict[str, Any]:
    """Add the provenance (code at `commit`), print the report as `table` formats it, write it to `out`."""
    report["provenance"] = provenance(commit)
    print(table(report))
    if out is not None:
        write_json(out, report)
        print(f"wrote {out}")
    return report


def inference_statistics(run: Sequence[RankResult], prompt_lengths: Sequence[int]) -> dict[str, Any]:
    n = len(run)
    fallbacks = sum(r.fallback for r in run)
    repaired = sum(bool(r.repaired) for r in run)
    latencies = [r.latency_ms for r in run if r.latency_ms is not None]
    return {
        "valid_ratio": (n - fallbacks - repaired) / n if n else 0.0,
        "repaired": repaired,
        "fallbacks": fallbacks,
        "mean_input_tokens": statistics.fmean(prompt_lengths) if prompt_lengths else 0.0,
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
    }


def _percentile(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None
