"""What every baseline shares: `fit`, scores per candidate, and ranking by those scores.

A baseline scores each candidate (higher ranks first) and the ranking is a stable sort of those
scores, so ties keep the ranking-stage order. A request whose scoring raises or yields a NaN is
answered with the ranking-stage order (`fallback_result`); the others are unaffected.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Protocol, Self

import numpy as np

from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.rankers.base import Ranker, fallback_result


def descending_order(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Indices sorted by score, highest first; equal scores keep their input order (stable)."""
    return [int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]


class Baseline(Protocol):
    """What the benchmark needs from any baseline: fit on training requests, then rank."""

    name: str
    uses_ranking_stage_signals: bool

    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self: ...

    def rank(self, requests: Sequence[PostRankRequest]) -> list[RankResult]: ...


class NotFittedError(RuntimeError):
    """`rank` or `score` was called before `fit`."""


class ScoringRanker(Ranker):
    """A baseline that is fitted on training requests and ranks by per-candidate scores."""

    name = "scoring"
    uses_ranking_stage_signals: bool = False

    @abstractmethod
    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self:
        """Learn from labelled training requests; `valid_requests` (labelled) may steer early stopping."""

    @abstractmethod
    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        """One score per candidate (ranking-stage order) per request; higher ranks first."""

    def rank(self, requests: Sequence[PostRankRequest]) -> list[RankResult]:
        """Rank every request; scoring is batched, and retried one by one if the batch fails."""
        try:
            return [self._result(r, s) for r, s in zip(requests, self.score(requests), strict=True)]
        except NotFittedError:
            raise
        except Exception:  # noqa: BLE001 - find the failing requests one by one below
            return [self._rank_one(request) for request in requests]

    def _rank_one(self, request: PostRankRequest) -> RankResult:
        try:
            return self._result(request, self.score([request])[0])
        except NotFittedError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure answers with the ranking-stage order
            return fallback_result(request, f"{type(exc).__name__}: {exc}")

    def _result(self, request: PostRankRequest, scores: np.ndarray) -> RankResult:
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != (len(request.candidates),):
            return fallback_result(request, f"expected {len(request.candidates)} scores, got shape {scores.shape}")
        if np.isnan(scores).any():
            return fallback_result(request, "NaN score")
        order = descending_order(scores)
        return RankResult(
            request_id=request.request_id,
            ranking=[request.candidates[i].id for i in order],
            scores=[float(scores[i]) for i in order],
            mode=self.name,
        )
