"""The post-ranking request (one JSON line) and the ranking result, as validated models.

A request carries the query, the user, the user's recent history and the ranking stage's
candidate list in its order. `label` is feedback, present in training and evaluation data only.
Structural rules (types, non-empty candidate list, unique candidate ids) are checked by the
models; `check_features` checks feature names and values against a `FeatureSchema`.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llm4pr.data.errors import DataError
from llm4pr.data.explanations import Explanation
from llm4pr.data.schema import FeatureSchema

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class User(_Strict):
    id: str = Field(min_length=1)
    features: dict[str, Any] = Field(default_factory=dict)


class Item(_Strict):
    id: str = Field(min_length=1)
    features: dict[str, Any] = Field(default_factory=dict)
    label: float | None = None

    @field_validator("label", mode="before")
    @classmethod
    def _finite_label(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("label must be a number, got bool")
        if isinstance(value, int):
            try:
                return float(value)
            except OverflowError:
                raise ValueError("label too large for a float") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"label must be finite, got {value}")
        return value


class PostRankRequest(_Strict):
    """One post-ranking request: rank ALL candidates, never lose, duplicate or invent one."""

    request_id: str = Field(min_length=1)
    query: str
    user: User
    history: list[Item] = Field(default_factory=list)
    candidates: list[Item] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_candidates(self) -> "PostRankRequest":
        seen: set[str] = set()
        for position, item in enumerate(self.candidates):
            if item.id in seen:
                raise ValueError(f"duplicate candidate id '{item.id}' at candidates[{position}]")
            seen.add(item.id)
        return self

    @property
    def candidate_ids(self) -> list[str]:
        return [item.id for item in self.candidates]

    @property
    def labels(self) -> list[float]:
        """Feedback per candidate in ranking-stage order; raises if any candidate has none."""
        missing = [item.id for item in self.candidates if item.label is None]
        if missing:
            raise DataError(f"request '{self.request_id}': candidates without label: {missing}")
        return [float(item.label) for item in self.candidates]  # type: ignore[arg-type]

    @property
    def has_labels(self) -> bool:
        return all(item.label is not None for item in self.candidates)

    def check_features(self, schema: FeatureSchema) -> "PostRankRequest":
        """Validate every feature against the schema in place (canonical types); return self.

        Unknown feature names and values of the wrong kind are errors; a feature may be absent
        (encoders treat it as missing).
        """
        _check_owner_features(self.request_id, "user", self.user.features, schema, "user")
        for field_name, items in (("history", self.history), ("candidates", self.candidates)):
            for position, item in enumerate(items):
                where = f"{field_name}[{position}] (id '{item.id}')"
                _check_owner_features(self.request_id, where, item.features, schema, "item")
        return self


class RankResult(BaseModel):
    """One line of a run file: the request id and the full post-ranked list of candidate ids."""

    model_config = ConfigDict(extra="allow")

    request_id: str
    ranking: list[str]
    scores: list[float] | None = Field(default=None, description="per ranked id, where the mode has scores")
    mode: str | None = None
    fallback: bool = Field(default=False, description="true: the ranking-stage order, because ranking failed")
    error: str | None = None
    repaired: bool | None = Field(default=None, description="unconstrained decoding: the output needed repair")
    latency_ms: float | None = None
    explanations: Explanation | None = Field(default=None, description="why this ranking: set by a ranker's `explain` only")


def _check_owner_features(
    request_id: str,
    where: str,
    features: dict[str, Any],
    schema: FeatureSchema,
    owner: Literal["user", "item"],
) -> None:
    for name, value in list(features.items()):
        spec = schema.spec(owner, name)
        if spec is None:
            known = ", ".join(s.name for s in schema.for_owner(owner)) or "none"
            raise DataError(
                f"request '{request_id}': {where}.features.{name}: unknown {owner} feature (schema has: {known})"
            )
        if value is None:
            continue
        try:
            features[name] = spec.check_value(value)
        except ValueError as exc:
            raise DataError(f"request '{request_id}': {where}.features.{name}: {exc}") from exc
