"""Collaborative filtering as a baseline: biased matrix factorisation of the training ratings.

Every other baseline scores a candidate from its features (and the user's); none learns what
this user thinks of that item from what similar users thought, which is what MovieLens ratings
are mostly about beyond the item's quality. A biased matrix factorisation (Funk's SVD, as
scikit-surprise implements it) is the field's standard yardstick for that signal: a post-ranker
that cannot beat it has not learned personal taste.

It learns from every labelled (user, item) pair of the training requests: their candidates and
their labelled history, each pair once (the last label seen wins). A candidate's score is the
predicted label, unclipped (clipping to the rating scale would tie the favourites): global mean +
user bias + item bias + user factors . item factors; an unknown user or item contributes no bias
and no factors, so a request of unknown users falls back to item biases and, failing those, to
the ranking-stage order (ties are stable). Fitting needs scikit-surprise; a saved model is plain
arrays and scores without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from llm4pr.baselines.base import NotFittedError, ScoringRanker
from llm4pr.data.errors import DataError
from llm4pr.data.explanations import Attribution
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.rankers.base import Mode
from llm4pr.rankers.explanation import attach

STATE_FILE = "factors.npz"
SURPRISE_INSTALL = "pip install 'llm4pr[baselines]'"


def labelled_pairs(requests: Sequence[PostRankRequest]) -> dict[tuple[str, str], float]:
    """Every labelled (user id, item id) of the requests' candidates and histories; a pair seen
    twice keeps its last label (requests in file order, a user's later segments last)."""
    pairs: dict[tuple[str, str], float] = {}
    for request in requests:
        for item in (*request.history, *request.candidates):
            if item.label is not None:
                pairs[request.user.id, item.id] = float(item.label)
    return pairs


class MatrixFactorisationRanker(ScoringRanker):
    """Rank by the rating a biased matrix factorisation predicts for the user and each candidate.

    Defaults chosen on the ML-100K validation split (docs/baselines.md): 200 factors, 80 epochs of
    SGD at rate 0.005, L2 weight 0.1 on biases and factors (scikit-surprise's own defaults, 100
    factors, 20 epochs and 0.02, overfit: 0.8227 NDCG@3 against 0.8382).
    """

    name = "mf"

    def __init__(self, factors: int = 200, epochs: int = 80, learning_rate: float = 0.005, regularisation: float = 0.1) -> None:
        if factors < 1 or epochs < 1:
            raise ValueError(f"{self.name}: factors and epochs must be at least 1, got {factors} and {epochs}")
        if learning_rate <= 0 or regularisation < 0:
            raise ValueError(f"{self.name}: learning_rate must be > 0 and regularisation >= 0, got {learning_rate} and {regularisation}")
        self.params: dict[str, Any] = {
            "factors": factors, "epochs": epochs, "learning_rate": learning_rate, "regularisation": regularisation,
        }
        self._state: dict[str, np.ndarray] | None = None
        self._users: dict[str, int] = {}
        self._items: dict[str, int] = {}

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        self.fit_pairs(labelled_pairs(train_requests), seed)

    def fit_pairs(self, pairs: Mapping[tuple[str, str], float], seed: int = 0) -> Self:
        """Fit on (user id, item id) -> label directly: what `fit` does with the requests' pairs,
        for callers that must leave some pairs out (out-of-fold features). Such a model scores but
        cannot be saved (it has no schema)."""
        try:
            import pandas as pd
            from surprise import SVD, Dataset, Reader
        except ImportError as exc:  # an optional extra: say how to install it, on the command line too
            raise DataError(f"baseline {self.name} needs scikit-surprise and pandas: {SURPRISE_INSTALL} ({exc})") from exc
        if not pairs:
            raise ValueError(f"{self.name}: the training requests hold no labelled (user, item) pair")
        frame = pd.DataFrame([(user, item, label) for (user, item), label in pairs.items()], columns=["user", "item", "label"])
        labels = frame["label"]
        reader = Reader(rating_scale=(float(labels.min()), float(labels.max())))
        trainset = Dataset.load_from_df(frame, reader).build_full_trainset()
        svd = SVD(
            n_factors=self.params["factors"], n_epochs=self.params["epochs"], lr_all=self.params["learning_rate"],
            reg_all=self.params["regularisation"], random_state=seed,
        )
        svd.fit(trainset)
        users = [trainset.to_raw_uid(inner) for inner in range(trainset.n_users)]
        items = [trainset.to_raw_iid(inner) for inner in range(trainset.n_items)]
        self._set_state({
            "users": np.asarray(users, dtype=str), "items": np.asarray(items, dtype=str),
            "mean": np.asarray([trainset.global_mean]), "user_bias": svd.bu, "item_bias": svd.bi,
            "user_factors": svd.pu, "item_factors": svd.qi,
        })
        return self

    def aligned_to(self, reference: "MatrixFactorisationRanker") -> "MatrixFactorisationRanker":
        """A copy whose factors are rotated into `reference`'s space (orthogonal Procrustes over
        the items both know): scores are unchanged (a rotation keeps every dot product), and its
        vectors can stand in for the reference's. Two fits of one data set learn the same space
        up to such a rotation, so vectors from models fitted on different folds become comparable."""
        from scipy.linalg import orthogonal_procrustes

        state, other = self._fitted_state(), reference._fitted_state()
        common = [item for item in self._items if item in reference._items]
        if not common:
            raise ValueError(f"{self.name}: no item in common with the reference model: cannot align")
        ours = state["item_factors"][[self._items[item] for item in common]]
        theirs = other["item_factors"][[reference._items[item] for item in common]]
        rotation, _ = orthogonal_procrustes(ours, theirs)
        aligned = MatrixFactorisationRanker(**self.params)
        aligned._set_state({
            **state, "user_factors": state["user_factors"] @ rotation, "item_factors": state["item_factors"] @ rotation,
        })
        return aligned

    def user_vector(self, user: str) -> np.ndarray | None:
        """The user's factors, None for a user the model never saw."""
        index = self._users.get(user)
        return None if index is None else self._fitted_state()["user_factors"][index]

    def item_vector(self, item: str) -> np.ndarray | None:
        """The item's factors, None for an item the model never saw."""
        index = self._items.get(item)
        return None if index is None else self._fitted_state()["item_factors"][index]

    def _fitted_state(self) -> dict[str, np.ndarray]:
        if self._state is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        return self._state

    def _set_state(self, state: dict[str, np.ndarray]) -> None:
        self._state = {key: np.asarray(value) for key, value in state.items()}
        self._users = {user: i for i, user in enumerate(self._state["users"].tolist())}
        self._items = {item: i for i, item in enumerate(self._state["items"].tolist())}

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        return [self._request_scores(request) for request in requests]

    def explain(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None, occlusion: bool = False) -> list[RankResult]:
        """`rank`, each score split into its terms: global mean, user bias, item bias and the
        user-item interaction (factors' dot product); they sum to the score. MF reads ids only, so
        there is no feature field to attribute."""
        state = self._fitted_state()
        explained = []
        for request, result in zip(requests, self.rank(requests, mode=mode), strict=True):
            user = self._users.get(request.user.id)
            per_candidate = {}
            for candidate in request.candidates:
                item = self._items.get(candidate.id)
                known = user is not None and item is not None
                terms = {
                    "global_mean": float(state["mean"][0]),
                    "user_bias": float(state["user_bias"][user]) if user is not None else 0.0,
                    "item_bias": float(state["item_bias"][item]) if item is not None else 0.0,
                    "interaction": float(state["user_factors"][user] @ state["item_factors"][item]) if known else 0.0,
                }
                reason = None if known else "an unknown user or item contributes no bias and no interaction"
                per_candidate[candidate.id] = {"mf_terms": Attribution(terms=terms, reason=reason)}
            explained.append(attach(request, result, self.name, per_candidate, score="predicted label (biased matrix factorisation)",
                                    not_attributed=["features: MF reads the user and item ids only"]))
        return explained

    def _request_scores(self, request: PostRankRequest) -> np.ndarray:
        state = self._fitted_state()
        user = self._users.get(request.user.id)
        user_bias = state["user_bias"][user] if user is not None else 0.0
        user_factors = state["user_factors"][user] if user is not None else None
        user_score = float(state["mean"][0]) + user_bias  # what every candidate starts from
        scores = []
        for candidate in request.candidates:
            item = self._items.get(candidate.id)
            score = user_score
            if item is not None:
                score += state["item_bias"][item]
                if user_factors is not None:
                    score += float(user_factors @ state["item_factors"][item])
            scores.append(score)
        return np.asarray(scores, dtype=np.float64)

    def _save_state(self, folder: Path) -> None:
        assert self._state is not None  # fitted: `save` checked
        np.savez(folder / STATE_FILE, **self._state)

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        with np.load(folder / STATE_FILE, allow_pickle=False) as saved:
            self._set_state({key: saved[key] for key in saved.files})
