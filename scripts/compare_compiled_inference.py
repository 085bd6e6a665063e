"""Serving latency with the decoder compiled by torch.compile (inductor, weight freezing) against
eager, one request at a time (batch 1, as `llm4pr serve` answers), in one process on one machine.

    .venv/bin/python scripts/compare_compiled_inference.py --checkpoint RUN --data data/ml100k/test.jsonl \
        --requests 60 --out benchmarks/results/latency/compiled-NAME.json

Why: a served `first_token` request is ~80 new tokens through 30 decoder layers, and its time is
the layers' matrix products at small M (scripts/profile_inference.py). Inductor's `freezing`
treats the weights as constants and pre-packs them for oneDNN, which eager bfloat16 products do
not get. The script ranks the same requests eagerly, then compiles each decoder layer
(`dynamic=True`: prompt lengths vary) and ranks them again (the first pass compiles), and
reports p50 per request, compile time, and how far scores and rankings moved.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor_config

from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.requests import PostRankRequest
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.provenance import git_commit, provenance


def timed(ranker: LLM4PRRanker, requests: list[PostRankRequest]) -> tuple[list[float], list[Any]]:
    """Per request: ms, and the answer."""
    times, answers = [], []
    for request in requests:
        began = time.perf_counter()
        [answer] = ranker.rank([request])
        times.append((time.perf_counter() - began) * 1000.0)
        answers.append(answer)
    return times, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--data", required=True, type=Path, help="a requests JSONL file (e.g. the test split)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"])
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    commit = git_commit()
    ranker = LLM4PRRanker.from_pretrained(args.checkpoint, InferenceConfig(mode="first_token", dtype=args.dtype, batch_size=1))
    requests = read_requests(args.data)[: args.requests]
    with torch.no_grad():
        timed(ranker, requests)  # warm-up: text-embedding cache, allocator, one-time kernels
        eager_ms, eager = timed(ranker, requests)

        inductor_config.freezing = True
        layers = ranker.model.causal_lm.get_decoder().layers
        for layer in layers:
            layer.compile(dynamic=True)
        compile_started = time.perf_counter()
        first_ms, _ = timed(ranker, requests)  # compiles (and recompiles while shapes are new)
        compile_s = time.perf_counter() - compile_started
        compiled_ms, compiled = timed(ranker, requests)

    score_gap = max(
        (abs(a - b) for e, c in zip(eager, compiled, strict=True) for a, b in zip(e.scores or [], c.scores or [], strict=True)), default=0.0
    )
    same = sum(e.ranking == c.ranking for e, c in zip(eager, compiled, strict=True))
    report = {
        "checkpoint": str(args.checkpoint),
        "mode": "first_token",
        "backbone_dtype": ranker.model.backbone_dtype,
        "requests": len(requests),
        "eager_p50_ms": round(statistics.median(eager_ms), 1),
        "compiled_p50_ms": round(statistics.median(compiled_ms), 1),
        "first_compiled_pass_s": round(compile_s, 1),
        "first_compiled_pass_max_ms": round(max(first_ms), 1),
        "max_score_difference": round(score_gap, 5),
        "same_ranking": same,
        "compiled": f"each of the {len(layers)} decoder layers: torch.compile(dynamic=True), inductor freezing",
        "wall_s": round(time.perf_counter() - started, 1),
        "threads": torch.get_num_threads(),
        "provenance": provenance(commit),
    }
    for key in ("backbone_dtype", "eager_p50_ms", "compiled_p50_ms", "first_compiled_pass_s", "max_score_difference", "same_ranking"):
        print(f"{key:28s} {report[key]}")
    if args.out:
        write_json(args.out, report)


if __name__ == "__main__":
    main()
