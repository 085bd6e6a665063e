"""The one training loop shared by every neural baseline (LTR-DNN, DLCM, SetRank, PRM, Seq2Slate).

A model sees a padded batch of lists (`ListBatch`: features [B, n, d], a mask for the real
candidates, labels, user and item indices) and defines its own `loss` and `predict`.
`NeuralListRanker` featurises requests (`Featuriser`), batches them, trains with AdamW for
`epochs` epochs, and, when validation requests are given, keeps the epoch with the best
validation metric (computed by `evaluate_run`, the project's only scoring code) and stops after
`patience` epochs without improvement. Training is deterministic given the seed: the global
torch RNG is forked and seeded, and batches are drawn from a seeded NumPy generator. A fitted
ranker is saved as its weights (`weights.safetensors`), its id vocabulary and best epoch
(`state.json`) and the featuriser.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llm4pr.baselines.base import FeaturisedRanker, NotFittedError
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.features.text_encoder import DEFAULT_TEXT_ENCODER, BaseTextEncoder
from llm4pr.io import atomic_write_text

UNKNOWN_ID = 0  # index of ids not seen in training
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.json"


@dataclass
class ListBatch:
    """A padded batch of candidate lists in ranking-stage order; padding is at the end."""

    features: torch.Tensor  # [B, n, d] float
    mask: torch.Tensor  # [B, n] bool, True for real candidates
    labels: torch.Tensor  # [B, n] float, 0 at padding (and unused when predicting)
    users: torch.Tensor  # [B] long, UNKNOWN_ID for unseen users
    items: torch.Tensor  # [B, n] long, UNKNOWN_ID for unseen items and padding

    @property
    def lengths(self) -> torch.Tensor:
        return self.mask.sum(1)


class ListModel(nn.Module, ABC):
    """A neural post-ranker over one padded batch of lists."""

    @abstractmethod
    def loss(self, batch: ListBatch) -> torch.Tensor:
        """The training loss of the batch (a scalar)."""

    @abstractmethod
    def predict(self, batch: ListBatch) -> torch.Tensor:
        """Scores [B, n], higher ranks first; values at padding are ignored."""


class ScoringListModel(ListModel):
    """Scores every candidate in one pass; trained with a softmax cross-entropy over the list
    against a target distribution that the model derives from the labels."""

    @abstractmethod
    def forward(self, batch: ListBatch) -> torch.Tensor:
        """Scores [B, n]."""

    @abstractmethod
    def target_weights(self, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Non-negative weights [B, n] (0 at padding); the target distribution is their normalisation."""

    def loss(self, batch: ListBatch) -> torch.Tensor:
        return softmax_cross_entropy(self(batch), self.target_weights(batch.labels, batch.mask), batch.mask)

    def predict(self, batch: ListBatch) -> torch.Tensor:
        return self(batch)


def softmax_cross_entropy(scores: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over lists of -sum_i p_i log softmax(scores)_i with p = weights / sum(weights).

    Padding is excluded from the softmax; lists whose weights are all 0 (nothing relevant)
    carry no target and are left out of the mean.
    """
    log_p = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1).masked_fill(~mask, 0.0)
    total = weights.sum(1)
    valid = total > 0
    if not valid.any():
        return scores.sum() * 0.0
    target = weights[valid] / total[valid, None]
    return -(target * log_p[valid]).sum(1).mean()


@dataclass(frozen=True)
class IdVocabulary:
    """Training user and item ids -> embedding rows (1-based; UNKNOWN_ID for the rest)."""

    users: dict[str, int]
    items: dict[str, int]

    @classmethod
    def fit(cls, requests: Sequence[PostRankRequest]) -> "IdVocabulary":
        users = sorted({r.user.id for r in requests})
        items = sorted({c.id for r in requests for c in r.candidates})
        return cls({u: i + 1 for i, u in enumerate(users)}, {c: i + 1 for i, c in enumerate(items)})


class NeuralListRanker(FeaturisedRanker):
    """Shared fit/score for the neural baselines; a subclass only builds its `ListModel`."""

    name = "neural"

    def __init__(
        self,
        hidden: int = 64,
        epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        dropout: float = 0.1,
        patience: int = 3,
        valid_metric: str = "ndcg@3",
        text_encoder: str | BaseTextEncoder = DEFAULT_TEXT_ENCODER,
        text_dim: int = 32,
    ) -> None:
        self.params: dict[str, Any] = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.hidden, self.epochs, self.batch_size = hidden, epochs, batch_size
        self.lr, self.weight_decay, self.dropout = lr, weight_decay, dropout
        self.patience, self.valid_metric = patience, valid_metric
        self.text_encoder, self.text_dim = text_encoder, text_dim
        self.model: ListModel | None = None
        self.best_epoch = 0  # the epoch whose weights are kept (the last one without validation)

    @abstractmethod
    def build_model(self, input_dim: int, ids: IdVocabulary) -> ListModel:
        """A fresh, untrained model for inputs of `input_dim` features."""

    def clone(self, **overrides: Any) -> Self:
        """An unfitted ranker with the same settings, except `overrides` (for out-of-fold training)."""
        return type(self)(**{**self.params, **overrides})

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        train_x = self._fit_features(train_requests, schema)
        self.ids = IdVocabulary.fit(train_requests)
        valid_x = self._features(valid_requests) if valid_requests else None  # featurised once
        rng = np.random.default_rng(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = self.build_model(self._input_dim(), self.ids)
            optimiser = torch.optim.AdamW(self.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            best_metric, best_state, stale = float("-inf"), None, 0
            for epoch in range(1, self.epochs + 1):
                self._train_epoch(train_requests, train_x, optimiser, rng)
                if valid_requests is None or valid_x is None:
                    self.best_epoch = epoch
                    continue
                metric = self._validate(valid_requests, valid_x)
                if metric > best_metric:
                    best_metric, stale, self.best_epoch = metric, 0, epoch
                    best_state = copy.deepcopy(self.model.state_dict())
                    continue
                stale += 1
                if stale >= self.patience:
                    break
            if best_state is not None:
                self.model.load_state_dict(best_state)
        self.model.eval()

    def _input_dim(self) -> int:
        assert self.featuriser is not None  # fitted or loaded before the model is built
        return self.featuriser.dim

    def _save_state(self, folder: Path) -> None:
        super()._save_state(folder)
        assert self.model is not None  # fitted: `save` checked
        save_file({k: v.detach().contiguous() for k, v in self.model.state_dict().items()}, folder / WEIGHTS_FILE)
        atomic_write_text(folder / STATE_FILE, json.dumps({"ids": asdict(self.ids), "best_epoch": self.best_epoch}))

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        super()._load_state(folder, schema)
        state = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        self.ids, self.best_epoch = IdVocabulary(**state["ids"]), state["best_epoch"]
        with torch.random.fork_rng(devices=[]):  # the initial weights are overwritten: leave the caller's RNG alone
            self.model = self.build_model(self._input_dim(), self.ids)
        self.model.load_state_dict(load_file(folder / WEIGHTS_FILE))
        self.model.eval()

    def _train_epoch(
        self,
        requests: Sequence[PostRankRequest],
        features: list[np.ndarray],
        optimiser: torch.optim.Optimizer,
        rng: np.random.Generator,
    ) -> None:
        """One pass over the requests in a seeded random order."""
        assert self.model is not None
        self.model.train()
        n_batches = max(1, -(-len(requests) // self.batch_size))
        for chosen in np.array_split(rng.permutation(len(requests)), n_batches):
            batch = self._batch([requests[i] for i in chosen], [features[i] for i in chosen])
            optimiser.zero_grad()
            self.model.loss(batch).backward()
            optimiser.step()

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if self.model is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        return self._scores(requests, self._features(requests))

    def _scores(self, requests: Sequence[PostRankRequest], features: list[np.ndarray]) -> list[np.ndarray]:
        assert self.model is not None
        self.model.eval()
        out: list[np.ndarray] = []
        step = max(self.batch_size, 256)
        with torch.no_grad():
            for start in range(0, len(requests), step):
                batch = self._batch(requests[start : start + step], features[start : start + step], with_labels=False)
                scores = self.model.predict(batch).double().numpy()
                out.extend(row[:n] for row, n in zip(scores, batch.lengths.tolist(), strict=True))
        return out

    def _validate(self, requests: Sequence[PostRankRequest], features: list[np.ndarray]) -> float:
        results = [self._result(r, s) for r, s in zip(requests, self._scores(requests, features), strict=True)]
        value = evaluate_run(requests, results)["metrics"].get(self.valid_metric)
        if value is None:
            raise ValueError(f"valid_metric {self.valid_metric!r} is not a metric evaluate_run reports")
        return float(value)

    def _batch(
        self, requests: Sequence[PostRankRequest], features: Sequence[np.ndarray], with_labels: bool = True
    ) -> ListBatch:
        size, width = max(len(r.candidates) for r in requests), features[0].shape[1]
        x = np.zeros((len(requests), size, width), dtype=np.float32)
        mask = np.zeros((len(requests), size), dtype=bool)
        labels = np.zeros((len(requests), size), dtype=np.float32)
        items = np.full((len(requests), size), UNKNOWN_ID, dtype=np.int64)
        for row, (request, vectors) in enumerate(zip(requests, features, strict=True)):
            n = len(request.candidates)
            x[row, :n], mask[row, :n] = vectors, True
            items[row, :n] = [self.ids.items.get(c.id, UNKNOWN_ID) for c in request.candidates]
            if with_labels:
                labels[row, :n] = request.labels
        users = np.asarray([self.ids.users.get(r.user.id, UNKNOWN_ID) for r in requests], dtype=np.int64)
        return ListBatch(*(torch.from_numpy(array) for array in (x, mask, labels, users, items)))
