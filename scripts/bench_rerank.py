"""How long does a rerank call take for 20, 100, 1,000 documents? Timed in-process, end to end.

    .venv/bin/python scripts/bench_rerank.py --checkpoint DIR --docs 20 100 1000 [--repeats 3] --out FILE.json

DIR is an llm4pr checkpoint or run folder (or a saved baseline) whose schema takes rerank calls
(an item text feature, no user features: docs/serving.md). The app is built as `llm4pr serve`
builds it (`create_app`, micro-batcher and all) and called through Starlette's in-process client
on `/v2/rerank`, one call at a time, so that a time is what one client waits for one call: JSON
parsing, validation, queueing, every sliding-window pass (a list longer than the window costs one
model pass per window step), and the response. No network, no concurrency. The documents are
synthetic, short and deterministic. Each size gets `--warmup` untimed calls, then `--repeats` timed
ones; a call that fell back (deadline, model error) is counted and fails the run, since its time
is not a ranking's. The report (JSON) carries `llm4pr.provenance` so that a number says what ran where.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

from llm4pr.data.jsonl import write_json
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.window import window_schedule
from llm4pr.loading import load_ranker
from llm4pr.provenance import git_commit, provenance

QUERY = "sparse retrieval with learned term weights"
_WORDS = ("retrieval", "sparse", "dense", "ranking", "query", "index", "term", "weights", "neural", "passage", "bm25", "model")


def documents(n: int) -> list[str]:
    """n short distinct documents, a few words each, some sharing the query's terms (so that an
    in-call BM25 estimate has something to score)."""
    return [f"document {i}: {_WORDS[i % len(_WORDS)]} {_WORDS[(3 * i + 1) % len(_WORDS)]} {_WORDS[(7 * i + 2) % len(_WORDS)]}" for i in range(n)]


def run(
    checkpoint: Path,
    sizes: list[int],
    out: Path,
    repeats: int = 3,
    warmup: int = 1,
    inference: InferenceConfig | None = None,
    deadline_ms: float = 600_000.0,
) -> dict[str, Any]:
    """Time `/v2/rerank` calls of each size in `sizes` on the checkpoint; write the report to `out`."""
    from fastapi.testclient import TestClient

    from llm4pr.serving import ServingSettings, create_app

    if not sizes or min(sizes) < 1:
        raise ValueError(f"--docs: sizes must be at least 1, got {sizes}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"--repeats must be at least 1 and --warmup at least 0, got {repeats} and {warmup}")
    commit = git_commit()
    config = (inference or InferenceConfig()).replace(mode="first_token", batch_size=1)
    ranker = load_ranker(checkpoint, config)
    window = getattr(getattr(ranker, "config", None), "window", None)
    stride = getattr(getattr(ranker, "config", None), "stride", None)
    # the limits a 1,000-document call needs, and a deadline that never cuts a timed call short
    settings = ServingSettings(mode="first_token", max_batch_size=1, max_candidates=max(sizes), deadline_ms=deadline_ms)
    token = os.environ.get(settings.token_env)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    rows = []
    with TestClient(create_app(ranker, settings), raise_server_exceptions=True) as client:
        _wait_ready(client)
        for n in sizes:
            body = {"model": "llm4pr", "query": QUERY, "documents": documents(n)}
            times_ms, fallbacks = [], 0
            for call in range(warmup + repeats):
                started = time.perf_counter()
                response = client.post("/v2/rerank", json=body, headers=headers)
                elapsed_ms = (time.perf_counter() - started) * 1000.0
                if response.status_code != 200:
                    raise RuntimeError(f"/v2/rerank with {n} documents: HTTP {response.status_code}: {response.text[:500]}")
                answer = response.json()
                if sorted(r["index"] for r in answer["results"]) != list(range(n)):
                    raise RuntimeError(f"/v2/rerank with {n} documents: the results are not every index exactly once")
                if call >= warmup:
                    times_ms.append(elapsed_ms)
                    fallbacks += bool(answer["meta"]["fallback"])
            rows.append(
                {
                    "documents": n,
                    "windows": len(window_schedule(n, window, stride)) if window and stride else 1,
                    "calls": repeats,
                    "fallbacks": fallbacks,
                    "latency_ms": {
                        "p50": round(statistics.median(times_ms), 2),
                        "mean": round(statistics.fmean(times_ms), 2),
                        "min": round(min(times_ms), 2),
                        "max": round(max(times_ms), 2),
                    },
                }
            )
    report = {
        "checkpoint": str(checkpoint),
        "ranker": ranker.name,
        "endpoint": "/v2/rerank (in-process, one call at a time)",
        "window": window,
        "stride": stride,
        "inference": config.model_dump(mode="json"),
        "warmup": warmup,
        "sizes": rows,
        "provenance": provenance(commit),
    }
    write_json(out, report)
    if any(row["fallbacks"] for row in rows):
        raise RuntimeError(f"some timed calls fell back (see {out}): their times are not rankings'")
    return report


def _wait_ready(client: Any) -> None:
    """Until the warm-up request has run in the worker (the first call would otherwise time it)."""
    for _ in range(6000):
        answer = client.get("/readyz")
        if answer.status_code == 200:
            return
        time.sleep(0.01)
    raise RuntimeError(f"the server did not become ready: {answer.json()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="an llm4pr checkpoint or run folder that takes rerank calls")
    parser.add_argument("--docs", required=True, type=int, nargs="+", help="documents per call, e.g. 20 100 1000")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls per size before the timed ones")
    parser.add_argument("--window", type=int, help="sliding window (default: InferenceConfig's)")
    parser.add_argument("--stride", type=int, help="sliding window stride (default: InferenceConfig's)")
    parser.add_argument("--device", help="torch device (default cpu)")
    parser.add_argument("--quantize", choices=["int8"], help="dynamic int8 decoder (CPU)")
    parser.add_argument("--out", required=True, type=Path, help="the report (JSON)")
    args = parser.parse_args()
    overrides = {name: getattr(args, name) for name in ("window", "stride", "device", "quantize") if getattr(args, name) is not None}
    report = run(args.checkpoint, args.docs, args.out, args.repeats, args.warmup, InferenceConfig(**overrides))
    for row in report["sizes"]:
        print(f"{row['documents']:>5} documents, {row['windows']:>3} window(s): p50 {row['latency_ms']['p50']:.1f} ms ({row['calls']} calls)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
