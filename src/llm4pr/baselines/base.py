"""What every baseline shares: `fit`, saving and loading, scores per candidate, ranking by them.

A baseline is a `FittableRanker`: fitted on labelled requests, then saved as a folder (the
manifest of `rankers.saved`, with the constructor parameters, plus the state files the baseline
writes) that `load` reads back. It has one ranking: `rank` accepts any mode and ignores it.

A scoring baseline scores each candidate (higher ranks first) and the ranking is a stable sort
of those scores, so ties keep the ranking-stage order. A request whose scoring raises or yields a
NaN is answered with the ranking-stage order (`fallback_result`); the others are unaffected.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from llm4pr.baselines.features import Featuriser
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.text_encoder import BaseTextEncoder
from llm4pr.rankers.base import Mode, Ranker, descending_order, fallback_result
from llm4pr.rankers.saved import RankerManifest, saving_ranker


class NotFittedError(RuntimeError):
    """`rank`, `score` or `save` was called before `fit`."""


class Baseline(Ranker):
    """A fittable, savable ranker. `params` holds the constructor arguments: the manifest records
    them and `load` passes them back, then `_load_state` reads what `_save_state` wrote."""

    name = "baseline"
    params: dict[str, Any]
    uses_ranking_stage_signals: bool = False
    _schema: FeatureSchema | None = None

    @property
    def schema(self) -> FeatureSchema | None:
        """The schema the ranker was fitted with (None before `fit`): requests must follow it."""
        return self._schema

    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self:
        """Learn from labelled training requests; `valid_requests` (labelled) may steer early stopping."""
        self._fit(train_requests, schema, valid_requests, seed)
        self._schema = schema
        return self

    @abstractmethod
    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        """What `fit` learns."""

    def save(self, folder: str | Path) -> None:
        """Write the fitted ranker to `folder` (created, or replaced if it holds a saved ranker)."""
        if self._schema is None:
            raise NotFittedError(f"{self.name}: call fit before save")
        try:
            json.dumps(self.params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: only rankers built from JSON values can be saved (pass a text encoder by name): {exc}") from None
        with saving_ranker(folder, self.name, self.params, self._schema) as tmp:
            self._save_state(tmp)

    @classmethod
    def load(cls, folder: str | Path, manifest: RankerManifest) -> Self:
        """The ranker saved in `folder`, whose manifest is `manifest`."""
        ranker = cls(**manifest.params)
        ranker._load_state(Path(folder), manifest.feature_schema)
        ranker._schema = manifest.feature_schema
        return ranker

    def _save_state(self, folder: Path) -> None:
        """Write what fitting learned into `folder`; nothing for rankers whose parameters say it all."""

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        """Read back what `_save_state` wrote."""


class ScoringRanker(Baseline):
    """A baseline that ranks by per-candidate scores."""

    name = "scoring"

    @abstractmethod
    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        """One score per candidate (ranking-stage order) per request; higher ranks first."""

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        """Rank every request (one ranking whatever the mode); scoring is batched, and retried one
        by one if the batch fails."""
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


class FeaturisedRanker(ScoringRanker):
    """A scoring baseline over the shared feature vectors (`Featuriser`): LambdaMART and the
    neural models. The featuriser is fitted with the ranker and saved beside it."""

    name = "featurised"
    text_encoder: str | BaseTextEncoder
    text_dim: int
    featuriser: Featuriser | None = None

    @property
    def uses_ranking_stage_signals(self) -> bool:  # type: ignore[override]
        """Whether the fitted ranker reads the ranking-stage signals (its schema declares them)."""
        return self.featuriser is not None and self.featuriser.uses_ranking_stage_signals

    def _fit_features(self, train_requests: Sequence[PostRankRequest], schema: FeatureSchema) -> list[np.ndarray]:
        """Fit a fresh featuriser on the training requests; return their vectors."""
        self.featuriser = Featuriser(schema, self.text_encoder, self.text_dim)
        return self.featuriser.fit_transform(train_requests)

    def _features(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if self.featuriser is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        return self.featuriser.transform(requests)

    def _save_state(self, folder: Path) -> None:
        assert self.featuriser is not None  # fitted: `save` checked
        self.featuriser.save(folder)

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        self.featuriser = Featuriser.load(folder, schema, self.text_encoder)
