"""`llm4pr evaluate`: score a run file, the ranking-stage order, or a checkpoint, and report.

For a checkpoint the report adds what a post-ranking service cares about: how often the model's
own output was a valid permutation (`valid_ratio`), how many outputs needed repair or fell back
to the ranking-stage order, mean input tokens per request, and latency p50/p95 per batch call
(per request when `--batch-size 1`).
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

from llm4pr.data.jsonl import read_requests, read_run, write_json
from llm4pr.data.requests import RankResult
from llm4pr.evaluation.evaluate import evaluate_run, format_report_table
from llm4pr.provenance import git_commit, provenance
from llm4pr.rankers.base import InitialOrderRanker


def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    commit = git_commit()
    extra: dict[str, Any]
    if args.checkpoint is not None:
        from llm4pr.inference.ranker import LLM4PRRanker

        ranker = LLM4PRRanker.from_pretrained(
            args.checkpoint, device=args.device, quantize=args.quantize, mode=args.mode, batch_size=args.batch_size, window=args.window,
            stride=args.stride, shifts=args.shifts, progress=True,
        )
        requests = read_requests(args.data, ranker.schema)
        run = ranker.rank(requests)
        extra = {"system": f"llm4pr ({args.checkpoint})", "mode": args.mode, "batch_size": args.batch_size, "quantize": args.quantize,
                 "shifts": args.shifts}
        extra.update(inference_statistics(run, [ranker.prompt_length(r) for r in requests]))
    else:
        requests = read_requests(args.data)
        if args.run == "initial":
            run, extra = InitialOrderRanker().rank(requests), {"system": "initial (ranking-stage order)"}
        else:
            run, extra = read_run(args.run), {"system": f"run file {args.run}"}
    report = evaluate_run(requests, run, ks=args.k, gain=args.gain, threshold=args.threshold)
    report.update(extra)
    report["provenance"] = provenance(commit)
    print(format_report_table(report))
    if args.out is not None:
        write_json(args.out, report)
        print(f"wrote {args.out}")
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
