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
The config file's model is in `benchmarks/config.py`, the tables made from the row files in
`benchmarks/report.py`.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
from tqdm.auto import tqdm

from llm4pr.benchmarks.config import BenchmarkConfig, Protocol, RowConfig, slug
from llm4pr.benchmarks.report import paired_comparisons, plot_results, restricted_to, results_markdown, summarise_row
from llm4pr.provenance import git_commit, provenance
from llm4pr.data.config_files import deep_merge
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json, write_jsonl
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.rerank import RerankUnsupported, as_rerank_call, rerank_text_feature
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.io import atomic_write_text
from llm4pr.rankers.base import FittableRanker, ServedMode

if TYPE_CHECKING:
    from llm4pr.inference.ranker import LLM4PRRanker

DATA_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "schema.json")
COLD_FILE = "cold.json"  # written by the MovieLens converter's cold-start protocol


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
        prepared from `source` into the output folder; with `collaborative`, a copy of either with
        the collaborative field added."""
        if self.config.data is not None:
            if not all((self.config.data / name).is_file() for name in DATA_FILES):
                raise DataError(f"benchmark data {self.config.data}: not a prepared data folder (expected {', '.join(DATA_FILES)})")
            source = self.config.data
        else:
            source = self.out / "data" / ("source" if self.config.collaborative else "base")
            if not (source / "prepare.json").is_file():
                from llm4pr.data.movielens import prepare_movielens

                prepare_movielens(
                    self.config.source, source, prior_weight=self.config.prior_weight,
                    cold_items=self.config.cold_items, cold_seed=self.config.cold_seed,
                )
        collaborative = self.config.collaborative
        if collaborative is None:
            return source
        folder = self.out / "data" / "base"
        if not (folder / "collaborative.json").is_file():
            from llm4pr.baselines.collaborative_field import add_collaborative_field

            add_collaborative_field(source, folder, folds=collaborative.folds, seed=0, vectors=collaborative.vectors)
        return folder

    def variant(self, protocol: Protocol, signals: bool, dropped: tuple[str, ...] = ()) -> Path:
        """The prepared folder for a protocol, with or without the ranking-stage signals, without
        the `dropped` features."""
        base = self.base_data()
        subsampled = self.config.max_train_requests is not None or self.config.max_test_requests is not None
        if protocol == "input" and not signals and not dropped and not subsampled:
            return base
        name = f"{protocol}-{'signals' if signals else 'plain'}" + "".join(f"-without-{slug(feature)}" for feature in sorted(dropped))
        folder = self.out / "data" / name
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
        if dropped:
            schema, splits = _without_features(schema, splits, set(dropped))
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

        data_dir = self.variant(protocol, row.signals, tuple(row.drop_features))
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
        run = config.digest(row.signals, *sorted(row.drop_features))  # no dropped features: the digest of before
        return TrainableLLM4PR(config, data_dir, self.out / "runs" / protocol / run, progress=self.progress)

    def _training_config(self, row: RowConfig, seed: int, protocol: Protocol) -> Any:
        """The row's training config: its file, then the protocol's overrides, then the row's own."""
        from llm4pr.training.config import TrainConfig

        raw = yaml.safe_load(Path(row.llm4pr).read_text(encoding="utf-8")) or {}  # type: ignore[arg-type]
        raw = deep_merge(raw, self.config.protocol_overrides.get(protocol, {}))
        return TrainConfig.model_validate(deep_merge(raw, {**row.overrides, "seed": seed}))

    # -- results -----------------------------------------------------------------------------------

    def collect(self) -> dict[str, Any]:
        rows, paired = self._tables(self.config.tabled_metrics, lambda seeds: seeds)
        pending = [
            {"protocol": p, "row": row.name, "seed": seed} for p, row, seed in self.jobs() if not self._result_path(p, row, seed).is_file()
        ]
        results = {"config": self.config.model_dump(mode="json"), "complete": not pending, "pending": pending, "rows": rows, "paired": paired}
        subsets = {name: self._subset(description, ids) for name, (description, ids) in self.subsets().items()}
        return {**results, "subsets": subsets} if subsets else results

    def _tables(
        self, metrics: tuple[str, ...], select: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Every row's summary over its finished seeds (as `select` gives them: all, or their part
        on a subset) and, per protocol, the paired comparisons."""
        rows, paired = [], {}
        for protocol in self.config.protocols:
            summarised = []
            for row in self.config.rows:
                paths = [self._result_path(protocol, row, seed) for seed in self.config.row_seeds(row)]
                seeds = select([_read(path) for path in paths if path.is_file()])
                if seeds:
                    summarised.append((summarise_row(protocol, row, seeds, metrics, self.config.runs_fewer_seeds(row)), seeds))
            rows += [summary for summary, _ in summarised]
            comparisons = paired_comparisons(summarised, self.config.paired_metrics, self.config.paired_with)
            if comparisons:
                paired[protocol] = comparisons
        return rows, paired

    def subsets(self) -> dict[str, tuple[str, set[str]]]:
        """Named subsets of the test requests reported besides the whole split: with a `cold.json`
        in the data (the cold-start protocol), the requests with at least one cold candidate."""
        folder = self.config.data or self.out / "data" / ("source" if self.config.collaborative else "base")
        path = folder / COLD_FILE
        if not path.is_file():
            return {}
        cold = _read(path)["cold_candidates"].get("test", {})
        return {"cold": ("test requests with at least one cold candidate (an item no training input holds)", set(cold))}

    def _subset(self, description: str, ids: set[str]) -> dict[str, Any]:
        """Every row on a subset of the test requests: per-seed means from the kept per-request
        values, mean ± std over seeds, and the paired comparisons restricted to the subset."""
        test = [request.request_id for request in read_requests(self.base_data() / "test.jsonl")][: self.config.max_test_requests]
        full = hashlib.sha256("\n".join(test).encode("utf-8")).hexdigest()[:16]
        positions = [i for i, request_id in enumerate(test) if request_id in ids]
        digest = hashlib.sha256("\n".join(test[i] for i in positions).encode("utf-8")).hexdigest()[:16]
        metrics = self.config.paired_metrics

        def on_subset(seeds: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [
                restricted for seed in seeds
                if seed.get("per_request", {}).get("requests") == full
                and (restricted := restricted_to(seed, positions, digest, metrics)) is not None
            ]

        rows, paired = self._tables(metrics, on_subset)
        return {"description": description, "requests": len(positions), "rows": rows, "paired": paired}


def _without_features(
    schema: FeatureSchema, splits: dict[str, list[PostRankRequest]], dropped: set[str]
) -> tuple[FeatureSchema, dict[str, list[PostRankRequest]]]:
    """The schema and requests without the `dropped` features (user and item alike)."""
    unknown = dropped - {spec.name for spec in schema.features}
    if unknown:
        raise DataError(f"drop_features: the data has no feature {', '.join(sorted(unknown))} (features: {', '.join(s.name for s in schema.features)})")
    kept = schema.model_copy(update={"features": tuple(spec for spec in schema.features if spec.name not in dropped)})

    def strip(entity: Any) -> Any:
        return entity.model_copy(update={"features": {k: v for k, v in entity.features.items() if k not in dropped}})

    def request_without(request: PostRankRequest) -> PostRankRequest:
        return request.model_copy(update={
            "user": strip(request.user), "history": [strip(i) for i in request.history], "candidates": [strip(i) for i in request.candidates],
        })

    return kept, {split: [request_without(request) for request in requests] for split, requests in splits.items()}


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


def _per_request_values(requests: list[PostRankRequest], values: dict[str, dict[str, float | None]], metrics: tuple[str, ...]) -> dict[str, Any]:
    """Each paired metric per test request, in the test file's order, under a digest of the request
    ids: what another row's values are paired with."""
    ids = [request.request_id for request in requests]
    digest = hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:16]
    return {"requests": digest, **{m: [None if (v := values[i][m]) is None else round(v, 4) for i in ids] for m in metrics}}


def _as_rerank_calls(requests: list[PostRankRequest], schema: FeatureSchema, row: str) -> list[PostRankRequest]:
    try:
        feature = rerank_text_feature(schema)
    except RerankUnsupported as refusal:
        raise DataError(f"row '{row}': rerank_calls: this data cannot be sent as rerank calls: {refusal}") from None
    return [as_rerank_call(request, feature) for request in requests]


def benchmark_command(config_path: Path, out: Path, rows: list[str] | None = None, seeds: list[int] | None = None) -> dict[str, Any]:
    results = Benchmark(BenchmarkConfig.load(config_path), out).run(rows, seeds)
    print(results_markdown(results))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}, {out / 'results.png'}")
    return results
