"""One interface for every post-ranker: LLM4PR, its ablations and the baselines.

`rank` takes requests and returns one `RankResult` per request, in the same order, each a
permutation of that request's candidate ids. Rankers that can fail on a request (a model error)
answer with the ranking-stage order and mark the result `fallback: true`; they never drop one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from llm4pr.data.requests import PostRankRequest, RankResult


class Ranker(ABC):
    name: str = "ranker"

    @abstractmethod
    def rank(self, requests: Sequence[PostRankRequest]) -> list[RankResult]:
        """Post-rank every request; the i-th result answers the i-th request."""


def fallback_result(request: PostRankRequest, reason: str) -> RankResult:
    """The ranking-stage order, marked as a fallback with the reason."""
    return RankResult(request_id=request.request_id, ranking=request.candidate_ids, fallback=True, error=reason)


class InitialOrderRanker(Ranker):
    """The ranking stage's order, unchanged: the reference every post-ranker must beat."""

    name = "initial"

    def rank(self, requests: Sequence[PostRankRequest]) -> list[RankResult]:
        return [RankResult(request_id=r.request_id, ranking=r.candidate_ids) for r in requests]
