"""Rankers that learn nothing: the ranking-stage order, a random order and sorting by one item feature."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm4pr.baselines.base import Baseline, NotFittedError, ScoringRanker
from llm4pr.data.explanations import Attribution, FieldWeight
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureKind, FeatureSchema
from llm4pr.io import atomic_write_text
from llm4pr.rankers.base import InitialOrderRanker, Mode
from llm4pr.rankers.explanation import attach

RANDOM_STATE_FILE = "random.json"


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


class RandomOrderRanker(ScoringRanker):
    """A random order of every request, the reference that says what an order without information
    scores (a given order that scores like it carries no signal: MovieLens's time order).

    Each request's order depends on the fitting seed and its id only (a sha256 of both seeds a
    generator), so it is the same in every process and whatever else is ranked beside it.
    """

    name = "random"

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self._seed: int | None = None

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        self._seed = seed

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if self._seed is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        return [self._request_scores(request, self._seed) for request in requests]

    @staticmethod
    def _request_scores(request: PostRankRequest, seed: int) -> np.ndarray:
        digest = hashlib.sha256(f"{seed}:{request.request_id}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little")).random(len(request.candidates))

    def _save_state(self, folder: Path) -> None:
        atomic_write_text(folder / RANDOM_STATE_FILE, json.dumps({"seed": self._seed}))

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        self._seed = int(json.loads((folder / RANDOM_STATE_FILE).read_text(encoding="utf-8"))["seed"])


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

    def explain(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None, occlusion: bool = False) -> list[RankResult]:
        """`rank`; the score IS the feature's value (or, where it is missing, the request's lowest
        value minus 1), so the feature gets the whole score and every other item field exactly 0."""
        if self.schema is None:
            raise NotFittedError(f"{self.name}: call fit before rank or explain")
        others = [spec.name for spec in self.schema.for_owner("item") if spec.name != self.feature]
        explained = []
        for request, result, scores in zip(requests, self.rank(requests, mode=mode), self.score(requests), strict=True):
            per_candidate = {}
            for candidate, score in zip(request.candidates, scores, strict=True):
                fields = [FieldWeight(name=self.feature, owner="item", features=[self.feature], value=float(score))]
                fields += [FieldWeight(name=name, owner="item", features=[name], value=0.0) for name in others]
                reason = None if candidate.features.get(self.feature) is not None else f"{self.feature} missing: the request's lowest value minus 1"
                per_candidate[candidate.id] = {"feature_value": Attribution(fields=fields, reason=reason)}
            explained.append(attach(request, result, self.name, per_candidate, score=f"the item feature {self.feature!r}"))
        return explained

    def _request_scores(self, request: PostRankRequest) -> np.ndarray:
        values = [c.features.get(self.feature) for c in request.candidates]
        present = [float(v) for v in values if v is not None]
        missing = min(present, default=0.0) - 1.0  # finite, so that the scores stay valid JSON
        return np.asarray([missing if v is None else float(v) for v in values])
