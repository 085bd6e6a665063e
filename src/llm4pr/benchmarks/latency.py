"""`llm4pr bench-latency`: what post-ranking costs per request, measured in one run.

On the same backbone and the same requests it measures mean input tokens and p50/p95 latency per
request (batch 1) for `generate` (the paper's decoding), `first_token` (one forward pass) and a
PTPR-style all-text prompt (every feature written out, no soft tokens, decoded like `generate`),
and throughput at batch 1 and 16. The checkpoint is loaded with the `InferenceConfig` given (device,
window, stride); the benchmark itself sets each system's mode, the batch size (16) and, on CPUs,
adds rows for the float type the checkpoint's dtype did not resolve to on this machine (float32
or bfloat16: the trade-off `model.dtype: auto` decided by measurement, model/precision.py) and
int8 rows. Text embeddings of titles and queries are computed once and cached, as in a running
service; a warm-up pass fills that cache before anything is timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4pr.provenance import git_commit, provenance
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.requests import PostRankRequest
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.llm4pr import LLM4PRModel


def text_prompt_ranker(ranker: LLM4PRRanker) -> LLM4PRRanker:
    """The same backbone and identifiers, prompted with every feature as text (PTPR's layout)."""
    model = ranker.model
    config = model.config.model_copy(update={"prompt_style": "text"})
    text_model = LLM4PRModel(config, model.schema, model.stats, model.backbone, model.text_encoder)
    return LLM4PRRanker(text_model, ranker.builder, ranker.config.replace(mode="generate", shifts=1))


def per_request_latency(rank: Callable[[Sequence[PostRankRequest]], object], requests: Sequence[PostRankRequest]) -> list[float]:
    latencies = []
    for request in requests:
        started = time.perf_counter()
        rank([request])
        latencies.append((time.perf_counter() - started) * 1000.0)
    return latencies


def throughput(rank: Callable[[Sequence[PostRankRequest]], object], requests: Sequence[PostRankRequest], batch_size: int) -> float:
    """Requests per second when requests arrive in batches of `batch_size`."""
    started = time.perf_counter()
    for start in range(0, len(requests), batch_size):
        rank(requests[start : start + batch_size])
    return len(requests) / (time.perf_counter() - started)


def bench_latency(checkpoint: str | Path, data: str | Path, n_requests: int = 100, config: InferenceConfig | None = None) -> dict[str, Any]:
    commit = git_commit()
    config = (config or InferenceConfig()).replace(batch_size=16, quantize=None)
    ranker = LLM4PRRanker.from_pretrained(checkpoint, config)
    requests = read_requests(data, ranker.model.schema)[:n_requests]
    text_ranker = text_prompt_ranker(ranker)
    ranker.rank(requests, mode="first_token")  # warm-up: fills the text-embedding cache
    systems = {
        "generate": (ranker, "generate"),
        "first_token": (ranker, "first_token"),
        "all_text_generate": (text_ranker, "generate"),
    }
    dtype = ranker.model.backbone_dtype
    if torch.device(config.device).type == "cpu":  # the other float type and the int8 decoder, measured in the same run
        other_dtype = "float32" if dtype != "float32" else "bfloat16"
        variants = {"bf16" if other_dtype == "bfloat16" else other_dtype: config.replace(dtype=other_dtype), "int8": config.replace(quantize="int8", dtype=None)}
        for suffix, variant in variants.items():
            other = LLM4PRRanker.from_pretrained(checkpoint, variant)
            other.rank(requests[:2], mode="first_token")
            systems.update({f"generate_{suffix}": (other, "generate"), f"first_token_{suffix}": (other, "first_token")})
    report: dict[str, Any] = {
        "requests": len(requests), "device": config.device, "dtype": dtype, "provenance": provenance(commit), "systems": {}
    }
    for name, (system, mode) in systems.items():
        def rank(batch: Sequence[PostRankRequest], system: LLM4PRRanker = system, mode: str = mode) -> object:
            return system.rank(batch, mode=mode)

        latencies = per_request_latency(rank, requests)
        report["systems"][name] = {
            "mean_input_tokens": round(statistics.fmean(system.prompt_length(r) for r in requests), 2),
            "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95), "mean": round(statistics.fmean(latencies), 2)},
            "throughput_rps": {
                "batch_1": round(len(requests) / (sum(latencies) / 1000.0), 2),
                "batch_16": round(throughput(rank, requests, 16), 2),
            },
        }
    report["ratios"] = _ratios(report["systems"])
    return report


def _ratios(systems: dict[str, Any]) -> dict[str, float]:
    first, generate, text = systems["first_token"], systems["generate"], systems["all_text_generate"]
    return {
        "generate_over_first_token_p50": round(generate["latency_ms"]["p50"] / first["latency_ms"]["p50"], 2),
        "all_text_over_first_token_tokens": round(text["mean_input_tokens"] / first["mean_input_tokens"], 2),
        "all_text_over_first_token_p50": round(text["latency_ms"]["p50"] / first["latency_ms"]["p50"], 2),
        "all_text_over_generate_tokens": round(text["mean_input_tokens"] / generate["mean_input_tokens"], 2),
        "all_text_over_generate_p50": round(text["latency_ms"]["p50"] / generate["latency_ms"]["p50"], 2),
        "first_token_batch16_over_batch1": round(first["throughput_rps"]["batch_16"] / first["throughput_rps"]["batch_1"], 2),
        **_int8_ratios(systems),
    }


def _int8_ratios(systems: dict[str, Any]) -> dict[str, float]:
    if "first_token_int8" not in systems:
        return {}
    first, generate = systems["first_token_int8"], systems["generate_int8"]
    return {
        "first_token_over_first_token_int8_p50": round(systems["first_token"]["latency_ms"]["p50"] / first["latency_ms"]["p50"], 2),
        "generate_int8_over_first_token_int8_p50": round(generate["latency_ms"]["p50"] / first["latency_ms"]["p50"], 2),
        "all_text_over_first_token_int8_p50": round(systems["all_text_generate"]["latency_ms"]["p50"] / first["latency_ms"]["p50"], 2),
    }


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def format_latency_table(report: dict[str, Any]) -> str:
    lines = [f"{'system':<18} {'tokens':>7} {'p50 ms':>8} {'p95 ms':>8} {'rps@1':>7} {'rps@16':>7}"]
    for name, row in report["systems"].items():
        lines.append(
            f"{name:<18} {row['mean_input_tokens']:>7.1f} {row['latency_ms']['p50']:>8.1f} {row['latency_ms']['p95']:>8.1f} "
            f"{row['throughput_rps']['batch_1']:>7.2f} {row['throughput_rps']['batch_16']:>7.2f}"
        )
    lines.append("ratios: " + ", ".join(f"{k} {v}" for k, v in report["ratios"].items()))
    return "\n".join(lines)


def bench_latency_command(checkpoint: Path, data: Path, out: Path | None, n_requests: int, config: InferenceConfig) -> dict[str, Any]:
    report = bench_latency(checkpoint, data, n_requests=n_requests, config=config)
    print(format_latency_table(report))
    if out is not None:
        write_json(out, report)
        print(f"wrote {out}")
    return report
