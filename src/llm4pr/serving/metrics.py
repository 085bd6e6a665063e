"""Prometheus metrics of one app: HTTP requests by endpoint and status, latency, fallbacks, batches.

Each app has its own registry (not the process-global one), so that several apps in one process
(tests, embedding) never share or collide on counters. Endpoint labels are route templates, and
unknown paths are counted as "other", so that clients cannot create unbounded label values.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServingMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, queue_depth: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "llm4pr_http_requests", "HTTP requests answered, by endpoint and status code", ["endpoint", "status"], registry=self.registry
        )
        self.http_latency = Histogram(
            "llm4pr_http_request_duration_seconds", "time from receipt to response, by endpoint", ["endpoint"],
            buckets=LATENCY_BUCKETS_S, registry=self.registry,
        )
        self.rankings = Counter(
            "llm4pr_rankings", "post-ranking requests answered (one per request in a body), by mode", ["mode"], registry=self.registry
        )
        self.fallbacks = Counter(
            "llm4pr_fallbacks", "requests answered with the ranking-stage order, by mode and reason", ["mode", "reason"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "llm4pr_batch_size", "requests per model call", buckets=BATCH_BUCKETS, registry=self.registry
        )
        queue = Gauge("llm4pr_queue_depth", "requests waiting for the model", registry=self.registry)
        queue.set_function(queue_depth)

    def observe_http(self, endpoint: str, status: int, seconds: float) -> None:
        self.http_requests.labels(endpoint=endpoint, status=str(status)).inc()
        self.http_latency.labels(endpoint=endpoint).observe(seconds)

    def observe_ranking(self, mode: str, fallback_reason: str | None) -> None:
        self.rankings.labels(mode=mode).inc()
        if fallback_reason is not None:
            self.fallbacks.labels(mode=mode, reason=fallback_reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
