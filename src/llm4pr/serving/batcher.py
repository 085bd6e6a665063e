"""Micro-batching: concurrent requests share model calls, made by ONE worker thread.

Torch on a CPU runs one inference at a time best, so a single thread owns the model; throughput
comes from ranking the requests that arrive close together in one call. The first queued
request waits at most `max_wait_ms` for others of the same mode; a batch never mixes modes and
never exceeds `max_batch_size`; requests that ask for explanations are batched apart and
answered by the `explain` function (the ranker's `explain`). Each request gets its own `Future`: an HTTP handler whose
deadline passes cancels it (a request still queued is then skipped; a late result is dropped).

The worker answers every request it runs with a valid permutation: if the rank function raises,
or returns something that is not a permutation of a request's candidates, that request gets the
ranking-stage order marked `fallback`. `close()` stops new submissions and drains the queue.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.rankers.base import Mode, fallback_result

logger = logging.getLogger(__name__)

RankFunction = Callable[[Sequence[PostRankRequest], Mode], list[RankResult]]


class BatcherUnavailable(RuntimeError):
    """The queue is full or the batcher is shutting down: the caller should fall back."""


@dataclass
class _Job:
    request: PostRankRequest
    mode: Mode
    explain: bool = False
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[RankResult] = field(default_factory=Future)


class MicroBatcher:
    def __init__(
        self, rank: RankFunction, max_batch_size: int, max_wait_ms: float, max_queue_size: int, explain: RankFunction | None = None
    ) -> None:
        self._rank = rank
        self._explain = explain
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_ms / 1000.0
        self._max_queue_size = max_queue_size
        self._pending: deque[_Job] = deque()
        self._condition = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="llm4pr-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, request: PostRankRequest, mode: Mode, explain: bool = False) -> Future[RankResult]:
        """Queue one request (`explain`: answered with its explanation); raises BatcherUnavailable
        when full or closing."""
        if explain and self._explain is None:
            raise ValueError("this batcher was built without an explain function")
        job = _Job(request, mode, explain)
        with self._condition:
            if self._closing:
                raise BatcherUnavailable("the server is shutting down")
            if len(self._pending) >= self._max_queue_size:
                self._drop_cancelled()
            if len(self._pending) >= self._max_queue_size:
                raise BatcherUnavailable(f"the queue is full ({self._max_queue_size} requests)")
            self._pending.append(job)
            self._condition.notify()
        return job.future

    def pending(self) -> int:
        """Requests waiting for the worker (a gauge for /metrics)."""
        return len(self._pending)

    def close(self, timeout_s: float) -> bool:
        """Refuse new requests, let the worker finish the queued ones; True if it drained in time."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        drained = not self._thread.is_alive()
        if not drained:
            logger.warning("batcher did not drain within %.1f s; %d request(s) left", timeout_s, self.pending())
        return drained

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            if live:
                self._answer(live)

    def _next_batch(self) -> list[_Job] | None:
        """Block until a batch is due: full, or its first request has waited `max_wait_ms`."""
        with self._condition:
            while True:
                self._drop_cancelled()
                if self._pending:
                    break
                if self._closing:
                    return None
                self._condition.wait()
            first = self._pending[0]
            flush_at = first.enqueued + self._max_wait_s
            while True:
                batch = [job for job in self._pending if (job.mode, job.explain) == (first.mode, first.explain)][: self._max_batch_size]
                remaining = flush_at - time.monotonic()
                if len(batch) >= self._max_batch_size or remaining <= 0 or self._closing:
                    break
                self._condition.wait(remaining)
            taken = {id(job) for job in batch}
            self._pending = deque(job for job in self._pending if id(job) not in taken)
            return batch

    def _drop_cancelled(self) -> None:
        """Forget requests whose handler gave up (deadline passed); call with the lock held."""
        self._pending = deque(job for job in self._pending if not job.future.cancelled())

    def _answer(self, jobs: list[_Job]) -> None:
        requests = [job.request for job in jobs]
        mode = jobs[0].mode
        rank = self._explain if jobs[0].explain and self._explain is not None else self._rank
        try:
            results = rank(requests, mode)
            if len(results) != len(requests):
                raise RuntimeError(f"the ranker answered {len(results)} of {len(requests)} requests")
        except Exception as exc:  # the worker must survive any model failure and answer every job
            logger.exception("ranking a batch of %d request(s) failed; using the ranking-stage order", len(jobs))
            results = [fallback_result(request, f"{type(exc).__name__}: {exc}") for request in requests]
        for job, result in zip(jobs, results, strict=True):
            job.future.set_result(_checked(job.request, result))


def _checked(request: PostRankRequest, result: RankResult) -> RankResult:
    """The result if it is a permutation of the request's candidates with finite scores, else a fallback."""
    if result.fallback:
        return result
    problem = None
    if sorted(result.ranking) != sorted(request.candidate_ids):
        problem = "the ranking is not a permutation of the candidates"
    elif result.scores is not None and (
        len(result.scores) != len(result.ranking) or not all(math.isfinite(s) for s in result.scores)
    ):
        problem = "the scores are not one finite number per candidate"
    if problem is None:
        return result
    logger.error("request '%s': %s; using the ranking-stage order", request.request_id, problem)
    return fallback_result(request, problem)
