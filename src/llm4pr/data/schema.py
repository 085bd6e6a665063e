"""The feature schema (`schema.json`): which features a user or item carries and what they mean.

Every feature is declared once, with its owner (user or item), its kind, and a short description
template. Encoders are built from the kinds; feature adaptation renders the templates into the
sentences the LLM learns to produce; request validation checks values against the kinds.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llm4pr.data.config_files import load_json_model
from llm4pr.io import atomic_write_text

SCHEMA_VERSION = 1


class FeatureKind(str, Enum):
    categorical = "categorical"
    multi_categorical = "multi_categorical"
    numerical = "numerical"
    text = "text"
    embedding = "embedding"


class FeatureSpec(BaseModel):
    """One feature of a user or an item."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    owner: Literal["user", "item"]
    kind: FeatureKind
    dim: int | None = Field(default=None, gt=0, description="vector size; embedding features only")
    description: str = Field(
        default="{name} {value}",
        description="template for feature adaptation; fields {name} and {value} (format specs allowed)",
    )

    @model_validator(mode="after")
    def _dim_matches_kind(self) -> "FeatureSpec":
        if self.kind is FeatureKind.embedding and self.dim is None:
            raise ValueError(f"feature '{self.name}': kind 'embedding' needs 'dim'")
        if self.kind is not FeatureKind.embedding and self.dim is not None:
            raise ValueError(f"feature '{self.name}': 'dim' is only for kind 'embedding'")
        return self

    @field_validator("description")
    @classmethod
    def _template_renders(cls, template: str) -> str:
        try:
            template.format(name="x", value=_SampleValue())
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"description template {template!r} does not render: {exc}") from exc
        return template

    def describe(self, value: Any) -> str:
        """Render the description template for one value (lists are joined with commas)."""
        if isinstance(value, list) and self.kind is not FeatureKind.embedding:
            value = ", ".join(str(v) for v in value)
        return self.description.format(name=self.name, value=value)

    def check_value(self, value: Any) -> Any:
        """Return the value in canonical form, or raise ValueError saying what is wrong."""
        kind = self.kind
        if kind is FeatureKind.categorical:
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise ValueError(f"expected a string (categorical), got {_type_name(value)}")
            return str(value)
        if kind is FeatureKind.multi_categorical:
            if not isinstance(value, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
            ):
                raise ValueError(f"expected a list of strings (multi_categorical), got {_type_name(value)}")
            return [str(v) for v in value]
        if kind is FeatureKind.numerical:
            return _finite_number(value)
        if kind is FeatureKind.text:
            if not isinstance(value, str):
                raise ValueError(f"expected a string (text), got {_type_name(value)}")
            return value
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {self.dim} numbers (embedding), got {_type_name(value)}")
        if len(value) != self.dim:
            raise ValueError(f"expected {self.dim} numbers (embedding), got {len(value)}")
        return [_finite_number(v) for v in value]


class FeatureSchema(BaseModel):
    """All features of a dataset; `schema.json` is its JSON form."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = SCHEMA_VERSION
    dataset: str = ""
    features: tuple[FeatureSpec, ...]
    label: str = Field(default="label", description="what `label` means, for humans: 'rating 1-5', 'clicks'")

    @model_validator(mode="after")
    def _unique_names(self) -> "FeatureSchema":
        seen: set[tuple[str, str]] = set()
        for spec in self.features:
            key = (spec.owner, spec.name)
            if key in seen:
                raise ValueError(f"feature '{spec.name}' is declared twice for owner '{spec.owner}'")
            seen.add(key)
        return self

    def for_owner(self, owner: Literal["user", "item"]) -> tuple[FeatureSpec, ...]:
        return tuple(spec for spec in self.features if spec.owner == owner)

    def spec(self, owner: Literal["user", "item"], name: str) -> FeatureSpec | None:
        for spec in self.features:
            if spec.owner == owner and spec.name == name:
                return spec
        return None

    def describe(self, owner: Literal["user", "item"], features: dict[str, Any]) -> str:
        """Every present feature of a user or item in words, from the templates, in schema order.
        Embeddings are left out: a vector written as numbers means nothing to a language model and
        would make feature-adaptation and all-text prompts several times longer."""
        parts = [
            spec.describe(features[spec.name])
            for spec in self.for_owner(owner)
            if features.get(spec.name) is not None and spec.kind is not FeatureKind.embedding
        ]
        return ", ".join(parts) if parts else "unknown"

    @classmethod
    def load(cls, path: str | Path) -> "FeatureSchema":
        return load_json_model(cls, path, "schema")

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.model_dump_json(indent=2, exclude_none=True) + "\n")


class _SampleValue:
    """Accepts any format spec, so that a template can be checked without a real value."""

    def __format__(self, spec: str) -> str:
        try:
            return format(1.0, spec)
        except ValueError:
            return format("x", spec)


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _finite_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {_type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError("number too large for a float") from None
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value}")
    return number
