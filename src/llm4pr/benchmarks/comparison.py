"""`llm4pr benchmark`: the paper's comparison, re-run here, every row over several seeds.

Every row (a baseline, LLM4PR, an ablation, PTPR, the zero-shot LLM) is trained on the same
training split and scored on the same test split, under each candidate-order protocol:
`input` (the data's order; MovieLens: time, as in the paper) and `ranking_stage` (candidates
sorted by the ranking-stage model's score, as a post-ranker receives them in production). Rows
that consume the ranking-stage signals (its score and embeddings as features) say so.

Every row runs through one path: build the row's ranker (a baseline by name, or LLM4PR whose
`fit` is the trainer), fit it on the training split, rank the test split in the row's mode. The
data is MovieLens, prepared by the benchmark (`source`), or any prepared folder (`data`). The
table holds NDCG@k and MRR@k at the config's `metrics_at` cutoffs: 3 and 5 by default (the paper's
MovieLens tables), 10 for text re-ranking (as BEIR reports it).

Each (protocol, row, seed) result is written to its own file as soon as it is done, so an
interrupted benchmark resumes without redoing finished rows; LLM training runs resume too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from tqdm.auto import tqdm

from llm4pr.provenance import git_commit, provenance
from llm4pr.data.config_files import deep_merge, load_yaml_model
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json, write_jsonl
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.rerank import RerankUnsupported, as_rerank_call, rerank_text_feature
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.evaluation.metrics import Cutoffs
from llm4pr.evaluation.significance import CONFIDENCE, RESAMPLES, paired_bootstrap
from llm4pr.io import atomic_write_text
from llm4pr.rankers.base import FittableRanker, ServedMode

if TYPE_CHECKING:
    from llm4pr.inference.ranker import LLM4PRRanker

Protocol = Literal["input", "ranking_stage"]
DATA_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "schema.json")
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


class BenchmarkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(default="recbole", description="MovieLens source for `llm4pr data prepare movielens` (not with `data`)")
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
            if row.seeds is not None and set(row.seeds) == set(self.seeds):
                row.seeds = None  # every seed: not a row with fewer
        return self

    def row_seeds(self, row: RowConfig) -> list[int]:
        """The seeds a row runs, in the benchmark's order."""
        return [seed for seed in self.seeds if row.seeds is None or seed in row.seeds]

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


class Benchmark:
    def __init__(self, config: BenchmarkConfig, out: str | Path, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress
        self._stage: Any = None  # the ranking-stage model, fitted once when a variant needs it
        self._commit = git_commit()  # the code this process runs, whatever the checkout becomes meanwhile

    # -- data --------------------------------------------------------------------------------------

    def base_data(self) -> Path:
        """The prepared data every variant derives from: the config's `data` folder, or MovieLens
        prepared from `source` into the output folder."""
        if self.config.data is not None:
            if not all((self.config.data / name).is_file() for name in DATA_FILES):
                raise DataError(f"benchmark data {self.config.data}: not a prepared data folder (expected {', '.join(DATA_FILES)})")
            return self.config.data
        folder = self.out / "data" / "base"
        if not (folder / "prepare.json").is_file():
            from llm4pr.data.movielens import prepare_movielens

            prepare_movielens(self.config.source, folder)
        return folder

    def variant(self, protocol: Protocol, signals: bool) -> Path:
        """The prepared folder for a protocol, with or without the ranking-stage signals."""
        base = self.base_data()
        if protocol == "input" and not signals and self.config.max_train_requests is None and self.config.max_test_requests is None:
            return base
        folder = self.out / "data" / f"{protocol}-{'signals' if signals else 'plain'}"
        if (folder / "schema.json").is_file():
            return folder
        schema = FeatureSchema.load(base / "schema.json")
        splits = {split: read_requests(base / f"{split}.jsonl", schema) for split in ("train", "valid", "test")}
        splits["train"] = _subsample(splits["train"], self.config.max_train_requests)
        splits["test"] = splits["test"][: self.config.max_test_requests]
        if protocol == "ranking_stage" or signals:
            stage = self._ranking_stage(splits, schema)
            splits = {
                split: stage.prepare(requests, training=split == "train", order=protocol, signals=signals)
                for split, requests in splits.items()
            }
            schema = stage.schema if signals else schema
        for split, requests in splits.items():
            write_jsonl(folder / f"{split}.jsonl", requests)
        schema.save(folder / "schema.json")  # written last: marks a complete folder
        return folder

    def _ranking_stage(self, splits: dict[str, list[PostRankRequest]], schema: FeatureSchema) -> Any:
        from llm4pr.baselines import RankingStage

        if self._stage is None:
            self._stage = RankingStage.fit(splits["train"], schema, splits["valid"], folds=self.config.ranking_stage_folds, seed=0)
        return self._stage

    # -- rows --------------------------------------------------------------------------------------

    def jobs(self) -> list[tuple[Protocol, RowConfig, int]]:
        """Every (protocol, row, seed), cheapest first: all baseline rows, then the LLM rows seed by
        seed (soft-prompt rows before the all-text ones, whose prompts are ~10x longer), so that an
        interrupted benchmark has whole baseline rows and one seed of every LLM row before it
        spends time on further seeds."""
        baselines = [
            (p, row, seed) for p in self.config.protocols for row in self.config.rows if row.baseline for seed in self.config.row_seeds(row)
        ]
        llm_rows = [row for row in self.config.rows if row.llm4pr]
        text_prompts = {row.name: self._training_config(row, 0, "input").model.prompt_style == "text" for row in llm_rows}
        groups = [[row for row in llm_rows if text_prompts[row.name] == text] for text in (False, True)]
        llm = [
            (p, row, seed)
            for seed in self.config.seeds
            for group in groups
            for p in self.config.protocols
            for row in group
            if seed in self.config.row_seeds(row)
        ]
        return baselines + llm

    def selected_jobs(self, rows: list[str] | None = None, seeds: list[int] | None = None) -> list[tuple[Protocol, RowConfig, int]]:
        """The jobs restricted to some rows and seeds (None: all), in `jobs()` order: lets a long
        benchmark be run in parts (one machine per row, the longest rows first in a session)
        while results.json still reports the whole config, with what is pending."""
        names = [row.name for row in self.config.rows]
        unknown = [name for name in rows or [] if name not in names]
        if unknown:
            raise DataError(f"benchmark --row: no row named {', '.join(map(repr, unknown))} in the config (rows: {', '.join(map(repr, names))})")
        missing = [seed for seed in seeds or [] if seed not in self.config.seeds]
        if missing:
            raise DataError(f"benchmark --seed: {missing} not among the config's seeds {self.config.seeds}")
        return [(p, row, seed) for p, row, seed in self.jobs() if (rows is None or row.name in rows) and (seeds is None or seed in seeds)]

    def run(self, rows: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
        bar = tqdm(self.selected_jobs(rows, seeds), desc="benchmark", unit="run", disable=not self.progress)
        results = self.write_results()
        for protocol, row, seed in bar:
            bar.set_postfix_str(f"{protocol} / {row.name} / seed {seed}")
            path = self._result_path(protocol, row, seed)
            if not path.is_file():
                write_json(path, self._reused(protocol, row, seed) or self._run_row(protocol, row, seed))
                results = self.write_results()  # a partial table is readable while the rest runs
        return results

    def _reused(self, protocol: Protocol, row: RowConfig, seed: int) -> dict[str, Any] | None:
        """An LLM row that trains nothing (the zero-shot LLM) gives the same ranking for every seed:
        later seeds repeat the first seed's result instead of re-scoring the test split."""
        first = self.config.row_seeds(row)[0]
        if row.llm4pr is None or seed == first or self._training_config(row, seed, protocol).trains:
            return None
        source = self._result_path(protocol, row, first)
        return {**_read(source), "seed": seed, "same_as_seed": first} if source.is_file() else None

    def write_results(self) -> dict[str, Any]:
        results = {**self.collect(), "provenance": provenance(self._commit)}  # who wrote this table, on what code and machine
        write_json(self.out / "results.json", results)
        atomic_write_text(self.out / "results.md", results_markdown(results))
        if results["rows"]:
            plot_results(results, self.out / "results.png")
        return results

    def _result_path(self, protocol: Protocol, row: RowConfig, seed: int) -> Path:
        return self.out / "rows" / protocol / slug(row.name) / f"seed{seed}.json"

    def _run_row(self, protocol: Protocol, row: RowConfig, seed: int) -> dict[str, Any]:
        from llm4pr.benchmarks.llm_row import TrainableLLM4PR

        data_dir = self.variant(protocol, row.signals)
        schema = FeatureSchema.load(data_dir / "schema.json")
        train = read_requests(data_dir / "train.jsonl", schema)
        valid = read_requests(data_dir / "valid.jsonl", schema)
        test = read_requests(data_dir / "test.jsonl", schema)
        if row.rerank_calls:
            test = _as_rerank_calls(test, schema, row.name)
        started = time.perf_counter()
        ranker = self._ranker(protocol, row, seed, data_dir).fit(train, schema, valid, seed)
        train_s = time.perf_counter() - started
        run = ranker.rank(test, mode=row.mode)
        extra: dict[str, Any] = {}
        if isinstance(ranker, TrainableLLM4PR) and ranker.llm is not None:
            # the run's own record: rows sharing one run (and resumed runs) show what training cost
            train_s = ranker.train_seconds if ranker.train_seconds is not None else train_s
            extra = _llm_costs(ranker.llm, test[: self.config.latency_requests], row.mode)
        report = evaluate_run(test, run, ks=self.config.metrics_at, per_request=True)
        return {
            "row": row.name,
            "protocol": protocol,
            "seed": seed,
            "signals": row.signals,
            **({"rerank_calls": True} if row.rerank_calls else {}),
            "metrics": report["metrics"],
            "per_request": _per_request_values(test, report["per_request"], self.config.paired_metrics),
            "n_test": len(test),
            "n_train": len(train),
            "train_s": round(train_s, 1),
            "fallbacks": sum(r.fallback for r in run),
            **extra,
            # what this row cost this time: fitting (or reusing a shared run), ranking, latency probe
            "wall_s": round(time.perf_counter() - started, 1),
            "provenance": provenance(self._commit),
        }

    def _ranker(self, protocol: Protocol, row: RowConfig, seed: int, data_dir: Path) -> FittableRanker:
        """The row's unfitted ranker: a baseline by name, or LLM4PR with the row's training config.
        Rows that train the same way (e.g. one model ranked in two modes) share one run folder."""
        if row.baseline is not None:
            from llm4pr.baselines import build_baseline

            return build_baseline(row.baseline, **row.params)
        from llm4pr.benchmarks.llm_row import TrainableLLM4PR

        config = self._training_config(row, seed, protocol)
        return TrainableLLM4PR(config, data_dir, self.out / "runs" / protocol / config.digest(row.signals), progress=self.progress)

    def _training_config(self, row: RowConfig, seed: int, protocol: Protocol) -> Any:
        """The row's training config: its file, then the protocol's overrides, then the row's own."""
        from llm4pr.training.config import TrainConfig

        raw = yaml.safe_load(Path(row.llm4pr).read_text(encoding="utf-8")) or {}  # type: ignore[arg-type]
        raw = deep_merge(raw, self.config.protocol_overrides.get(protocol, {}))
        return TrainConfig.model_validate(deep_merge(raw, {**row.overrides, "seed": seed}))

    # -- results -----------------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        rows, paired = [], {}
        for protocol in self.config.protocols:
            summarised = []
            for row in self.config.rows:
                paths = [self._result_path(protocol, row, seed) for seed in self.config.row_seeds(row)]
                seeds = [_read(path) for path in paths if path.is_file()]
                if seeds:
                    summarised.append((_summarise(protocol, row, seeds, self.config.tabled_metrics), seeds))
            rows += [summary for summary, _ in summarised]
            comparisons = _paired_comparisons(summarised, self.config.paired_metrics, self.config.paired_with)
            if comparisons:
                paired[protocol] = comparisons
        pending = [
            {"protocol": p, "row": row.name, "seed": seed} for p, row, seed in self.jobs() if not self._result_path(p, row, seed).is_file()
        ]
        return {"config": self.config.model_dump(mode="json"), "complete": not pending, "pending": pending, "rows": rows, "paired": paired}


def _subsample(requests: list[PostRankRequest], limit: int | None) -> list[PostRankRequest]:
    from llm4pr.training.trainer import subsample

    return subsample(requests, limit, seed=0)


def _llm_costs(ranker: LLM4PRRanker, requests: list[PostRankRequest], mode: ServedMode) -> dict[str, Any]:
    """What an LLM row's prompts cost: mean input tokens and the median latency per request."""
    from llm4pr.benchmarks.latency import per_request_latency

    latencies = per_request_latency(lambda batch: ranker.rank(batch, mode=mode), requests)
    return {
        "mean_input_tokens": round(statistics.fmean(ranker.prompt_length(r) for r in requests), 2),
        "latency_p50_ms": round(statistics.median(latencies), 1),
    }


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def _summarise(protocol: str, row: RowConfig, seeds: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "row": row.name,
        "protocol": protocol,
        "signals": row.signals,
        "kind": "baseline" if row.baseline else "llm",
        "seeds": [s["seed"] for s in seeds],
        "runs": sum("same_as_seed" not in s for s in seeds),  # < len(seeds) for rows that train nothing
        "fewer_seeds": row.seeds is not None,  # a costly row run on some of the benchmark's seeds
        "per_seed": {str(s["seed"]): s["metrics"] for s in seeds},
        "mean": {},
        "std": {},
        "train_s_mean": round(statistics.fmean(s["train_s"] for s in seeds), 1),
        "wall_s_total": round(sum(s.get("wall_s", 0.0) for s in seeds), 1),
        "wall_s_unrecorded": sum("wall_s" not in s for s in seeds),  # row files written before wall_s existed
    }
    for metric in metrics:
        values = [s["metrics"][metric] for s in seeds if s["metrics"].get(metric) is not None]
        summary["mean"][metric] = round(statistics.fmean(values), 4) if values else None
        summary["std"][metric] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    for key in ("mean_input_tokens", "latency_p50_ms"):
        values = [s[key] for s in seeds if key in s]
        if values:
            summary[key] = round(statistics.fmean(values), 2)
    return summary


def _per_request_values(requests: list[PostRankRequest], values: dict[str, dict[str, float | None]], metrics: tuple[str, ...]) -> dict[str, Any]:
    """Each paired metric per test request, in the test file's order, under a digest of the request
    ids: what another row's values are paired with."""
    ids = [request.request_id for request in requests]
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]
    return {"requests": digest, **{m: [None if (v := values[i][m]) is None else round(v, 4) for i in ids] for m in metrics}}


def _seed_mean_per_request(seeds: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """A row's per-request values averaged over its seeds; None when a seed's file has none (written
    before they were kept) or the seeds saw different requests."""
    kept = [seed.get("per_request") for seed in seeds]
    if any(k is None or any(m not in k for m in metrics) for k in kept) or len({k["requests"] for k in kept}) != 1:  # type: ignore[index]
        return None
    means: dict[str, Any] = {"requests": kept[0]["requests"]}  # type: ignore[index]
    for metric in metrics:
        columns = zip(*(k[metric] for k in kept))  # type: ignore[index]
        means[metric] = [None if None in values else statistics.fmean(values) for values in columns]
    return means


def _paired_comparisons(
    summarised: list[tuple[dict[str, Any], list[dict[str, Any]]]], metrics: tuple[str, ...], named: list[str]
) -> list[dict[str, Any]]:
    """Every row with per-request values paired with the best baseline that has them (by the first
    metric's mean), then with each `named` row that has them."""
    scored = [(summary, values) for summary, seeds in summarised if (values := _seed_mean_per_request(seeds, metrics))]
    baselines = [(summary, values) for summary, values in scored if summary["kind"] == "baseline"]
    references = [max(baselines, key=lambda pair: _or_lowest(pair[0]["mean"][metrics[0]]))] if baselines else []
    for name in named:
        match = next((pair for pair in scored if pair[0]["row"] == name), None)
        if match is not None and all(match[0] is not reference[0] for reference in references):
            references.append(match)
    return [
        _paired_with(reference, scored, metrics, best_baseline=bool(baselines) and index == 0)
        for index, reference in enumerate(references)
    ]


def _paired_with(
    reference: tuple[dict[str, Any], dict[str, Any]], scored: list[tuple[dict[str, Any], dict[str, Any]]], metrics: tuple[str, ...], best_baseline: bool
) -> dict[str, Any]:
    """Each other row minus `reference`, request by request: the mean difference and its interval."""
    summary_of_reference, reference_values = reference
    compared = []
    for summary, values in scored:
        if summary is summary_of_reference or values["requests"] != reference_values["requests"]:
            continue
        compared.append({"row": summary["row"], **{m: paired_bootstrap(values[m], reference_values[m]).as_dict() for m in metrics}})
    return {
        "reference": summary_of_reference["row"],
        "best_baseline": best_baseline,
        "metrics": list(metrics),
        "resamples": RESAMPLES,
        "confidence": CONFIDENCE,
        "rows": compared,
    }


def _or_lowest(value: float | None) -> float:
    return -math.inf if value is None else value


def _as_rerank_calls(requests: list[PostRankRequest], schema: FeatureSchema, row: str) -> list[PostRankRequest]:
    try:
        feature = rerank_text_feature(schema)
    except RerankUnsupported as refusal:
        raise DataError(f"row '{row}': rerank_calls: this data cannot be sent as rerank calls: {refusal}") from None
    return [as_rerank_call(request, feature) for request in requests]


def results_markdown(results: dict[str, Any]) -> str:
    metrics = _tabled(results["rows"])
    lines = []
    if results.get("pending"):
        runs = sum(len(r["seeds"]) for r in results["rows"])
        lines += [f"**Incomplete:** {runs} runs done, {len(results['pending'])} pending (listed in results.json).", ""]
    for protocol in dict.fromkeys(r["protocol"] for r in results["rows"]):
        lines += [f"### Candidate order: {protocol}", ""]
        lines.append("| row | signals | " + " | ".join(metrics) + " | input tokens | p50 ms | train s | seeds |")
        lines.append("|---|---|" + "---|" * len(metrics) + "---|---|---|---|")
        for row in (r for r in results["rows"] if r["protocol"] == protocol):
            cells = [
                f"{row['mean'][m]:.4f} ± {row['std'][m]:.4f}" if row["mean"][m] is not None else "n/a" for m in metrics
            ]
            tokens = f"{row['mean_input_tokens']:.0f}" if "mean_input_tokens" in row else ""
            latency = f"{row['latency_p50_ms']:.0f}" if "latency_p50_ms" in row else ""
            lines.append(
                f"| {row['row']} | {'yes' if row['signals'] else 'no'} | " + " | ".join(cells)
                + f" | {tokens} | {latency} | {row['train_s_mean']:.0f} | {_seeds_cell(row)} |"
            )
        lines.append("")
        for comparison in results.get("paired", {}).get(protocol, []):
            lines += _paired_table(comparison)
    lines += [
        "Mean ± sample standard deviation (n - 1) over the seeds. A deterministic row (the heuristics,"
        " LightGBM's LambdaMART without bagging) gives the same model for every seed: its std is 0.",
        "",
    ]
    if any(_one_run_for_all_seeds(row) for row in results["rows"]):
        lines += ["\\* trains nothing, so one run serves every seed (its ranking does not depend on the seed).", ""]
    if any(row.get("fewer_seeds") for row in results["rows"]):
        seeds = results["config"]["seeds"]
        lines += [f"† runs fewer seeds than the benchmark's {len(seeds)} (the row's `seeds` in the config): a costly row.", ""]
    lines += [_cost_line(results["rows"]), ""]
    return "\n".join(lines)


def _paired_table(paired: dict[str, Any]) -> list[str]:
    """Rows against one reference row, request by request (nothing when no other row kept its values)."""
    if not paired["rows"]:
        return []
    metrics, n = paired["metrics"], paired["rows"][0][paired["metrics"][0]]["n"]
    reference = f"the best baseline, {paired['reference']}" if paired["best_baseline"] else paired["reference"]
    lines = [
        f"Paired with {reference}, request by request (each row's seeds averaged per"
        f" request): the mean difference and its {paired['confidence']:.0%} bootstrap interval over the {n} test"
        f" requests ({paired['resamples']} resamples). Rows whose files predate per-request values are not listed.",
        "",
        "| row | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for row in paired["rows"]:
        cells = [f"{row[m]['mean']:+.4f} [{row[m]['low']:+.4f}, {row[m]['high']:+.4f}]" for m in metrics]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _tabled(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns, as the summaries hold them (the config's `metrics_at`, metric by metric)."""
    return list(rows[0]["mean"]) if rows else []


def _cost_line(rows: list[dict[str, Any]]) -> str:
    """The benchmark's total cost, as its row files recorded it."""
    training = sum(row["train_s_mean"] * row.get("runs", len(row["seeds"])) for row in rows) / 3600
    wall = sum(row.get("wall_s_total", 0.0) for row in rows) / 3600
    unrecorded = sum(row.get("wall_s_unrecorded", len(row["seeds"])) for row in rows)
    runs = sum(len(row["seeds"]) for row in rows)
    return (
        f"Cost: {training:.1f} h of training summed over the runs (a row that shares another row's training run, as"
        f" `first_token` does, counts it again); {wall:.1f} h of wall time for the {runs - unrecorded} of {runs} runs"
        " that record it (fit, rank, latency probe). Each row file's provenance names its machine."
    )


def _one_run_for_all_seeds(row: dict[str, Any]) -> bool:
    return row.get("runs", len(row["seeds"])) < len(row["seeds"])


def _seeds_cell(row: dict[str, Any]) -> str:
    return f"{len(row['seeds'])}{'*' if _one_run_for_all_seeds(row) else ''}{'†' if row.get('fewer_seeds') else ''}"


def plot_results(results: dict[str, Any], path: Path) -> None:
    """The first tabled metric (NDCG at the first cutoff) per row (mean, with the spread over seeds),
    one panel per protocol, one shared axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(dict.fromkeys(r["protocol"] for r in results["rows"]))
    rows_per_panel = max(sum(r["protocol"] == p for r in results["rows"]) for p in protocols)
    fig, axes = plt.subplots(1, len(protocols), figsize=(7 * len(protocols), 0.45 * max(rows_per_panel, 4) + 1.8), squeeze=False, sharex=True)
    metric = _tabled(results["rows"])[0]
    scored = [r for r in results["rows"] if r["mean"][metric] is not None]
    means = [r["mean"][metric] for r in scored]
    for ax, protocol in zip(axes[0], protocols, strict=True):
        rows = [r for r in scored if r["protocol"] == protocol]
        ax.barh(
            [r["row"] + (" *" if r["signals"] else "") for r in rows],
            [r["mean"][metric] for r in rows],
            xerr=[r["std"][metric] for r in rows],
            color=["tab:orange" if r["kind"] == "llm" else "tab:blue" for r in rows],
        )
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric.upper()} on the test split (mean over seeds)")
        ax.set_title(f"candidate order: {protocol}")
    if means:
        axes[0][0].set_xlim(max(min(means) - 0.02, 0.0), min(max(means) + 0.02, 1.0))
    fig.suptitle("* uses the ranking-stage signals; orange: LLM rows; bars: spread over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def benchmark_command(config_path: Path, out: Path, rows: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    results = Benchmark(BenchmarkConfig.load(config_path), out).run(rows, seeds)
    print(results_markdown(results))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return results
