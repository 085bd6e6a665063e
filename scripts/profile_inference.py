"""Profile post-ranking one request at a time (batch 1, as `llm4pr serve` answers): where a request's
milliseconds go, part by part and op by op.

    .venv/bin/python scripts/profile_inference.py --checkpoint RUN --data data/ml100k/test.jsonl \
        --mode first_token --requests 40 --out benchmarks/results/latency/profile-NAME.json

Loads the checkpoint as `llm4pr rank` does (`--dtype`, `--quantize` as there), ranks every request
once to warm up (the text-embedding cache fills, as in a running service), then times each request
again with the model's parts wrapped in timers: the prompt layout, the soft tokens (field encoders,
QIAs, request context), the cached instruction prefix, and the backbone's decoder layers. A last
pass runs under torch.profiler for the top ops by self CPU time. The JSON file holds the part
times (median ms per request), the table, and the provenance record (CPU model, commit, threads).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.provenance import git_commit, provenance


@contextmanager
def timed_parts(ranker: LLM4PRRanker, totals: dict[str, float]) -> Iterator[None]:
    """Wrap the parts of a request's path in wall-clock timers that add to `totals` (ms)."""
    model = ranker.model
    targets: list[tuple[Any, str, str]] = [
        (ranker.prompter, "main_task", "prompt layout"),
        (model, "soft_tokens", "soft tokens (encoders, QIA, context)"),
        (model.causal_lm.get_decoder(), "forward", "backbone decoder (all layers)"),
    ]
    if ranker.prefix_cache is not None:
        targets.append((ranker.prefix_cache, "for_batch", "instruction prefix cache"))
    # Patched on the classes (a prompter is a frozen dataclass), restored on exit.
    originals = [(type(owner), name, getattr(type(owner), name)) for owner, name, _ in targets]

    def timer(function: Callable[..., Any], label: str) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] += (time.perf_counter() - started) * 1000.0

        return wrapped

    for (_, _, label), (cls, name, original) in zip(targets, originals, strict=True):
        setattr(cls, name, timer(original, label))
    try:
        yield
    finally:
        for cls, name, original in originals:
            setattr(cls, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="a requests JSONL file (e.g. the test split)")
    parser.add_argument("--mode", default="first_token", choices=["first_token", "generate"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--quantize", default=None, choices=["int8"])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--rows", type=int, default=20, help="top ops to keep")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    commit = git_commit()
    dtype = "float32" if args.quantize else args.dtype  # int8 starts from float32 weights
    config = InferenceConfig(mode=args.mode, dtype=dtype, quantize=args.quantize, batch_size=1)
    ranker = LLM4PRRanker.from_pretrained(args.checkpoint, config)
    requests = read_requests(args.data)[: args.requests]
    for request in requests:  # warm-up: text-embedding cache, allocator, one-time kernels
        ranker.rank([request])

    per_request: list[float] = []
    parts: dict[str, list[float]] = defaultdict(list)
    for request in requests:
        totals: dict[str, float] = defaultdict(float)
        with timed_parts(ranker, totals):
            began = time.perf_counter()
            ranker.rank([request])
            per_request.append((time.perf_counter() - began) * 1000.0)
        for label, value in totals.items():
            parts[label].append(value)

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for request in requests:
            ranker.rank([request])
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    ops = [
        {"op": e.key, "self_ms_per_request": round(e.self_cpu_time_total / 1000 / len(requests), 2), "self_share": round(e.self_cpu_time_total / total, 4), "calls_per_request": round(e.count / len(requests), 1)}
        for e in events[: args.rows]
    ]

    report = {
        "checkpoint": str(args.checkpoint),
        "mode": args.mode,
        "backbone_dtype": ranker.model.backbone_dtype,
        "quantize": args.quantize,
        "requests": len(requests),
        "p50_ms": round(statistics.median(per_request), 1),
        "parts_p50_ms": {label: round(statistics.median(values), 1) for label, values in parts.items()},
        "top_ops": ops,
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "provenance": provenance(commit),
    }
    print(f"p50 {report['p50_ms']} ms per request ({args.mode}, {report['backbone_dtype']}, {len(requests)} requests)")
    for label, value in report["parts_p50_ms"].items():
        print(f"  {label:40s} {value:8.1f} ms")
    print(f"{'op':45s} {'ms/request':>10s} {'share':>7s} {'calls':>7s}")
    for op in ops:
        print(f"{op['op'][:45]:45s} {op['self_ms_per_request']:10.2f} {op['self_share']:7.1%} {op['calls_per_request']:7.1f}")
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
