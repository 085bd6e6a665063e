"""Schema-driven feature encoders: every user or item becomes a list of field vectors.

The paper's QIA attends over feature *fields*. One field per categorical, multi-categorical,
text and embedding feature, and ONE field for all numerical features together (normalised values
and their missing-flags concatenated), plus an optional ID field. Vocabularies and normalisation
statistics come from training requests only and are saved with the checkpoint (`FeatureStats`).
Text fields use a frozen sentence encoder; their vectors are computed once per distinct string.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn

from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec

Owner = Literal["user", "item"]
UNKNOWN = 0  # index of unseen and missing categorical values in every vocabulary
ID_FIELD = "__id__"


class SupportsEncode(Protocol):
    dim: int

    def encode(self, texts: Sequence[str]) -> torch.Tensor: ...


@dataclass
class FeatureStats:
    """What the encoders learned from training data: vocabularies and numeric mean/std."""

    vocabularies: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # owner -> feature -> values
    numeric: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)  # owner -> feature -> (mean, std)

    @classmethod
    def fit(
        cls,
        schema: FeatureSchema,
        requests: Iterable[PostRankRequest],
        embed_ids: bool = True,
        min_count: int = 1,
    ) -> "FeatureStats":
        counters: dict[Owner, dict[str, Counter[str]]] = {"user": {}, "item": {}}
        sums: dict[Owner, dict[str, list[float]]] = {"user": {}, "item": {}}
        for request in requests:
            _observe(schema, "user", request.user.id, request.user.features, counters, sums, embed_ids)
            for item in [*request.history, *request.candidates]:
                _observe(schema, "item", item.id, item.features, counters, sums, embed_ids)
        stats = cls()
        for owner in ("user", "item"):
            stats.vocabularies[owner] = {
                name: sorted(value for value, count in counter.items() if count >= min_count)
                for name, counter in counters[owner].items()
            }
            stats.numeric[owner] = {}
            for spec in schema.for_owner(owner):
                if spec.kind is FeatureKind.numerical:
                    count, total, total_sq = sums[owner].get(spec.name, [0.0, 0.0, 0.0])
                    mean = total / count if count else 0.0
                    variance = max(total_sq / count - mean * mean, 0.0) if count else 1.0
                    stats.numeric[owner][spec.name] = (mean, math.sqrt(variance) or 1.0)
        return stats

    def to_dict(self) -> dict[str, Any]:
        numeric = {owner: {name: list(ms) for name, ms in by_name.items()} for owner, by_name in self.numeric.items()}
        return {"vocabularies": self.vocabularies, "numeric": numeric}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "FeatureStats":
        numeric = {o: {k: (float(v[0]), float(v[1])) for k, v in d.items()} for o, d in raw["numeric"].items()}
        return cls(vocabularies=raw["vocabularies"], numeric=numeric)


def _observe(
    schema: FeatureSchema,
    owner: Owner,
    entity_id: str,
    features: dict[str, Any],
    counters: dict[Owner, dict[str, Counter[str]]],
    sums: dict[Owner, dict[str, list[float]]],
    embed_ids: bool,
) -> None:
    if embed_ids:
        counters[owner].setdefault(ID_FIELD, Counter())[entity_id] += 1
    for spec in schema.for_owner(owner):
        value = features.get(spec.name)
        if value is None:
            continue
        if spec.kind is FeatureKind.categorical:
            counters[owner].setdefault(spec.name, Counter())[str(value)] += 1
        elif spec.kind is FeatureKind.multi_categorical:
            counters[owner].setdefault(spec.name, Counter()).update(str(v) for v in value)
        elif spec.kind is FeatureKind.numerical:
            acc = sums[owner].setdefault(spec.name, [0.0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += float(value)
            acc[2] += float(value) ** 2


@dataclass(frozen=True)
class FieldInfo:
    """One field the QIA attends over: its name and the size of its vector."""

    name: str
    dim: int


class EntityEncoder(nn.Module):
    """Turns users (or items) into field vectors: a tensor [n_entities, n_fields, max_field_dim]
    is awkward for fields of different sizes, so `forward` returns a list of [n, d_j] tensors,
    one per field, in `fields` order."""

    def __init__(
        self,
        schema: FeatureSchema,
        owner: Owner,
        stats: FeatureStats,
        text_dim: int,
        categorical_dim: int = 32,
        embed_ids: bool = True,
    ) -> None:
        super().__init__()
        self.owner = owner
        self.specs: tuple[FeatureSpec, ...] = schema.for_owner(owner)
        self.embed_ids = embed_ids
        self.vocabularies: dict[str, dict[str, int]] = {
            name: {value: index + 1 for index, value in enumerate(values)}
            for name, values in stats.vocabularies.get(owner, {}).items()
        }
        self.numeric_stats = stats.numeric.get(owner, {})
        self.tables = nn.ModuleDict()
        # Where to put the inputs: an entity of text, embedding and numerical features only has no
        # parameter to ask (not saved: it only follows `.to(device)`).
        self.register_buffer("_device_anchor", torch.empty(0), persistent=False)
        fields: list[FieldInfo] = []
        if embed_ids:
            self.tables[ID_FIELD] = nn.Embedding(len(self.vocabularies.get(ID_FIELD, {})) + 1, categorical_dim)
            fields.append(FieldInfo(ID_FIELD, categorical_dim))
        self.numeric_names = [s.name for s in self.specs if s.kind is FeatureKind.numerical]
        for spec in self.specs:
            if spec.kind in (FeatureKind.categorical, FeatureKind.multi_categorical):
                size = len(self.vocabularies.get(spec.name, {})) + 1
                self.tables[spec.name] = nn.Embedding(size, categorical_dim)
                fields.append(FieldInfo(spec.name, categorical_dim))
            elif spec.kind is FeatureKind.text:
                fields.append(FieldInfo(spec.name, text_dim))
            elif spec.kind is FeatureKind.embedding:
                fields.append(FieldInfo(spec.name, int(spec.dim)))  # type: ignore[arg-type]
        if self.numeric_names:
            fields.append(FieldInfo("numerical", 2 * len(self.numeric_names)))
        for table in self.tables.values():
            nn.init.normal_(table.weight, std=0.1)
        self.fields: tuple[FieldInfo, ...] = tuple(fields)
        text_names = {s.name for s in self.specs if s.kind is FeatureKind.text}
        # Positions of the text fields in `forward`'s list: their vectors are the frozen text encoder's.
        self.text_fields: tuple[int, ...] = tuple(i for i, f in enumerate(fields) if f.name in text_names)

    def forward(
        self, ids: Sequence[str], features: Sequence[dict[str, Any]], text_encoder: SupportsEncode
    ) -> list[torch.Tensor]:
        device = self._device_anchor.device
        out: list[torch.Tensor] = []
        if self.embed_ids:
            index = torch.tensor([self.vocabularies.get(ID_FIELD, {}).get(i, UNKNOWN) for i in ids], device=device)
            out.append(self.tables[ID_FIELD](index))
        for spec in self.specs:
            values = [f.get(spec.name) for f in features]
            if spec.kind is FeatureKind.categorical:
                vocab = self.vocabularies.get(spec.name, {})
                index = torch.tensor([UNKNOWN if v is None else vocab.get(str(v), UNKNOWN) for v in values], device=device)
                out.append(self.tables[spec.name](index))
            elif spec.kind is FeatureKind.multi_categorical:
                out.append(self._bag(spec.name, values, device))
            elif spec.kind is FeatureKind.text:
                out.append(_encode_texts(values, text_encoder).to(device))
            elif spec.kind is FeatureKind.embedding:
                rows = [v if v is not None else [0.0] * int(spec.dim) for v in values]  # type: ignore[arg-type]
                out.append(torch.tensor(rows, dtype=torch.float32, device=device))
        if self.numeric_names:
            out.append(self.numeric_values(features, device))
        return out

    def _bag(self, name: str, values: list[Any], device: torch.device) -> torch.Tensor:
        vocab = self.vocabularies.get(name, {})
        flat: list[int] = []
        offsets: list[int] = []
        for value in values:
            offsets.append(len(flat))
            flat.extend([vocab.get(str(v), UNKNOWN) for v in value] if value else [UNKNOWN])
        return nn.functional.embedding_bag(
            torch.tensor(flat, device=device), self.tables[name].weight, torch.tensor(offsets, device=device), mode="mean"
        )

    def numeric_values(self, features: Sequence[dict[str, Any]], device: torch.device) -> torch.Tensor:
        """[n, 2k]: each numerical feature z-scored with training statistics (clipped to +-5) and its missing flag."""
        rows = []
        for f in features:
            row = []
            for name in self.numeric_names:
                value = f.get(name)
                mean, std = self.numeric_stats.get(name, (0.0, 1.0))
                if value is None:
                    row.extend((0.0, 1.0))
                else:
                    row.extend((max(min((float(value) - mean) / std, 5.0), -5.0), 0.0))
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float32, device=device)


def _encode_texts(values: list[Any], text_encoder: SupportsEncode) -> torch.Tensor:
    """Encode the non-missing strings; missing text is a zero vector."""
    present = [i for i, v in enumerate(values) if v]
    result = torch.zeros(len(values), text_encoder.dim)
    if present:
        result[present] = text_encoder.encode([str(values[i]) for i in present]).float()
    return result
