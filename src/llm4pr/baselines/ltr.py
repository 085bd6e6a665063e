"""Classic learning-to-rank baselines: the pointwise LTR-DNN (also the ranking-stage model) and
LambdaMART (LightGBM's lambdarank).

The LTR-DNN is an MLP over the shared feature vector plus learned user-id and item-id
embeddings. It plays the paper's ranking stage: `oof_scores` gives every training request a score
from a model that never saw that request (k-fold), and `user_embeddings` / `item_embeddings`
expose the learned id embeddings, so that post-rankers can consume them as features
(`llm4pr.baselines.protocols`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from llm4pr.baselines.base import FeaturisedRanker, NotFittedError
from llm4pr.baselines.neural import UNKNOWN_ID, IdVocabulary, ListBatch, ListModel, NeuralListRanker
from llm4pr.data.explanations import Attribution, FieldWeight
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.text_encoder import DEFAULT_TEXT_ENCODER, BaseTextEncoder
from llm4pr.rankers.base import Mode
from llm4pr.rankers.explanation import attach

LIGHTGBM_MODEL_FILE = "model.txt"
PointwiseLoss = Literal["mse", "bce"]
FitPredict = Callable[[list[PostRankRequest], list[PostRankRequest]], list[np.ndarray]]


class PointwiseMLP(ListModel):
    """score = MLP([features, user-id embedding, item-id embedding]), each candidate on its own."""

    def __init__(
        self, input_dim: int, ids: IdVocabulary, hidden: int, id_dim: int, dropout: float, loss: PointwiseLoss
    ) -> None:
        super().__init__()
        self.user_embedding = nn.Embedding(len(ids.users) + 1, id_dim)
        self.item_embedding = nn.Embedding(len(ids.items) + 1, id_dim)
        for table in (self.user_embedding, self.item_embedding):
            nn.init.normal_(table.weight, std=0.05)
        self.mlp = nn.Sequential(
            nn.Linear(input_dim + 2 * id_dim, 2 * hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(2 * hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )
        self.loss_kind = loss

    def forward(self, batch: ListBatch) -> torch.Tensor:
        users = self.user_embedding(batch.users)[:, None, :].expand(-1, batch.items.shape[1], -1)
        inputs = torch.cat([batch.features, users, self.item_embedding(batch.items)], dim=-1)
        return self.mlp(inputs).squeeze(-1)

    def loss(self, batch: ListBatch) -> torch.Tensor:
        scores, labels = self(batch)[batch.mask], batch.labels[batch.mask]
        if self.loss_kind == "bce":
            return F.binary_cross_entropy_with_logits(scores, labels)
        return F.mse_loss(scores, labels)

    def predict(self, batch: ListBatch) -> torch.Tensor:
        return self(batch)


class LTRDNNRanker(NeuralListRanker):
    """LTR-DNN: pointwise regression (MSE on the label) or classification (BCE, labels in [0, 1])."""

    name = "ltr_dnn"

    def __init__(self, id_dim: int = 16, loss: PointwiseLoss = "mse", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params.update(id_dim=id_dim, loss=loss)
        self.id_dim, self.loss = id_dim, loss

    def build_model(self, input_dim: int, ids: IdVocabulary) -> ListModel:
        return PointwiseMLP(input_dim, ids, self.hidden, self.id_dim, self.dropout, self.loss)

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        if self.loss == "bce" and any(not 0.0 <= y <= 1.0 for r in train_requests for y in r.labels):
            raise ValueError("loss 'bce' needs labels in [0, 1]; use 'mse' for graded labels")
        super()._fit(train_requests, schema, valid_requests, seed)

    def user_embeddings(self, user_ids: Sequence[str]) -> np.ndarray:
        """Learned user-id embeddings [len, id_dim]; zeros for users unseen in training."""
        model = self._fitted_model()
        return _lookup(model.user_embedding, [self.ids.users.get(u, UNKNOWN_ID) for u in user_ids])

    def item_embeddings(self, item_ids: Sequence[str]) -> np.ndarray:
        """Learned item-id embeddings [len, id_dim]; zeros for items unseen in training."""
        model = self._fitted_model()
        return _lookup(model.item_embedding, [self.ids.items.get(i, UNKNOWN_ID) for i in item_ids])

    def oof_scores(
        self, requests: Sequence[PostRankRequest], schema: FeatureSchema, folds: int = 5, seed: int = 0
    ) -> list[np.ndarray]:
        """Out-of-fold scores: request i is scored by a copy of this ranker fitted on the other folds."""

        def fit_predict(train: list[PostRankRequest], held_out: list[PostRankRequest]) -> list[np.ndarray]:
            return self.clone().fit(train, schema, seed=seed).score(held_out)

        return out_of_fold(requests, folds, seed, fit_predict)

    def _fitted_model(self) -> PointwiseMLP:
        if not isinstance(self.model, PointwiseMLP):
            raise NotFittedError(f"{self.name}: call fit before reading embeddings")
        return self.model


def _lookup(table: nn.Embedding, rows: list[int]) -> np.ndarray:
    vectors = table.weight.detach()[torch.tensor(rows, dtype=torch.long)].double().numpy()
    vectors[np.asarray(rows) == UNKNOWN_ID] = 0.0
    return vectors


def fold_assignment(n: int, folds: int, seed: int) -> np.ndarray:
    """A fold in [0, folds) for each of n requests: balanced, random given the seed."""
    if not 2 <= folds <= n:
        raise ValueError(f"need 2 <= folds <= number of requests, got folds={folds}, n={n}")
    assignment = np.empty(n, dtype=np.int64)
    assignment[np.random.default_rng(seed).permutation(n)] = np.arange(n) % folds
    return assignment


def out_of_fold(
    requests: Sequence[PostRankRequest], folds: int, seed: int, fit_predict: FitPredict
) -> list[np.ndarray]:
    """Scores for every request from `fit_predict(train = other folds, held_out = its fold)`."""
    assignment = fold_assignment(len(requests), folds, seed)
    scores: list[np.ndarray | None] = [None] * len(requests)
    for fold in range(folds):
        held_out = np.flatnonzero(assignment == fold)
        train = [requests[i] for i in np.flatnonzero(assignment != fold)]
        for index, fold_scores in zip(held_out, fit_predict(train, [requests[i] for i in held_out]), strict=True):
            scores[index] = np.asarray(fold_scores, dtype=np.float64)
    return scores  # type: ignore[return-value]  # every index lies in exactly one fold


class LambdaMARTRanker(FeaturisedRanker):
    """LightGBM with objective lambdarank (LambdaMART), one query group per request.

    Labels must be non-negative integers (ratings, clicks, relevance grades); the label gain is
    2^label - 1, the gain of the project's NDCG, so that lambdarank optimises the reported metric.
    With validation requests, boosting stops after `early_stopping_rounds` rounds without a gain
    in validation NDCG@`eval_at`. Saved as LightGBM's own text model (`model.txt`, the trees up to
    the best iteration) beside the featuriser.
    """

    name = "lambdamart"

    def __init__(
        self,
        n_estimators: int = 500,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 20,
        early_stopping_rounds: int = 50,
        eval_at: int = 3,
        n_jobs: int | None = None,
        text_encoder: str | BaseTextEncoder = DEFAULT_TEXT_ENCODER,
        text_dim: int = 32,
    ) -> None:
        self.params: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.n_estimators, self.learning_rate = n_estimators, learning_rate
        self.num_leaves, self.min_data_in_leaf = num_leaves, min_data_in_leaf
        self.early_stopping_rounds, self.eval_at, self.n_jobs = early_stopping_rounds, eval_at, n_jobs
        self.text_encoder, self.text_dim = text_encoder, text_dim
        self.booster: Any = None

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        import lightgbm  # an optional extra (`baselines`)

        train_x = self._fit_features(train_requests, schema)
        train_y = _integer_labels(train_requests)
        valid_y = _integer_labels(valid_requests) if valid_requests else train_y
        max_label = int(max(train_y.max(), valid_y.max()))
        params = {
            "objective": "lambdarank",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "label_gain": [2.0**g - 1.0 for g in range(max_label + 1)],
            "eval_at": [self.eval_at],
            "seed": seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
            **({"num_threads": self.n_jobs} if self.n_jobs else {}),
        }
        groups = [len(r.candidates) for r in train_requests]
        train_set = lightgbm.Dataset(np.concatenate(train_x), train_y, group=groups)
        valid_sets, callbacks = [], []
        if valid_requests:
            valid_x = np.concatenate(self._features(valid_requests))
            groups = [len(r.candidates) for r in valid_requests]
            valid_sets = [lightgbm.Dataset(valid_x, valid_y, group=groups, reference=train_set)]
            callbacks = [lightgbm.early_stopping(self.early_stopping_rounds, verbose=False)]
        self.booster = lightgbm.train(
            params, train_set, num_boost_round=self.n_estimators, valid_sets=valid_sets, callbacks=callbacks
        )

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if self.booster is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        if not requests:
            return []
        features = self._features(requests)
        scores = self.booster.predict(np.concatenate(features))  # the best iteration, when early-stopped
        return np.split(np.asarray(scores, dtype=np.float64), np.cumsum([len(x) for x in features])[:-1])

    def explain(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None, occlusion: bool = False) -> list[RankResult]:
        """`rank` with LightGBM's per-column contributions (`pred_contrib`, TreeSHAP) summed per
        feature group (`Featuriser.column_groups`), plus the bias term: they sum to the raw score the
        ranking used. `occlusion` adds nothing here: the contributions are exact for trees."""
        results = self.rank(requests, mode=mode)
        if not requests:
            return results
        features = self._features(requests)
        groups = self.featuriser.column_groups()  # type: ignore[union-attr]  # fitted: _features checked
        names = list(dict.fromkeys(groups))
        index = np.asarray([names.index(group) for group in groups])
        contributions = np.asarray(self.booster.predict(np.concatenate(features), pred_contrib=True), dtype=np.float64)
        explained, row = [], 0
        for request, result in zip(requests, results, strict=True):
            per_candidate = {}
            for candidate in request.candidates:
                columns, bias = contributions[row, :-1], float(contributions[row, -1])
                summed = np.bincount(index, weights=columns, minlength=len(names))
                fields = [
                    FieldWeight(name=name, owner=owner, features=list(members), value=float(value))  # type: ignore[arg-type]
                    for (name, owner, members), value in zip(names, summed, strict=True)
                ]
                per_candidate[candidate.id] = {"lightgbm_contributions": Attribution(fields=fields, terms={"bias": bias})}
                row += 1
            explained.append(attach(request, result, self.name, per_candidate, score="LightGBM raw score (lambdarank)",
                                    not_attributed=["the contributions are TreeSHAP values of the standardised columns, summed per feature group"]))
        return explained

    def _save_state(self, folder: Path) -> None:
        super()._save_state(folder)
        self.booster.save_model(str(folder / LIGHTGBM_MODEL_FILE))  # up to the best iteration, when early-stopped

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        import lightgbm

        super()._load_state(folder, schema)
        self.booster = lightgbm.Booster(model_file=str(folder / LIGHTGBM_MODEL_FILE))


def _integer_labels(requests: Sequence[PostRankRequest]) -> np.ndarray:
    labels = np.asarray([y for r in requests for y in r.labels], dtype=np.float64)
    if (labels < 0).any() or not np.array_equal(labels, np.round(labels)):
        raise ValueError("LambdaMART needs non-negative integer labels (grades, ratings, clicks)")
    return labels.astype(np.int64)
