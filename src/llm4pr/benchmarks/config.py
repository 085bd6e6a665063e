"""The benchmark's config file (`benchmarks/*.yaml`): its rows, seeds, protocols and data, checked
when it is loaded, so that a typo fails before hours of training rather than after."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llm4pr.data.config_files import load_yaml_model
from llm4pr.evaluation.metrics import Cutoffs
from llm4pr.rankers.base import ServedMode

Protocol = Literal["input", "ranking_stage"]
TABLED_METRICS = ("ndcg", "mrr")  # evaluated at every cutoff of `metrics_at`, and tabled


class RowConfig(BaseModel):
    """One row of the table: a baseline (by registry name) or an LLM4PR training config."""

    model_config = ConfigDict(extra="forbid")

    name: str
    baseline: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="baseline constructor arguments")
    llm4pr: Path | None = Field(default=None, description="training config (YAML) of an LLM row, relative to the working directory")
    overrides: dict[str, Any] = Field(default_factory=dict, description="deep-merged into the training config")
    mode: ServedMode = Field(default="generate", description="an LLM row's inference mode (a baseline has one ranking)")
    signals: bool = Field(default=False, description="consume the ranking-stage score and embeddings as features")
    drop_features: list[str] = Field(
        default_factory=list,
        description="features of the data this row does not see (an ablation, e.g. 'w/o collaborative field'): removed "
        "from its schema and requests in every split",
    )
    rerank_calls: bool = Field(
        default=False,
        description="rank the test requests as a rerank call sends them (each candidate's text only, data/rerank.py): "
        "what /v1 and /v2 rerank answer; training is unchanged (an LLM row shares its run with the same recipe's rows)",
    )
    seeds: list[int] | None = Field(
        default=None,
        min_length=1,
        description="this row's seeds, some of the benchmark's (None: all of them): a row too costly to train for every seed; "
        "results.md marks it",
    )

    @model_validator(mode="after")
    def _one_kind(self) -> "RowConfig":
        if (self.baseline is None) == (self.llm4pr is None):
            raise ValueError(f"row '{self.name}': give exactly one of 'baseline' or 'llm4pr'")
        return self


class CollaborativeSettings(BaseModel):
    """The collaborative field added to the benchmark's data (`llm4pr data collaborative`)."""

    model_config = ConfigDict(extra="forbid")

    vectors: bool = Field(default=False, description="the user and item factors as embedding features, besides the score")
    folds: int = Field(default=5, ge=2, description="folds over the training requests for their out-of-fold features")


class BenchmarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(default="recbole", description="MovieLens source for `llm4pr data prepare movielens` (not with `data`)")
    prior_weight: float = Field(
        default=0.0, ge=0.0, description="MovieLens: shrink the as-of average ratings toward the global mean (`--prior-weight`)"
    )
    cold_items: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="MovieLens: the cold-start protocol's fraction of cold items (`--cold-items`); results add the subset "
        "of test requests with a cold candidate",
    )
    cold_seed: int = Field(default=0, description="MovieLens: the cold items' draw (`--cold-seed`)")
    collaborative: CollaborativeSettings | None = Field(
        default=None, description="add the collaborative field (matrix-factorisation features) to the data every row sees"
    )
    data: Path | None = Field(default=None, description="a prepared data folder (`llm4pr data prepare ...`) instead of MovieLens")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    protocols: list[Protocol] = Field(default_factory=lambda: ["input", "ranking_stage"], min_length=1)
    max_train_requests: int | None = Field(default=None, gt=0, description="subsample the training split (all rows)")
    max_test_requests: int | None = Field(default=None, gt=0)
    ranking_stage_folds: int = Field(default=5, ge=2)
    latency_requests: int = Field(default=50, ge=1, description="requests timed one by one for LLM rows")
    metrics_at: Cutoffs = Field(default_factory=lambda: [3, 5], description="cutoffs k of the NDCG@k and MRR@k evaluated and tabled")
    protocol_overrides: dict[Protocol, dict[str, Any]] = Field(
        default_factory=dict, description="deep-merged into every LLM row's training config under that protocol"
    )
    rows: list[RowConfig] = Field(min_length=1)
    paired_with: list[str] = Field(
        default_factory=list,
        description="rows that every row is also paired with, request by request, besides the best baseline (e.g. the first stage's order)",
    )

    @field_validator("rows", mode="before")
    @classmethod
    def _one_row_per_mode(cls, rows: Any) -> Any:
        """A row given `modes` stands for one row per inference mode, all ranking with the same
        training run: the first mode keeps the name, each other one adds its own, in brackets
        ("LLM4PR w/o FA" and "LLM4PR w/o FA (first_token)")."""
        if not isinstance(rows, list):
            return rows
        expanded = []
        for row in rows:
            if not isinstance(row, dict) or "modes" not in row:
                expanded.append(row)
                continue
            name, modes = row.get("name", "?"), row["modes"]
            if "mode" in row:
                raise ValueError(f"row '{name}': give 'mode' (one row) or 'modes' (a row per mode), not both")
            if not isinstance(modes, list) or not modes or len(set(modes)) != len(modes):
                raise ValueError(f"row '{name}': 'modes' must be a list of distinct inference modes, got {modes!r}")
            unknown = [mode for mode in modes if mode not in get_args(ServedMode)]
            if unknown:
                raise ValueError(f"row '{name}': unknown inference modes {unknown} in 'modes' (known: {', '.join(get_args(ServedMode))})")
            plain = {key: value for key, value in row.items() if key != "modes"}
            for i, mode in enumerate(modes):
                expanded.append({**plain, "mode": mode, "name": name if i == 0 else f"{name} ({mode})"})
        return expanded

    @model_validator(mode="after")
    def _unique_row_names(self) -> "BenchmarkConfig":
        """Row files live under the row's slug: two names with one slug would overwrite each other."""
        seen: dict[str, str] = {}
        for row in self.rows:
            if slug(row.name) in seen:
                raise ValueError(f"rows '{seen[slug(row.name)]}' and '{row.name}' share one results folder name ({slug(row.name)!r}): rename one")
            seen[slug(row.name)] = row.name
        return self

    @model_validator(mode="after")
    def _paired_rows_exist(self) -> "BenchmarkConfig":
        names = [row.name for row in self.rows]
        unknown = [name for name in self.paired_with if name not in names]
        if unknown:
            raise ValueError(f"paired_with: no row named {', '.join(map(repr, unknown))} (rows: {', '.join(names)})")
        return self

    @model_validator(mode="after")
    def _row_seeds_are_benchmark_seeds(self) -> "BenchmarkConfig":
        for row in self.rows:
            extra = [seed for seed in row.seeds or [] if seed not in self.seeds]
            if extra:
                raise ValueError(f"row '{row.name}': seeds {extra} are not among the benchmark's seeds {self.seeds}")
        return self

    def row_seeds(self, row: RowConfig) -> list[int]:
        """The seeds a row runs, in the benchmark's order."""
        return [seed for seed in self.seeds if row.seeds is None or seed in row.seeds]

    def runs_fewer_seeds(self, row: RowConfig) -> bool:
        """Whether a costly row leaves out some of the benchmark's seeds (marked † in the table)."""
        return len(self.row_seeds(row)) < len(self.seeds)

    @model_validator(mode="after")
    def _one_dataset(self) -> "BenchmarkConfig":
        if self.data is not None and "source" in self.model_fields_set:
            raise ValueError("give 'source' (MovieLens, prepared by the benchmark) or 'data' (a prepared folder), not both")
        return self

    @property
    def tabled_metrics(self) -> tuple[str, ...]:
        """The table's columns, metric by metric: ("ndcg@3", "ndcg@5", "mrr@3", "mrr@5") by default."""
        return tuple(f"{metric}@{k}" for metric in TABLED_METRICS for k in self.metrics_at)

    @property
    def paired_metrics(self) -> tuple[str, ...]:
        """The metrics kept per test request and compared row against row: each tabled metric at
        the first cutoff ("ndcg@3", "mrr@3")."""
        return tuple(f"{metric}@{self.metrics_at[0]}" for metric in TABLED_METRICS)

    @classmethod
    def load(cls, path: str | Path) -> "BenchmarkConfig":
        return load_yaml_model(cls, path, "benchmark config")


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
