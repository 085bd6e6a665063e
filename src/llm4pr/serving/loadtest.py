"""A bounded load test of a running server: `python -m llm4pr.serving.loadtest --url ... --requests F.jsonl`.

`--concurrency` clients POST the file's requests to /v1/post-rank in turn for `--duration`
seconds, then it prints throughput, latency percentiles, status counts, fallbacks, and
malformed rankings (a 200 whose ranking is not a permutation of the request's candidates).
Both knobs are capped and only loopback URLs are accepted unless `--allow-remote`, so that it
cannot be turned into a flood against someone else's server by a typo. Exit status: 0 when
every request got a well-formed answer, 1 if any 5xx, transport error or malformed ranking,
2 for bad arguments or a bad requests file.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.requests import PostRankRequest
from llm4pr.provenance import git_commit, provenance
from llm4pr.rankers.base import SERVED_MODES
from llm4pr.serving.settings import DEFAULT_TOKEN_ENV, is_loopback_host

MAX_CONCURRENCY = 256
MAX_DURATION_S = 600.0
RETRY_PAUSE_S = 0.1
NO_ANSWER = "no_answer"  # status key for requests that got no HTTP response (connection error, timeout)


@dataclass(frozen=True)
class Sample:
    """One request's outcome; `status` 0 means no HTTP response."""

    status: int
    latency_s: float
    fallback: bool = False
    malformed: bool = False


def judge(request: PostRankRequest, body: Any) -> tuple[bool, bool]:
    """(fallback, malformed) of a 200 answer: malformed unless it is a permutation of the candidates."""
    ranking = body.get("ranking") if isinstance(body, dict) else None
    well_formed = (
        isinstance(ranking, list)
        and body.get("request_id") == request.request_id
        and all(isinstance(i, str) for i in ranking)
        and sorted(ranking) == sorted(request.candidate_ids)
    )
    return (well_formed and body.get("fallback") is True), not well_formed


def summarize(samples: Sequence[Sample], wall_s: float) -> dict[str, Any]:
    """Throughput and latency percentiles of answered requests (any HTTP status), outcome counts."""
    answered = [s.latency_s * 1000.0 for s in samples if s.status]
    percentiles = np.percentile(answered, [50, 95, 99]).tolist() if answered else [None] * 3
    statuses = Counter(str(s.status) if s.status else NO_ANSWER for s in samples)
    return {
        "requests": len(samples),
        "answered": len(answered),
        "duration_s": round(wall_s, 3),
        "requests_per_s": round(len(answered) / wall_s, 3) if wall_s > 0 else 0.0,
        "latency_ms": {name: None if v is None else round(v, 3) for name, v in zip(("p50", "p95", "p99"), percentiles, strict=True)},
        "status_counts": dict(sorted(statuses.items())),
        "server_errors": sum(500 <= s.status < 600 for s in samples),
        "no_answer": statuses.get(NO_ANSWER, 0),
        "fallbacks": sum(s.fallback for s in samples),
        "malformed_rankings": sum(s.malformed for s in samples),
    }


async def run_load(
    url: str,
    requests: Sequence[PostRankRequest],
    concurrency: int,
    duration_s: float,
    mode: str | None = None,
    token: str | None = None,
    timeout_s: float = 30.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[Sample], float]:
    """`concurrency` workers send the requests round-robin until `duration_s` has passed."""
    endpoint = f"{url.rstrip('/')}/v1/post-rank"
    payloads = [r.model_dump(mode="json", exclude_none=True) for r in requests]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    params = {"mode": mode} if mode else {}
    turn = itertools.count()
    samples: list[Sample] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    started = time.perf_counter()
    stop_at = started + duration_s

    async def worker(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < stop_at:
            index = next(turn) % len(requests)
            sent = time.perf_counter()
            try:
                response = await client.post(endpoint, json=payloads[index], params=params)
            except httpx.HTTPError:
                samples.append(Sample(0, time.perf_counter() - sent))
                await asyncio.sleep(RETRY_PAUSE_S)  # a refused connection fails at once: do not spin
                continue
            latency_s = time.perf_counter() - sent
            fallback, malformed = False, False
            if response.status_code == 200:
                try:
                    body = response.json()
                except ValueError:
                    body = None
                fallback, malformed = judge(requests[index], body)
            samples.append(Sample(response.status_code, latency_s, fallback, malformed))

    async with httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits, transport=transport) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def format_summary(summary: dict[str, Any]) -> str:
    latency = summary["latency_ms"]
    return "\n".join(
        [
            f"requests: {summary['requests']} sent, {summary['answered']} answered in {summary['duration_s']} s"
            f" ({summary['requests_per_s']} answered/s)",
            f"latency ms: p50 {latency['p50']}  p95 {latency['p95']}  p99 {latency['p99']}",
            "status: " + ", ".join(f"{code}: {n}" for code, n in summary["status_counts"].items()),
            f"5xx: {summary['server_errors']}  no answer: {summary['no_answer']}  "
            f"fallbacks: {summary['fallbacks']}  malformed rankings: {summary['malformed_rankings']}",
        ]
    )


def _bounded(kind: Callable[[str], float], high: float) -> Callable[[str], float]:
    """An argparse type accepting 0 < value <= high."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
        if not 0 < value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside (0, {high:g}]")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m llm4pr.serving.loadtest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="server base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", required=True, type=Path, help="requests file (JSON lines, data-contract format)")
    parser.add_argument("--concurrency", type=_bounded(int, MAX_CONCURRENCY), default=16, help=f"clients in flight (1-{MAX_CONCURRENCY})")
    parser.add_argument("--duration", type=_bounded(float, MAX_DURATION_S), default=60.0, help=f"seconds (at most {MAX_DURATION_S:g})")
    parser.add_argument("--mode", choices=SERVED_MODES, help="inference mode (default: the server's)")
    parser.add_argument("--timeout", type=_bounded(float, MAX_DURATION_S), default=30.0, help="seconds per request")
    parser.add_argument("--token-env", default=DEFAULT_TOKEN_ENV, help="env var with the bearer token, if the server wants one")
    parser.add_argument("--allow-remote", action="store_true", help="allow a URL whose host is not loopback")
    parser.add_argument("--out", type=Path, help="also write the summary here (JSON)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    url = httpx.URL(args.url)
    if url.scheme not in ("http", "https") or not url.host:
        parser.error(f"--url must be an http(s) URL with a host, got {args.url!r}")
    if not args.allow_remote and not is_loopback_host(url.host):
        parser.error(f"--url host {url.host!r} is not loopback; pass --allow-remote to load-test another machine")
    try:
        requests = read_requests(args.requests)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not requests:
        print(f"error: {args.requests}: no requests", file=sys.stderr)
        return 2
    samples, wall_s = asyncio.run(
        run_load(args.url, requests, args.concurrency, args.duration, args.mode, os.environ.get(args.token_env), args.timeout)
    )
    summary = {**summarize(samples, wall_s), "provenance": provenance(git_commit())}  # the client's machine and code
    print(format_summary(summary))
    if args.out is not None:
        write_json(args.out, summary)
    failed = summary["server_errors"] or summary["no_answer"] or summary["malformed_rankings"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
