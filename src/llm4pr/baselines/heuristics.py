"""Rankers that learn nothing: the ranking-stage order and sorting by one item feature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Self

import numpy as np

from llm4pr.baselines.base import NotFittedError, ScoringRanker
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureKind, FeatureSchema
from llm4pr.rankers.base import InitialOrderRanker


class RankingStageOrderRanker(InitialOrderRanker):
    """The ranking stage's order behind the baselines' `fit` interface (fitting is a no-op)."""

    uses_ranking_stage_signals = False

    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self:
        return self


class ItemQualityRanker(ScoringRanker):
    """Sort by a numerical item feature, highest first (default: the item's average training rating).

    A one-line heuristic that is hard to beat on MovieLens: ratings there are mostly explained by
    how good the movie is. Items without the feature go last; ties keep the ranking-stage order.
    """

    name = "item_quality"

    def __init__(self, feature: str = "avg_rating") -> None:
        self.feature = feature
        self._fitted = False

    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self:
        spec = schema.spec("item", self.feature)
        if spec is None or spec.kind is not FeatureKind.numerical:
            raise ValueError(f"{self.name}: the schema has no numerical item feature {self.feature!r}")
        self._fitted = True
        return self

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if not self._fitted:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        return [self._request_scores(r) for r in requests]

    def _request_scores(self, request: PostRankRequest) -> np.ndarray:
        values = [c.features.get(self.feature) for c in request.candidates]
        present = [float(v) for v in values if v is not None]
        missing = min(present, default=0.0) - 1.0  # finite, so that the scores stay valid JSON
        return np.asarray([missing if v is None else float(v) for v in values])
