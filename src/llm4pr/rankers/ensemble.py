"""Several rankers as one: each candidate ranked by the mean of the members' standardised scores.

LLM4PR trained on a few hundred requests moves a lot from seed to seed (Semanlink test NDCG@10
0.796 to 0.825 over three seeds); averaging the scores of checkpoints trained with different
seeds removes part of that variance at the cost of one forward pass per member. Scores are
standardised within each request first (z-scores), so members whose scores live on different
scales (logits, predicted ratings) weigh the same.

Every member must score: an LLM4PR member ranks in `first_token` mode, a baseline with scores
(a `ScoringRanker`). A member that falls back on a request (or gives no scores) is left out of
that request's mean; a request that no member scores falls back to the ranking-stage order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.rankers.base import Mode, Ranker, descending_order, fallback_result

ENSEMBLE_MODE: Mode = "first_token"  # the one mode in which an LLM4PR member scores every candidate


def standardised(request: PostRankRequest, result: RankResult) -> np.ndarray | None:
    """The result's scores of the request's candidates, in the request's order, as z-scores within
    the request (all zeros when they are equal); None when the result has no usable scores."""
    if result.fallback or result.scores is None or sorted(result.ranking) != sorted(request.candidate_ids):
        return None
    score_of = dict(zip(result.ranking, result.scores, strict=True))
    scores = np.array([score_of[item_id] for item_id in request.candidate_ids], dtype=np.float64)
    if not np.isfinite(scores).all():
        return None
    spread = scores.std()
    return (scores - scores.mean()) / spread if spread > 0 else np.zeros_like(scores)


class ScoreEnsemble(Ranker):
    """Rank by the mean z-score of the members (see the module docstring)."""

    name = "ensemble"

    def __init__(self, members: Sequence[Ranker]) -> None:
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 rankers, got {len(members)}")
        schemas = {member.schema.model_dump_json() if member.schema is not None else None for member in members}
        if len(schemas) > 1:
            raise ValueError("the ensemble's rankers read different feature schemas: requests cannot satisfy them all")
        self.members = list(members)

    @property
    def schema(self) -> FeatureSchema | None:
        return self.members[0].schema

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        """Rank every request with every member (in `first_token` mode), then by the mean z-score."""
        if mode not in (None, ENSEMBLE_MODE):
            raise ValueError(f"an ensemble ranks by the members' scores: mode {ENSEMBLE_MODE!r}, not {mode!r}")
        runs = [member.rank(requests, mode=ENSEMBLE_MODE) for member in self.members]
        return [self._combine(request, [run[i] for run in runs]) for i, request in enumerate(requests)]

    def _combine(self, request: PostRankRequest, results: Sequence[RankResult]) -> RankResult:
        scored = [z for z in (standardised(request, result) for result in results) if z is not None]
        if not scored:
            reasons = "; ".join(result.error or "no scores" for result in results)
            return fallback_result(request, f"no member of the ensemble scored the request ({reasons})")
        mean = np.mean(scored, axis=0)
        order = descending_order(mean)
        return RankResult(
            request_id=request.request_id,
            ranking=[request.candidate_ids[i] for i in order],
            scores=[float(mean[i]) for i in order],
            mode=f"{self.name} of {len(self.members)} ({len(scored)} scored)",
        )
