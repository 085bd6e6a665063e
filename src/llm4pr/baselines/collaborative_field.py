"""The collaborative field: what matrix factorisation knows, as features every ranker can read.

A biased matrix factorisation of the training ratings (the `mf` baseline, scikit-surprise) adds
to each request, as plain schema features:

- `mf_score` (item, numerical): the rating the model predicts for the request's user and the
  candidate (candidates only: a history item already carries the user's own label);
- with `vectors`, `mf_user_vector` (user, embedding) and `mf_item_vector` (item, embedding, for
  history items and candidates): the model's factors, which QIA turns into the soft tokens as one
  more field (the CoLLM route, arXiv 2310.19488).

No request's features are fitted on its own labels. Validation and test requests get the model
fitted on every labelled pair of the training requests (their own labels are not training
labels). A training request gets the model of its fold (k folds over the training requests, the
seed's random assignment): fitted on every training pair but the fold's candidates, wherever they
appear (a candidate's label is also the history label of the user's later requests). Each fold
model is rotated into the full model's space (orthogonal Procrustes over the items they share),
so that one vector space serves training and held-out requests alike; the rotation leaves every
predicted rating unchanged. A user or item the model never saw gets no vector (absent = missing);
its score falls back to the biases the model knows, as the `mf` baseline's does.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llm4pr.baselines.collaborative import MatrixFactorisationRanker, labelled_pairs
from llm4pr.baselines.ltr import fold_assignment
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json, write_jsonl
from llm4pr.data.requests import Item, PostRankRequest
from llm4pr.data.schema import FeatureSchema, FeatureSpec
from llm4pr.provenance import git_commit, provenance

MF_SCORE = "mf_score"
MF_USER_VECTOR = "mf_user_vector"
MF_ITEM_VECTOR = "mf_item_vector"
COLLABORATIVE_FEATURES = (MF_SCORE, MF_USER_VECTOR, MF_ITEM_VECTOR)
SPLITS = ("train", "valid", "test")
MODEL_FOLDER = "mf"
REPORT_FILE = "collaborative.json"


@dataclass
class CollaborativeField:
    """The full model, each training request's out-of-fold model, and whether vectors are added."""

    full: MatrixFactorisationRanker
    fold_models: dict[str, MatrixFactorisationRanker]  # training request id -> its fold's model
    vectors: bool

    @classmethod
    def fit(
        cls,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        folds: int = 5,
        seed: int = 0,
        vectors: bool = False,
        **mf_params: Any,
    ) -> "CollaborativeField":
        """Fit the full model on every training pair, then one model per fold without that fold's
        candidates (`folds` + 1 fits of the `mf` baseline, its defaults unless `mf_params` say)."""
        taken = [name for name in COLLABORATIVE_FEATURES if any(spec.name == name for spec in schema.features)]
        if taken:
            raise ValueError(f"the data already has collaborative features ({', '.join(taken)}): add them to data without them")
        full = MatrixFactorisationRanker(**mf_params).fit(train_requests, schema, seed=seed)
        pairs = labelled_pairs(train_requests)
        assignment = fold_assignment(len(train_requests), folds, seed)
        fold_models: dict[str, MatrixFactorisationRanker] = {}
        for fold in range(folds):
            members = [request for request, f in zip(train_requests, assignment, strict=True) if f == fold]
            held_out = {(request.user.id, candidate.id) for request in members for candidate in request.candidates}
            kept = {pair: label for pair, label in pairs.items() if pair not in held_out}
            model = MatrixFactorisationRanker(**mf_params).fit_pairs(kept, seed).aligned_to(full)
            fold_models.update((request.request_id, model) for request in members)
        return cls(full, fold_models, vectors)

    def schema(self, schema: FeatureSchema) -> FeatureSchema:
        """The input schema plus the collaborative features."""
        added = [FeatureSpec(name=MF_SCORE, owner="item", kind="numerical", description="predicted rating {value:.1f}")]
        if self.vectors:
            dim = int(self.full.params["factors"])
            added += [
                FeatureSpec(name=MF_USER_VECTOR, owner="user", kind="embedding", dim=dim),
                FeatureSpec(name=MF_ITEM_VECTOR, owner="item", kind="embedding", dim=dim),
            ]
        return schema.model_copy(update={"features": (*schema.features, *added)})

    def add(self, requests: Sequence[PostRankRequest], training: bool) -> list[PostRankRequest]:
        """Copies of the requests with the collaborative features: training requests (the very
        ones it was fitted on) from their fold's model, any other from the full model."""
        if training:
            unknown = [request.request_id for request in requests if request.request_id not in self.fold_models]
            if unknown:
                raise ValueError(f"training=True: requests not among those the field was fitted on: {', '.join(unknown[:5])}")
        return [self._with_features(request, self.fold_models[request.request_id] if training else self.full) for request in requests]

    def _with_features(self, request: PostRankRequest, model: MatrixFactorisationRanker) -> PostRankRequest:
        scores = model.score([request])[0]

        def item_features(item: Item, extra: dict[str, Any]) -> Item:
            if self.vectors:
                extra = {**extra, **_vector(MF_ITEM_VECTOR, model.item_vector(item.id))}
            return item.model_copy(update={"features": {**item.features, **extra}})

        user = request.user
        if self.vectors:
            user = user.model_copy(update={"features": {**user.features, **_vector(MF_USER_VECTOR, model.user_vector(user.id))}})
        history = [item_features(item, {}) for item in request.history]
        candidates = [
            item_features(item, {MF_SCORE: round(float(score), 4)}) for item, score in zip(request.candidates, scores, strict=True)
        ]
        return request.model_copy(update={"user": user, "history": history, "candidates": candidates})


def _vector(name: str, vector: np.ndarray | None) -> dict[str, list[float]]:
    """The feature entry for a vector, rounded for compact files; nothing for an unknown entity."""
    return {} if vector is None else {name: [round(float(value), 5) for value in vector]}


def add_collaborative_field(
    data: str | Path, out: str | Path, folds: int = 5, seed: int = 0, vectors: bool = False, **mf_params: Any
) -> dict[str, Any]:
    """`llm4pr data collaborative`: copy a prepared data folder into `out` with the collaborative
    features added to every split; the full model is saved as an `mf` baseline in `out/mf` (what
    computes the features of new requests); `collaborative.json`, written last, records how."""
    data, out = Path(data), Path(out)
    if not (data / "schema.json").is_file() or not (data / "train.jsonl").is_file():
        raise DataError(f"{data}: not a prepared data folder (expected schema.json and train.jsonl)")
    started = time.perf_counter()
    commit = git_commit()
    schema = FeatureSchema.load(data / "schema.json")
    splits = {split: read_requests(data / f"{split}.jsonl", schema) for split in SPLITS if (data / f"{split}.jsonl").is_file()}
    try:
        field = CollaborativeField.fit(splits["train"], schema, folds=folds, seed=seed, vectors=vectors, **mf_params)
    except ValueError as exc:  # features already there, too few requests for the folds, no labels
        raise DataError(f"{data}: {exc}") from None
    for split, requests in splits.items():
        write_jsonl(out / f"{split}.jsonl", field.add(requests, training=split == "train"))
    field.schema(schema).save(out / "schema.json")
    field.full.save(out / MODEL_FOLDER)
    report = {
        "source": str(data),
        "features": [spec.name for spec in field.schema(schema).features if spec.name in COLLABORATIVE_FEATURES],
        "folds": folds,
        "seed": seed,
        "mf": field.full.params,
        "rule": "training requests: the model of their fold (fitted without the fold's candidates, rotated into the "
        "full model's space); other splits: the model fitted on every training pair",
        "requests": {split: len(requests) for split, requests in splits.items()},
        "wall_s": round(time.perf_counter() - started, 1),
        **provenance(commit),
    }
    write_json(out / REPORT_FILE, report)
    return report
