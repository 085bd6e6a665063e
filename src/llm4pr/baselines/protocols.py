"""What a post-ranker may receive from the ranking stage: its order and its signals.

As in the paper, post-rankers may consume what the ranking stage produces. Our ranking stage is
the LTR-DNN (`RankingStage`), trained on the training split. It provides:

- signals, added to the requests as plain schema features (`RANKING_STAGE_FEATURES`): its score
  per candidate, its learned item-id embedding per candidate and history item, and its learned
  user-id embedding. On training requests the score is out-of-fold (k-fold over requests), so no
  post-ranker learns from in-sample predictions; on validation and test requests it comes from the
  model fitted on all training requests. The embeddings always come from that full model: fold
  models have unrelated embedding spaces, and one space must serve training and test alike.
- an order: protocol "input" keeps the data's candidate order (MovieLens: time order, as in the
  paper); protocol "ranking_stage" sorts candidates by the ranking-stage score (stable), which is
  what a post-ranker receives in production.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from llm4pr.baselines.base import descending_order
from llm4pr.baselines.features import (
    RANKING_STAGE_ITEM_EMBEDDING,
    RANKING_STAGE_SCORE,
    RANKING_STAGE_USER_EMBEDDING,
)
from llm4pr.baselines.ltr import LTRDNNRanker
from llm4pr.data.requests import Item, PostRankRequest
from llm4pr.data.schema import FeatureSchema, FeatureSpec

CandidateOrder = Literal["input", "ranking_stage"]
CANDIDATE_ORDERS: tuple[CandidateOrder, ...] = ("input", "ranking_stage")


def reorder_by_ranking_stage(
    requests: Sequence[PostRankRequest], scores: Sequence[Sequence[float] | np.ndarray]
) -> list[PostRankRequest]:
    """New requests whose candidates are sorted by score, highest first; ties keep their order."""
    reordered = []
    for request, request_scores in zip(requests, scores, strict=True):
        if len(request_scores) != len(request.candidates):
            raise ValueError(
                f"request '{request.request_id}': {len(request_scores)} scores for {len(request.candidates)} candidates"
            )
        order = descending_order(request_scores)
        reordered.append(request.model_copy(update={"candidates": [request.candidates[i] for i in order]}))
    return reordered


def schema_with_signals(schema: FeatureSchema, embedding_dim: int) -> FeatureSchema:
    """The schema plus the three ranking-stage features."""
    signals = (
        FeatureSpec(
            name=RANKING_STAGE_SCORE, owner="item", kind="numerical", description="ranking-stage score {value:.2f}"
        ),
        FeatureSpec(name=RANKING_STAGE_ITEM_EMBEDDING, owner="item", kind="embedding", dim=embedding_dim),
        FeatureSpec(name=RANKING_STAGE_USER_EMBEDDING, owner="user", kind="embedding", dim=embedding_dim),
    )
    return schema.model_copy(update={"features": (*schema.features, *signals)})


@dataclass
class RankingStage:
    """The ranking-stage model (LTR-DNN) fitted on all training requests, plus OOF training scores."""

    model: LTRDNNRanker
    input_schema: FeatureSchema
    train_request_ids: tuple[str, ...]
    train_scores: list[np.ndarray]  # out-of-fold, one array per training request

    @classmethod
    def fit(
        cls,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        folds: int = 5,
        seed: int = 0,
        **model_kwargs: Any,
    ) -> "RankingStage":
        """Fit the model on all training requests, then `folds` models for the OOF scores.

        With validation requests, the full model stops early, and the fold models train for the
        same number of epochs (no early stopping), so OOF and test scores come from models trained
        the same way; validation requests never reach the fold models.
        """
        model = LTRDNNRanker(**model_kwargs).fit(train_requests, schema, valid_requests, seed)
        fold_model = model.clone(epochs=model.best_epoch)
        train_scores = fold_model.oof_scores(train_requests, schema, folds=folds, seed=seed)
        return cls(model, schema, tuple(r.request_id for r in train_requests), train_scores)

    @property
    def schema(self) -> FeatureSchema:
        """The input schema plus the signal features: give it to post-rankers that use them."""
        return schema_with_signals(self.input_schema, self.model.id_dim)

    def scores(self, requests: Sequence[PostRankRequest], training: bool) -> list[np.ndarray]:
        """OOF scores for the training requests (same requests, same order), else the full model's."""
        if not training:
            return self.model.score(requests)
        if tuple(r.request_id for r in requests) != self.train_request_ids:
            raise ValueError("training=True needs exactly the training requests the ranking stage was fitted on")
        return self.train_scores

    def prepare(
        self,
        requests: Sequence[PostRankRequest],
        training: bool,
        order: CandidateOrder = "input",
        signals: bool = True,
    ) -> list[PostRankRequest]:
        """The requests as a post-ranker sees them under a protocol: with or without the signals,
        candidates in the input order or in the ranking stage's."""
        scores = self.scores(requests, training)
        prepared = self.add_signals(requests, scores) if signals else list(requests)
        return reorder_by_ranking_stage(prepared, scores) if order == "ranking_stage" else prepared

    def add_signals(
        self, requests: Sequence[PostRankRequest], scores: Sequence[np.ndarray]
    ) -> list[PostRankRequest]:
        """Copies of the requests with the score and embeddings as features (inputs untouched)."""
        users = sorted({r.user.id for r in requests})
        items = sorted({i.id for r in requests for i in (*r.history, *r.candidates)})
        user_vectors = dict(zip(users, self.model.user_embeddings(users).tolist(), strict=True))
        item_vectors = dict(zip(items, self.model.item_embeddings(items).tolist(), strict=True))

        def with_features(item: Item, extra: dict[str, Any]) -> Item:
            return item.model_copy(update={"features": {**item.features, **extra}})

        out = []
        for request, request_scores in zip(requests, scores, strict=True):
            user_features = {**request.user.features, RANKING_STAGE_USER_EMBEDDING: user_vectors[request.user.id]}
            user = request.user.model_copy(update={"features": user_features})
            history = [with_features(i, {RANKING_STAGE_ITEM_EMBEDDING: item_vectors[i.id]}) for i in request.history]
            candidates = [
                with_features(i, {RANKING_STAGE_ITEM_EMBEDDING: item_vectors[i.id], RANKING_STAGE_SCORE: float(s)})
                for i, s in zip(request.candidates, request_scores, strict=True)
            ]
            out.append(request.model_copy(update={"user": user, "history": history, "candidates": candidates}))
        return out
