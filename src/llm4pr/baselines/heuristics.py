"""Rankers that learn nothing: the ranking-stage order and sorting by one item feature."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llm4pr.baselines.base import Baseline, NotFittedError, ScoringRanker
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureKind, FeatureSchema
from llm4pr.rankers.base import InitialOrderRanker


class RankingStageOrderRanker(InitialOrderRanker, Baseline):
    """The ranking stage's order as a baseline (fitting only records the schema)."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        """Nothing to learn: the order is the request's own."""


class ItemQualityRanker(ScoringRanker):
    """Sort by a numerical item feature, highest first (default: the item's average training rating).

    A one-line heuristic that is hard to beat on MovieLens: ratings there are mostly explained by
    how good the movie is. Items without the feature go last; ties keep the ranking-stage order.
    """

    name = "item_quality"

    def __init__(self, feature: str = "avg_rating") -> None:
        self.params: dict[str, Any] = {"feature": feature}
        self.feature = feature

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        spec = schema.spec("item", self.feature)
        if spec is None or spec.kind is not FeatureKind.numerical:
            raise ValueError(f"{self.name}: the schema has no numerical item feature {self.feature!r}")

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if self.schema is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        return [self._request_scores(r) for r in requests]

    def _request_scores(self, request: PostRankRequest) -> np.ndarray:
        values = [c.features.get(self.feature) for c in request.candidates]
        present = [float(v) for v in values if v is not None]
        missing = min(present, default=0.0) - 1.0  # finite, so that the scores stay valid JSON
        return np.asarray([missing if v is None else float(v) for v in values])
