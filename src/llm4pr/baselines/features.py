"""One dense feature vector per (request, candidate), shared by every learned baseline.

The baselines must see the same information, so they read the same vectors; only the model on
top differs. The vector is built from the schema, with statistics from training requests only:

- item and user features: categorical and multi-categorical as one-hot / multi-hot (fixed
  vectors, so that LightGBM reads the same input as the neural models; a feature with more
  than `max_categories` training values is hashed into that many buckets, the unknown value
  keeps its own slot), numerical as z-score (clipped to +-5) plus a missing flag, text through
  the frozen text encoder reduced by PCA (fitted on training texts) to `text_dim`, embedding
  features as they are;
- history summary: log(1 + history length), the mean history label and a has-labels flag;
- user-item crosses, one per item feature, against the user's history profile (the mean of the
  history items' vectors): the share of history items with the candidate's category values,
  the z-score difference for numbers, the cosine for text and embeddings; the same against the
  label-weighted profile (each history item weighted by its label minus the history's mean
  label: "does this user rate such items above their own average"); and for every text feature
  the cosine with the query;
- the ranking-stage signals (score and learned user/item embeddings, see `protocols`) are plain
  schema features named `RANKING_STAGE_FEATURES`; they are in the vector exactly when the schema
  declares them.

Finally every column is standardised with its training mean and std: the blocks differ in scale,
and the neural models train better on unit-scale inputs (trees do not care).

What fitting learned is saved as JSON (`featuriser.json`, arrays as dtype, shape and values, so
that a loaded featuriser gives the same vectors bit for bit); the schema and the text encoder's
name are saved by the ranker that owns the featuriser.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm4pr.data.requests import Item, PostRankRequest
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec
from llm4pr.features.encoders import FeatureStats
from llm4pr.features.text_encoder import DEFAULT_TEXT_ENCODER, BaseTextEncoder, load_text_encoder
from llm4pr.io import atomic_write_text

FEATURISER_FILE = "featuriser.json"
RANKING_STAGE_SCORE = "ranking_stage_score"
RANKING_STAGE_USER_EMBEDDING = "ranking_stage_user_embedding"
RANKING_STAGE_ITEM_EMBEDDING = "ranking_stage_item_embedding"
RANKING_STAGE_FEATURES = frozenset({RANKING_STAGE_SCORE, RANKING_STAGE_USER_EMBEDDING, RANKING_STAGE_ITEM_EMBEDDING})
_CLIP = 5.0
_CHUNK = 8192  # rows per step when pairing query and text vectors


def uses_ranking_stage_signals(schema: FeatureSchema) -> bool:
    """True when the schema declares any ranking-stage signal (so the featuriser includes it)."""
    return any(spec.name in RANKING_STAGE_FEATURES for spec in schema.features)


@lru_cache(maxsize=4)
def shared_text_encoder(name: str) -> BaseTextEncoder:
    """One loaded encoder per name for the whole process: every baseline reads the same texts."""
    return load_text_encoder(name)


@dataclass
class _Span:
    """Where one feature's columns sit in an entity (user or item) vector."""

    spec: FeatureSpec
    start: int
    stop: int


class Featuriser:
    """Fitted on training requests; turns requests into float32 arrays [n_candidates, dim]."""

    def __init__(
        self,
        schema: FeatureSchema,
        text_encoder: str | BaseTextEncoder = DEFAULT_TEXT_ENCODER,
        text_dim: int = 32,
        max_categories: int = 64,
    ) -> None:
        self.schema = schema
        self.text_encoder = shared_text_encoder(text_encoder) if isinstance(text_encoder, str) else text_encoder
        self.text_dim = text_dim
        self.max_categories = max_categories
        self._fitted = False

    @property
    def uses_ranking_stage_signals(self) -> bool:
        return uses_ranking_stage_signals(self.schema)

    @property
    def dim(self) -> int:
        self._check_fitted()
        return int(self._mean.shape[0])

    def fit_transform(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        """Learn vocabularies, normalisation, the text projection and column scales; featurise."""
        if not requests:
            raise ValueError("cannot fit a featuriser on no requests")
        stats = FeatureStats.fit(self.schema, requests, embed_ids=False)
        self._numeric = stats.numeric
        self._slots = {
            owner: {name: _category_slots(values, self.max_categories) for name, values in by_name.items()}
            for owner, by_name in stats.vocabularies.items()
        }
        self._fit_text_projections(requests)
        self._item_spans = self._spans("item")
        self._user_spans = self._spans("user")
        raw = self._raw(requests)
        stacked = np.concatenate(raw)
        self._mean = stacked.mean(axis=0)
        std = stacked.std(axis=0)
        self._std = np.where(std > 1e-8, std, 1.0)
        self._fitted = True
        return [self._standardise(x) for x in raw]

    def transform(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        self._check_fitted()
        return [self._standardise(x) for x in self._raw(requests)] if requests else []

    def column_groups(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """Per column of the vector, in order: (group name, owner, schema features it is built from).

        Why: an attribution per column (LightGBM's `pred_contrib`) means something to a reader only
        summed per feature. A user or item feature's own columns carry its name ("user.NAME" when an
        item feature has the same name); the derived columns get their own groups: "history summary"
        (length, mean label, has labels; owner "request", from no feature), "history cross: NAME"
        (both profiles' crosses of item feature NAME) and "query match: NAME" (text feature NAME)."""
        self._check_fitted()
        item_names = {span.spec.name for span in self._item_spans}
        groups: list[tuple[str, str, tuple[str, ...]]] = []
        for span in self._item_spans:
            groups += [(span.spec.name, "item", (span.spec.name,))] * (span.stop - span.start)
        for span in self._user_spans:
            name = f"user.{span.spec.name}" if span.spec.name in item_names else span.spec.name
            groups += [(name, "user", (span.spec.name,))] * (span.stop - span.start)
        groups += [("history summary", "request", ())] * 3
        for _ in ("profile", "label-weighted profile"):
            groups += [(f"history cross: {span.spec.name}", "item", (span.spec.name,)) for span in self._item_spans]
        groups += [(f"query match: {spec.name}", "item", (spec.name,)) for spec in self.schema.for_owner("item") if spec.kind is FeatureKind.text]
        if len(groups) != self.dim:
            raise RuntimeError(f"featuriser: {len(groups)} column groups for {self.dim} columns (a block was added without its group)")
        return groups

    # -- saving --------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write what fitting learned to `folder/featuriser.json`."""
        self._check_fitted()
        state = {
            "text_dim": self.text_dim,
            "max_categories": self.max_categories,
            "numeric": self._numeric,
            "slots": self._slots,
            "projections": [
                {"owner": owner, "name": name, "mean": _listed(mean), "basis": _listed(basis)}
                for (owner, name), (mean, basis) in self._projections.items()
            ],
            "mean": _listed(self._mean),
            "std": _listed(self._std),
        }
        atomic_write_text(Path(folder) / FEATURISER_FILE, json.dumps(state))

    @classmethod
    def load(cls, folder: str | Path, schema: FeatureSchema, text_encoder: str | BaseTextEncoder) -> "Featuriser":
        """The featuriser `save` wrote into `folder`, fitted for `schema` with `text_encoder`."""
        raw = json.loads((Path(folder) / FEATURISER_FILE).read_text(encoding="utf-8"))
        featuriser = cls(schema, text_encoder, raw["text_dim"], raw["max_categories"])
        featuriser._numeric = {
            owner: {name: (float(mean), float(std)) for name, (mean, std) in by_name.items()} for owner, by_name in raw["numeric"].items()
        }
        featuriser._slots = raw["slots"]
        featuriser._projections = {(p["owner"], p["name"]): (_array(p["mean"]), _array(p["basis"])) for p in raw["projections"]}
        for (owner, name), (mean, _) in featuriser._projections.items():
            if mean.shape != (featuriser.text_encoder.dim,):
                raise ValueError(
                    f"{owner} text feature {name!r} was fitted on {mean.shape[0]}-d text vectors; "
                    f"the text encoder gives {featuriser.text_encoder.dim}-d ones"
                )
        featuriser._item_spans = featuriser._spans("item")
        featuriser._user_spans = featuriser._spans("user")
        featuriser._mean, featuriser._std = _array(raw["mean"]), _array(raw["std"])
        featuriser._fitted = True
        return featuriser

    # -- fitting -------------------------------------------------------------------------------

    def _fit_text_projections(self, requests: Sequence[PostRankRequest]) -> None:
        """Per text feature: the mean and top principal directions of the training texts' vectors."""
        self._projections: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        for spec in self.schema.features:
            if spec.kind is not FeatureKind.text:
                continue
            texts = sorted({t for f in _owner_features(requests, spec.owner) if (t := f.get(spec.name))})
            vectors = (
                self.text_encoder.encode(texts).double()
                if texts
                else torch.zeros(1, self.text_encoder.dim, dtype=torch.float64)
            )
            mean = vectors.mean(0)
            k = min(self.text_dim, self.text_encoder.dim)
            # Right singular vectors of the centred matrix; a deterministic (LAPACK) decomposition.
            _, _, vh = torch.linalg.svd(vectors - mean, full_matrices=False)
            basis = torch.zeros(self.text_encoder.dim, k, dtype=torch.float64)
            basis[:, : min(k, vh.shape[0])] = vh[:k].T
            self._projections[(spec.owner, spec.name)] = (mean.numpy(), basis.numpy())

    def _spans(self, owner: str) -> list[_Span]:
        spans, start = [], 0
        for spec in self.schema.for_owner(owner):  # type: ignore[arg-type]
            width = self._width(spec)
            spans.append(_Span(spec, start, start + width))
            start += width
        return spans

    def _width(self, spec: FeatureSpec) -> int:
        if spec.kind in (FeatureKind.categorical, FeatureKind.multi_categorical):
            slots = self._slots.get(spec.owner, {}).get(spec.name, {})
            return 1 + max(slots.values(), default=0)
        if spec.kind is FeatureKind.numerical:
            return 2
        if spec.kind is FeatureKind.text:
            return self._projections[(spec.owner, spec.name)][1].shape[1]
        return int(spec.dim)  # type: ignore[arg-type]

    # -- featurising ---------------------------------------------------------------------------

    def _raw(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        candidates = [item for r in requests for item in r.candidates]
        history = [item for r in requests for item in r.history]
        item_vectors = self._entity_vectors(self._item_spans, [i.features for i in candidates])
        history_vectors = self._entity_vectors(self._item_spans, [i.features for i in history])
        user_vectors = self._entity_vectors(self._user_spans, [r.user.features for r in requests])
        profile, weighted_profile, history_stats = _history_profiles(requests, history_vectors)
        per_candidate = np.repeat(np.arange(len(requests)), [len(r.candidates) for r in requests])
        parts = [
            item_vectors,
            user_vectors[per_candidate],
            history_stats[per_candidate],
            self._crosses(item_vectors, profile[per_candidate], weighted=False),
            self._crosses(item_vectors, weighted_profile[per_candidate], weighted=True),
            self._query_similarities(requests, candidates, per_candidate),
        ]
        rows = np.concatenate(parts, axis=1).astype(np.float32)
        return np.split(rows, np.cumsum([len(r.candidates) for r in requests])[:-1])

    def _entity_vectors(self, spans: list[_Span], features: list[dict[str, Any]]) -> np.ndarray:
        width = spans[-1].stop if spans else 0
        out = np.zeros((len(features), width), dtype=np.float64)
        for span in spans:
            block = out[:, span.start : span.stop]
            values = [f.get(span.spec.name) for f in features]
            kind = span.spec.kind
            if kind in (FeatureKind.categorical, FeatureKind.multi_categorical):
                slots = self._slots.get(span.spec.owner, {}).get(span.spec.name, {})
                for row, value in enumerate(values):
                    listed = [] if value is None else value if isinstance(value, list) else [value]
                    for v in listed or [None]:
                        block[row, 0 if v is None else slots.get(str(v), 0)] = 1.0
            elif kind is FeatureKind.numerical:
                mean, std = self._numeric.get(span.spec.owner, {}).get(span.spec.name, (0.0, 1.0))
                for row, value in enumerate(values):
                    if value is None:
                        block[row, 1] = 1.0
                    else:
                        block[row, 0] = max(min((float(value) - mean) / std, _CLIP), -_CLIP)
            elif kind is FeatureKind.text:
                block[:] = self._reduced_texts(span.spec, values)
            else:
                present = [row for row, v in enumerate(values) if v is not None]
                if present:
                    block[present] = np.asarray([values[row] for row in present], dtype=np.float64)
        return out

    def _distinct_texts(self, values: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors of the distinct texts, each encoded once, and each value's row (-1: missing).

        Rows are looked up late, per block or chunk: one vector per history item would not fit.
        """
        distinct = list(dict.fromkeys(v for v in values if v))
        row_of = {text: i for i, text in enumerate(distinct)}
        index = np.asarray([row_of[v] if v else -1 for v in values], dtype=np.int64)
        if not distinct:
            return np.zeros((1, self.text_encoder.dim)), index
        return self.text_encoder.encode(distinct).double().numpy(), index

    def _reduced_texts(self, spec: FeatureSpec, values: list[Any]) -> np.ndarray:
        mean, basis = self._projections[(spec.owner, spec.name)]
        vectors, index = self._distinct_texts(values)
        reduced = np.concatenate([(vectors - mean) @ basis, np.zeros((1, basis.shape[1]))])
        return reduced[index]  # index -1 picks the zero row appended last

    def _crosses(self, items: np.ndarray, profiles: np.ndarray, weighted: bool) -> np.ndarray:
        """One similarity per item feature between the candidate and a history profile.

        Numbers: the difference from the profile's mean, or (label-weighted profile) the product,
        which is positive when the user rates items with larger values above their own average.
        """
        columns = []
        for span in self._item_spans:
            item, profile = items[:, span.start : span.stop], profiles[:, span.start : span.stop]
            kind = span.spec.kind
            if kind in (FeatureKind.categorical, FeatureKind.multi_categorical):
                known = item[:, 1:]  # the unknown slot says nothing about taste
                columns.append((known * profile[:, 1:]).sum(1) / np.maximum(known.sum(1), 1.0))
            elif kind is FeatureKind.numerical:
                columns.append(item[:, 0] * profile[:, 0] if weighted else item[:, 0] - profile[:, 0])
            else:
                columns.append(_cosine(item, profile))
        return np.stack(columns, axis=1) if columns else np.zeros((len(items), 0))

    def _query_similarities(
        self, requests: Sequence[PostRankRequest], candidates: list[Item], per_candidate: np.ndarray
    ) -> np.ndarray:
        """Cosine between the query and each text feature of the candidate (full encoder space)."""
        queries, query_index = self._distinct_texts([r.query for r in requests])
        query_rows = query_index[per_candidate]
        columns = []
        for spec in self.schema.for_owner("item"):
            if spec.kind is not FeatureKind.text:
                continue
            texts, text_index = self._distinct_texts([c.features.get(spec.name) for c in candidates])
            column = np.zeros(len(candidates))
            for start in range(0, len(candidates), _CHUNK):
                rows = slice(start, start + _CHUNK)
                t, q = text_index[rows], query_rows[rows]
                present = (t >= 0) & (q >= 0)
                column[rows] = np.where(present, (texts[t] * queries[q]).sum(1), 0.0)
            columns.append(column)
        return np.stack(columns, axis=1) if columns else np.zeros((len(candidates), 0))

    def _standardise(self, raw: np.ndarray) -> np.ndarray:
        return ((raw - self._mean) / self._std).astype(np.float32)

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("Featuriser.fit_transform must run before transform")


def _listed(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": str(array.dtype), "shape": list(array.shape), "values": array.ravel().tolist()}


def _array(listed: dict[str, Any]) -> np.ndarray:
    return np.asarray(listed["values"], dtype=listed["dtype"]).reshape(listed["shape"])


def _category_slots(values: list[str], max_categories: int) -> dict[str, int]:
    """Training value -> column (1-based; 0 is unknown). Beyond `max_categories`, stable hashing."""
    if len(values) <= max_categories:
        return {value: index + 1 for index, value in enumerate(values)}
    return {value: 1 + _stable_hash(value) % max_categories for value in values}


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _owner_features(requests: Sequence[PostRankRequest], owner: str) -> list[dict[str, Any]]:
    if owner == "user":
        return [r.user.features for r in requests]
    return [item.features for r in requests for item in (*r.history, *r.candidates)]


def _history_profiles(
    requests: Sequence[PostRankRequest], history_vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per request: the mean history vector, the label-weighted mean, and [log1p(len), mean label, has labels]."""
    lengths = np.asarray([len(r.history) for r in requests])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    profile = np.zeros((len(requests), history_vectors.shape[1]))
    weighted = np.zeros_like(profile)
    stats = np.zeros((len(requests), 3))
    for index, request in enumerate(requests):
        if not request.history:
            continue
        rows = history_vectors[starts[index] : starts[index + 1]]
        profile[index] = rows.mean(0)
        stats[index, 0] = math.log1p(len(request.history))
        labels = [item.label for item in request.history]
        if all(label is not None for label in labels):
            centred = np.asarray(labels, dtype=np.float64)
            stats[index, 1:] = (centred.mean(), 1.0)
            centred -= centred.mean()
            weighted[index] = (centred[:, None] * rows).mean(0)
    return profile, weighted, stats


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(1) / np.where(norms > 0, norms, 1.0), 0.0)
