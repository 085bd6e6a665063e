"""`llm4pr demo`: the whole pipeline on the offline defaults, in minutes on a laptop CPU.

Prepare MovieLens-100K (from the recbole wheel), score the ranking-stage order on the test split,
train the quick config (feature adaptation, then learning to post-rank), score the model on the
test split in both inference modes, and show three requests with the model's explanation of each.
Which three is a stated rule, not a pick that flatters: one drawn at random (seeded), the one the
model improves most and the one it harms most (NDCG@3 of `first_token` against the given order),
so a newcomer sees a typical case and both extremes. Every step reuses what an earlier run left in
the output folder, so an interrupted demo resumes.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.provenance import git_commit, provenance
from llm4pr.rankers.base import SERVED_MODES, InitialOrderRanker
from llm4pr.rankers.explanation import explain, render_text

DEFAULT_CONFIG = Path("configs/ml100k-quick.yaml")


def run_demo(out: Path, config_path: Path | None = None) -> dict[str, Any]:
    from llm4pr.data.movielens import prepare_movielens
    from llm4pr.inference.config import InferenceConfig
    from llm4pr.inference.ranker import LLM4PRRanker
    from llm4pr.model.run_folder import STAGE_DIRS
    from llm4pr.training.config import TrainConfig
    from llm4pr.training.trainer import Trainer, training_seconds

    config_path = config_path or DEFAULT_CONFIG
    if not config_path.is_file():
        raise DataError(f"{config_path}: training config not found (run the demo from the repository root, or pass --config)")
    config = TrainConfig.load(config_path)
    # One run folder per config: a rerun with the same config resumes (or reuses) its run, a
    # changed config (new defaults after an update) trains afresh beside the old one.
    data_dir, run_dir = out / "data", out / f"run-{config.digest()}"
    started = time.perf_counter()
    commit = git_commit()
    if not (data_dir / "prepare.json").is_file():
        print("[1/4] preparing MovieLens-100K from the recbole wheel ...")
        prepare_movielens("recbole", data_dir)
    else:
        print(f"[1/4] reusing prepared data in {data_dir}")
    test = read_requests(data_dir / "test.jsonl")

    print("[2/4] training (feature adaptation, then learning to post-rank) ...")
    Trainer(config, data_dir, run_dir).run()

    print(f"[3/4] post-ranking the {len(test)} test requests ...")
    ranker = LLM4PRRanker.from_pretrained(run_dir, InferenceConfig(batch_size=16), progress=True)
    runs: dict[str, list[RankResult]] = {"ranking-stage order": InitialOrderRanker().rank(test)}
    for mode in SERVED_MODES:
        runs[f"llm4pr ({mode})"] = ranker.rank(test, mode=mode)
    reports = {name: evaluate_run(test, run, per_request=name != "llm4pr (generate)") for name, run in runs.items()}
    shown = shown_requests(test, reports["ranking-stage order"], reports["llm4pr (first_token)"])
    for report in reports.values():
        report.pop("per_request", None)  # what chose them; the report file keeps the split's metrics
    summary = {"config": str(config_path), "run": str(run_dir), "test_requests": len(test), "reports": reports, "shown": shown,
               "training_s": training_seconds(run_dir), "wall_time_s": round(time.perf_counter() - started, 1), "provenance": provenance(commit)}
    write_json(out / "demo_report.json", summary)

    print("[4/4] results on the ML-100K test split")
    print(_comparison_table(reports))
    by_id = {request.request_id: request for request in test}
    for why, entry in shown.items():
        request = by_id[entry["request_id"]]
        (explained,) = explain(ranker, [request], mode="first_token")
        print(f"\n{why}: NDCG@3 {entry['given_ndcg@3']:.4f} in the given order, {entry['model_ndcg@3']:.4f} post-ranked")
        print(_show_request(request, explained))
        print(render_text(explained))
    print(f"\nreport: {out / 'demo_report.json'}; model: {run_dir / STAGE_DIRS['post_rank']}")
    print(f"see it in the browser: llm4pr serve --checkpoint {run_dir} --examples {data_dir / 'test.jsonl'}, then open http://127.0.0.1:8000/")
    return reports


def shown_requests(test: list[PostRankRequest], given: dict[str, Any], model: dict[str, Any], seed: int = 0) -> dict[str, dict[str, Any]]:
    """The demo's three requests, by rule: a seeded random one, the largest NDCG@3 gain of the model
    over the given order and the largest loss (ties: the first in the test file)."""
    def ndcg(report: dict[str, Any], request_id: str) -> float:
        return report["per_request"][request_id]["ndcg@3"] or 0.0

    ids = [request.request_id for request in test]
    gains = [ndcg(model, i) - ndcg(given, i) for i in ids]
    chosen = {
        f"a random request (seed {seed})": random.Random(seed).choice(ids),
        "the largest gain": ids[max(range(len(ids)), key=lambda k: (gains[k], -k))],
        "the largest loss": ids[min(range(len(ids)), key=lambda k: (gains[k], k))],
    }
    return {why: {"request_id": i, "given_ndcg@3": ndcg(given, i), "model_ndcg@3": ndcg(model, i)} for why, i in chosen.items()}


def _comparison_table(reports: dict[str, dict[str, Any]]) -> str:
    metrics = list(next(iter(reports.values()))["metrics"])
    width = max(len(name) for name in reports)
    lines = [f"{'system':<{width}}  " + "  ".join(f"{m:>7}" for m in metrics)]
    for name, report in reports.items():
        lines.append(f"{name:<{width}}  " + "  ".join(f"{report['metrics'][m]:>7.4f}" for m in metrics))
    return "\n".join(lines)


def _show_request(request: PostRankRequest, result: RankResult) -> str:
    by_id = {item.id: item for item in request.candidates}
    lines = [f"request {request.request_id}: query {request.query!r}, user {request.user.id} {request.user.features}"]
    lines.append("  ranking-stage order            ->  post-ranked by llm4pr")
    for position, (before, after) in enumerate(zip(request.candidate_ids, result.ranking, strict=True), start=1):
        lines.append(f"  {position}. {_title(by_id[before]):<26}  ->  {position}. {_title(by_id[after])}")
    return "\n".join(lines)


def _title(item: Any) -> str:
    title = str(item.features.get("title", item.id))[:20]
    return f"{title} ({item.label:g})"
