"""`llm4pr benchmark`: every row over seeds, three output files, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llm4pr.benchmarks.comparison import Benchmark
from llm4pr.benchmarks.config import BenchmarkConfig
from llm4pr.benchmarks.report import results_markdown
from llm4pr.data.config_files import deep_merge
from llm4pr.cli import main
from llm4pr.data.errors import DataError
from tests.scripts import load_script
from tests.toy import write_toy_data

FIXTURE = Path(__file__).parent / "fixtures" / "movielens" / "grouplens-100k"


@pytest.fixture(scope="module")
def llm_config(tmp_path_factory: pytest.TempPathFactory, tiny_backbone_dir: Path) -> Path:
    folder = tmp_path_factory.mktemp("bench-llm")
    config = {
        "max_valid_requests": 2,
        "model": {"backbone": str(tiny_backbone_dir), "text_encoder": "hashing", "qia_hidden_dim": 16, "categorical_dim": 4,
                  "lora": {"r": 2, "alpha": 4}},
        "adaptation": {"steps": 1, "batch_size": 2},
        "post_rank": {"steps": 1, "batch_size": 2},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def write_config(tmp_path: Path, llm_config: Path) -> Path:
    config = {
        "source": str(FIXTURE),
        "seeds": [0, 1],
        "protocols": ["input", "ranking_stage"],
        "ranking_stage_folds": 2,
        "latency_requests": 2,
        "paired_with": ["ranking-stage order"],
        "rows": [
            {"name": "ranking-stage order", "baseline": "initial"},
            {"name": "item quality", "baseline": "item_quality"},
            {"name": "LambdaMART + signals", "baseline": "lambdamart", "signals": True,
             "params": {"n_estimators": 5, "min_data_in_leaf": 1, "text_encoder": "hashing"}},
            {"name": "LLM4PR", "llm4pr": str(llm_config)},
            {"name": "LLM4PR (first_token)", "llm4pr": str(llm_config), "mode": "first_token"},
            {"name": "PTPR", "llm4pr": str(llm_config), "overrides": {"model": {"prompt_style": "text"}, "adaptation": {"steps": 0}}},
            {"name": "zero-shot LLM", "llm4pr": str(llm_config),
             "overrides": {"model": {"prompt_style": "text"}, "adaptation": {"steps": 0}, "post_rank": {"steps": 0}}},
        ],
    }
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fake_result(protocol: str, row: object, seed: int) -> dict[str, object]:
    """A row's result file without training or scoring anything."""
    return {"row": row.name, "protocol": protocol, "seed": seed, "signals": False, "train_s": 0.0,  # type: ignore[attr-defined]
            "metrics": {m: 0.5 for m in ("ndcg@3", "ndcg@5", "mrr@3", "mrr@5")}}


def test_benchmark_writes_results_and_resumes(tmp_path: Path, llm_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config_path = write_config(tmp_path, llm_config)
    out = tmp_path / "out"
    assert main(["benchmark", "--config", str(config_path), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    rows = {(r["protocol"], r["row"]): r for r in results["rows"]}
    assert len(rows) == 14 and results["complete"] and results["pending"] == []
    assert results["provenance"]["machine"]["processor"] and "commit" in results["provenance"]
    # the two LLM4PR rows train the same model: one run per protocol and seed, not two;
    # the zero-shot row trains nothing: one run serves both seeds
    assert len(list((out / "runs" / "input").iterdir())) == 2 * 2 + 1  # (LLM4PR, PTPR) x 2 seeds + zero-shot
    # a shared run's training time is its own record, not the (short) time the second row waited for it
    assert rows[("input", "LLM4PR (first_token)")]["train_s_mean"] == rows[("input", "LLM4PR")]["train_s_mean"]
    zero_shot = rows[("input", "zero-shot LLM")]
    assert zero_shot["runs"] == 1 and zero_shot["per_seed"]["0"] == zero_shot["per_seed"]["1"]
    assert zero_shot["train_s_mean"] == 0.0  # its run validates, but trains nothing
    assert json.loads((out / "rows" / "input" / "zero-shot-llm" / "seed1.json").read_text())["same_as_seed"] == 0
    assert "| 2* |" in (out / "results.md").read_text() and rows[("input", "PTPR")]["runs"] == 2
    provenance = json.loads((out / "rows" / "input" / "llm4pr" / "seed0.json").read_text())["provenance"]
    assert provenance["machine"]["cpus"] >= 1 and provenance["machine"]["torch"] and provenance["finished"].startswith("20")
    for row in rows.values():
        assert row["seeds"] == [0, 1]
        assert set(row["mean"]) == {"ndcg@3", "ndcg@5", "mrr@3", "mrr@5"}
    assert rows[("input", "LLM4PR")]["mean_input_tokens"] < rows[("input", "PTPR")]["mean_input_tokens"]
    assert "latency_p50_ms" in rows[("input", "LLM4PR")] and "latency_p50_ms" not in rows[("input", "item quality")]
    assert rows[("input", "LambdaMART + signals")]["signals"] is True
    assert "| LLM4PR | no |" in (out / "results.md").read_text()
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    # every row keeps its paired metrics per test request, and is compared with the best baseline request by request
    prm_seed0 = json.loads((out / "rows" / "input" / "item-quality" / "seed0.json").read_text())
    kept = prm_seed0["per_request"]
    assert set(kept) == {"requests", "ndcg@3", "mrr@3"} and len(kept["ndcg@3"]) == len(kept["mrr@3"]) == prm_seed0["n_test"]
    for protocol in ("input", "ranking_stage"):
        paired, with_order = results["paired"][protocol]  # the best baseline, then the config's paired_with row
        assert with_order["reference"] == "ranking-stage order" and not with_order["best_baseline"] and paired["best_baseline"]
        assert len(with_order["rows"]) == len(rows) // 2 - 1
        baselines = [r for r in results["rows"] if r["protocol"] == protocol and r["kind"] == "baseline"]
        best = max(baselines, key=lambda r: r["mean"]["ndcg@3"])
        assert paired["reference"] == best["row"] and paired["metrics"] == ["ndcg@3", "mrr@3"]
        assert {r["row"] for r in paired["rows"]} == {r["row"] for r in results["rows"] if r["protocol"] == protocol} - {best["row"]}
        for compared in paired["rows"]:
            row = rows[(protocol, compared["row"])]
            for metric in paired["metrics"]:
                difference = compared[metric]
                assert difference["low"] <= difference["mean"] <= difference["high"]
                # no request is undefined here: the mean of per-request differences is the difference of the rows' means
                assert difference["mean"] == pytest.approx(row["mean"][metric] - best["mean"][metric], abs=2e-4)
    markdown = (out / "results.md").read_text()
    assert f"Paired with the best baseline, {results['paired']['input'][0]['reference']}," in markdown
    assert "Paired with ranking-stage order," in markdown

    def must_not_run(*args: object) -> None:
        raise AssertionError("a finished row was run again")

    monkeypatch.setattr(Benchmark, "_run_row", must_not_run)
    assert Benchmark(BenchmarkConfig.load(config_path), out, progress=False).run()["rows"] == results["rows"]


def test_cheap_rows_first_and_partial_results(tmp_path: Path, llm_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = BenchmarkConfig.load(write_config(tmp_path, llm_config))
    bench = Benchmark(config, tmp_path / "out", progress=False)
    kinds = ["baseline" if row.baseline else "llm" for _, row, _ in bench.jobs()]
    assert kinds == sorted(kinds) and len(kinds) == 2 * 2 * 7  # baselines first; 2 protocols x 2 seeds x 7 rows
    llm_jobs = [(row.name, seed) for _, row, seed in bench.jobs() if row.llm4pr]
    assert [seed for _, seed in llm_jobs[:8]] == [0] * 8  # one seed of every LLM row first
    # within a seed, the soft-prompt rows before the all-text ones (prompts ~10x longer)
    assert {name for name, _ in llm_jobs[:4]} == {"LLM4PR", "LLM4PR (first_token)"}

    def interrupted(self: Benchmark, protocol: str, row: object, seed: int) -> dict[str, object]:
        if getattr(row, "llm4pr", None):
            raise KeyboardInterrupt
        return fake_result(protocol, row, seed)

    monkeypatch.setattr(Benchmark, "_run_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert not results["complete"] and len(results["pending"]) == 2 * 2 * 4
    assert "**Incomplete:** 12 runs done, 16 pending" in (tmp_path / "out" / "results.md").read_text()


def test_row_and_seed_filters_run_a_part_and_report_the_whole(
    tmp_path: Path, llm_config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = write_config(tmp_path, llm_config)
    ran: list[tuple[str, str, int]] = []

    def fake_row(self: Benchmark, protocol: str, row: object, seed: int) -> dict[str, object]:
        ran.append((protocol, row.name, seed))  # type: ignore[attr-defined]
        return fake_result(protocol, row, seed)

    monkeypatch.setattr(Benchmark, "_run_row", fake_row)
    out = tmp_path / "out"
    assert main(["benchmark", "--config", str(config_path), "--out", str(out), "--row", "PTPR", "--row", "item quality", "--seed", "1"]) == 0
    assert sorted(ran) == [(p, name, 1) for p in ("input", "ranking_stage") for name in ("PTPR", "item quality")]
    results = json.loads((out / "results.json").read_text())
    assert not results["complete"] and len(results["pending"]) == 2 * 2 * 7 - 4  # the whole config, less this part
    assert main(["benchmark", "--config", str(config_path), "--out", str(out), "--row", "LLM4PR (first token)"]) == 2
    assert "no row named 'LLM4PR (first token)'" in capsys.readouterr().err
    assert main(["benchmark", "--config", str(config_path), "--out", str(out), "--seed", "7"]) == 2
    assert "[7] not among the config's seeds [0, 1]" in capsys.readouterr().err
    assert len(ran) == 4


def test_a_costly_row_runs_only_its_own_seeds(tmp_path: Path, llm_config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = yaml.safe_load(write_config(tmp_path, llm_config).read_text())
    for row in raw["rows"]:
        row["seeds"] = [1] if row["name"] == "PTPR" else None
    config_path = tmp_path / "fewer.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(Benchmark, "_run_row", lambda self, protocol, row, seed: fake_result(protocol, row, seed))
    out = tmp_path / "out"
    results = Benchmark(BenchmarkConfig.load(config_path), out, progress=False).run()
    assert results["complete"] and sorted(path.name for path in (out / "rows" / "input" / "ptpr").iterdir()) == ["seed1.json"]
    rows = {(r["protocol"], r["row"]): r for r in results["rows"]}
    assert rows[("input", "PTPR")]["seeds"] == [1] and rows[("input", "PTPR")]["fewer_seeds"]
    assert rows[("input", "LLM4PR")]["seeds"] == [0, 1] and not rows[("input", "LLM4PR")]["fewer_seeds"]
    markdown = (out / "results.md").read_text()
    assert "| PTPR | no |" in markdown and "| 1† |" in markdown and "† runs fewer seeds than the benchmark's 2" in markdown
    raw["rows"][0]["seeds"] = [1, 0]
    config_path.write_text(yaml.safe_dump(raw))
    config = BenchmarkConfig.load(config_path)
    assert config.row_seeds(config.rows[0]) == [0, 1] and not config.runs_fewer_seeds(config.rows[0])  # every seed: not fewer
    raw["rows"][0]["seeds"] = [0, 5]
    config_path.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataError, match=r"row 'ranking-stage order': seeds \[5\] are not among the benchmark's seeds \[0, 1\]"):
        BenchmarkConfig.load(config_path)


def test_config_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"rows": [{"name": "x", "baseline": "initial", "llm4pr": "c.yaml"}]}))
    with pytest.raises(DataError, match="row 'x': give exactly one of 'baseline' or 'llm4pr'"):
        BenchmarkConfig.load(path)
    path.write_text(yaml.safe_dump({"rows": [{"name": "x", "baseline": "initial"}], "paired_with": ["BM25"]}))
    with pytest.raises(DataError, match="paired_with: no row named 'BM25' \\(rows: x\\)"):
        BenchmarkConfig.load(path)


def test_a_row_with_modes_is_one_row_per_mode(tmp_path: Path) -> None:
    path = tmp_path / "modes.yaml"
    ablation = {"llm4pr": "c.yaml", "overrides": {"adaptation": {"steps": 0}}}
    path.write_text(yaml.safe_dump({"rows": [{"name": "order", "baseline": "initial"},
                                             {"name": "w/o FA", "modes": ["generate", "first_token"], **ablation}]}))
    rows = BenchmarkConfig.load(path).rows
    assert [(row.name, row.mode) for row in rows] == [("order", "generate"), ("w/o FA", "generate"), ("w/o FA (first_token)", "first_token")]
    assert rows[1].overrides == rows[2].overrides == ablation["overrides"]  # the same recipe: one training run
    path.write_text(yaml.safe_dump({"rows": [{"name": "x", "llm4pr": "c.yaml", "mode": "first_token", "modes": ["generate"]}]}))
    with pytest.raises(DataError, match="row 'x': give 'mode' \\(one row\\) or 'modes' \\(a row per mode\\), not both"):
        BenchmarkConfig.load(path)
    path.write_text(yaml.safe_dump({"rows": [{"name": "x", "llm4pr": "c.yaml", "modes": ["generate", "generate"]}]}))
    with pytest.raises(DataError, match="row 'x': 'modes' must be a list of distinct inference modes"):
        BenchmarkConfig.load(path)
    path.write_text(yaml.safe_dump({"rows": [{"name": "x", "llm4pr": "c.yaml", "modes": ["generate", "sampling"]}]}))
    with pytest.raises(DataError, match="row 'x': unknown inference modes \\['sampling'\\] in 'modes' \\(known: generate, first_token\\)"):
        BenchmarkConfig.load(path)
    # two rows whose files would land in one folder
    path.write_text(yaml.safe_dump({"rows": [{"name": "LLM4PR (first_token)", "llm4pr": "c.yaml", "mode": "first_token"},
                                             {"name": "LLM4PR", "modes": ["generate", "first_token"], "llm4pr": "c.yaml"}]}))
    with pytest.raises(DataError, match="rows 'LLM4PR \\(first_token\\)' and 'LLM4PR \\(first_token\\)' share one results folder name"):
        BenchmarkConfig.load(path)


def test_deep_merge_and_markdown() -> None:
    assert deep_merge({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 5}}) == {"a": {"b": 5, "c": 2}, "d": 3}
    row = {"row": "r", "protocol": "input", "signals": False, "kind": "baseline", "seeds": [0], "train_s_mean": 1.0,
           "mean": {m: 0.5 for m in ("ndcg@3", "ndcg@5", "mrr@3", "mrr@5")}, "std": {m: 0.0 for m in ("ndcg@3", "ndcg@5", "mrr@3", "mrr@5")}}
    assert "| r | no | 0.5000 ± 0.0000" in results_markdown({"rows": [row]})


def test_git_commit_names_head_and_dirty_trees(tmp_path: Path) -> None:
    import subprocess

    from llm4pr.provenance import git_commit

    assert git_commit(tmp_path) is None  # not a checkout

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    run("init", "-q")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.py").write_text("a")
    (tmp_path / "results.md").write_text("a")
    run("add", "src/f.py", "results.md")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    head = run("rev-parse", "--short", "HEAD").stdout.decode().strip()
    assert git_commit(tmp_path) == head
    (tmp_path / "results.md").write_text("b")  # results rewritten: still the same code
    assert git_commit(tmp_path) == head
    (tmp_path / "src" / "f.py").write_text("b")
    assert git_commit(tmp_path) == f"{head}-dirty"


def test_protocol_overrides_reach_only_their_protocol(tmp_path: Path, llm_config: Path) -> None:
    raw = yaml.safe_load(write_config(tmp_path, llm_config).read_text())
    raw["protocol_overrides"] = {"ranking_stage": {"post_rank": {"shuffle_candidates": False, "steps": 3}}}
    bench = Benchmark(BenchmarkConfig.model_validate(raw), tmp_path / "out", progress=False)
    ptpr = next(row for row in bench.config.rows if row.name == "PTPR")
    assert bench._training_config(ptpr, 0, "input").post_rank.shuffle_candidates is True
    ranking_stage = bench._training_config(ptpr, 0, "ranking_stage")
    assert ranking_stage.post_rank.shuffle_candidates is False and ranking_stage.post_rank.steps == 3
    assert ranking_stage.model.prompt_style == "text"  # the row's own overrides still apply
    zero_shot = next(row for row in bench.config.rows if row.name == "zero-shot LLM")
    assert bench._training_config(zero_shot, 0, "ranking_stage").post_rank.steps == 0  # the row has the last word


def test_a_prepared_data_folder_is_benchmarked_as_it_is(tmp_path: Path) -> None:
    data = write_toy_data(tmp_path / "toy", n_train=60, n_valid=10, n_test=12)
    config = {
        "data": str(data),
        "seeds": [0],
        "protocols": ["input"],
        "rows": [
            {"name": "ranking-stage order", "baseline": "initial"},
            {"name": "item quality", "baseline": "item_quality", "params": {"feature": "quality"}},
            {"name": "LambdaMART", "baseline": "lambdamart", "params": {"n_estimators": 20, "min_data_in_leaf": 1, "text_encoder": "hashing"}},
        ],
    }
    out = tmp_path / "out"
    results = Benchmark(BenchmarkConfig.model_validate(config), out, progress=False).run()
    rows = {r["row"]: r for r in results["rows"]}
    assert results["complete"] and results["config"]["data"] == str(data) and not (out / "data").exists()  # read in place
    assert rows["item quality"]["mean"]["ndcg@3"] > rows["ranking-stage order"]["mean"]["ndcg@3"]
    record = json.loads((out / "rows" / "input" / "lambdamart" / "seed0.json").read_text())
    assert list(record) == ["row", "protocol", "seed", "signals", "metrics", "per_request", "n_test", "n_train", "train_s", "fallbacks", "wall_s", "provenance"]
    assert record["wall_s"] >= record["train_s"] >= 0
    markdown = (out / "results.md").read_text()
    assert "sample standard deviation" in markdown and "h of training summed over the runs" in markdown
    assert (record["n_train"], record["n_test"], record["fallbacks"]) == (60, 12, 0)
    with pytest.raises(ValueError, match="give 'source' .* or 'data' .*, not both"):
        BenchmarkConfig.model_validate({**config, "source": "recbole"})
    (data / "valid.jsonl").unlink()
    with pytest.raises(DataError, match="not a prepared data folder"):
        Benchmark(BenchmarkConfig.model_validate(config), tmp_path / "again", progress=False).run()


def test_the_collaborative_field_reaches_every_row_and_a_row_can_drop_features(tmp_path: Path, llm_config: Path) -> None:
    """`collaborative` adds the field to the data all rows read (a baseline can rank by it);
    `drop_features` takes features away from one row (its own data variant and its own run)."""
    pytest.importorskip("surprise")
    field = ["mf_score", "mf_user_vector", "mf_item_vector"]
    config = {
        "source": str(FIXTURE),
        "prior_weight": 2.0,
        "collaborative": {"vectors": True, "folds": 2},
        "seeds": [0],
        "protocols": ["input"],
        "rows": [
            {"name": "random order", "baseline": "random"},
            {"name": "by mf score", "baseline": "item_quality", "params": {"feature": "mf_score"}},
            {"name": "LLM4PR", "llm4pr": str(llm_config)},
            {"name": "LLM4PR w/o collaborative field", "llm4pr": str(llm_config), "drop_features": field},
        ],
    }
    out = tmp_path / "out"
    results = Benchmark(BenchmarkConfig.model_validate(config), out, progress=False).run()
    assert results["complete"] and {r["row"] for r in results["rows"]} == {row["name"] for row in config["rows"]}
    assert json.loads((out / "data" / "source" / "prepare.json").read_text())["protocol"]["prior_weight"] == 2.0
    report = json.loads((out / "data" / "base" / "collaborative.json").read_text())
    assert report["features"] == field and report["folds"] == 2
    base = {spec["name"] for spec in json.loads((out / "data" / "base" / "schema.json").read_text())["features"]}
    dropped_folder = out / "data" / "input-plain-without-mf-item-vector-without-mf-score-without-mf-user-vector"
    dropped = {spec["name"] for spec in json.loads((dropped_folder / "schema.json").read_text())["features"]}
    assert set(field) <= base and dropped == base - set(field)
    assert not any(name in (dropped_folder / "train.jsonl").read_text() for name in field)
    assert len(list((out / "runs" / "input").iterdir())) == 2  # the ablation trains its own run
    with pytest.raises(DataError, match="drop_features: the data has no feature nope"):
        bad = {**config, "rows": [{"name": "x", "baseline": "random", "drop_features": ["nope"]}]}
        Benchmark(BenchmarkConfig.model_validate(bad), out, progress=False).run()


def test_the_cold_start_protocol_reports_the_cold_subset_beside_the_whole_split(tmp_path: Path) -> None:
    from llm4pr.data.jsonl import read_requests
    from llm4pr.evaluation.evaluate import evaluate_run

    config = {
        "source": str(FIXTURE),
        "cold_items": 0.1,
        "seeds": [0, 1],
        "protocols": ["input"],
        "paired_with": ["given order"],
        "rows": [
            {"name": "given order", "baseline": "initial"},
            {"name": "random order", "baseline": "random"},
            {"name": "item quality", "baseline": "item_quality"},
        ],
    }
    out = tmp_path / "out"
    results = Benchmark(BenchmarkConfig.model_validate(config), out, progress=False).run()
    cold = json.loads((out / "data" / "base" / "cold.json").read_text())["cold_candidates"]["test"]
    subset = results["subsets"]["cold"]
    assert subset["requests"] == len(cold) > 0
    test = [r for r in read_requests(out / "data" / "base" / "test.jsonl") if r.request_id in cold]
    for row in subset["rows"]:
        seeds = [json.loads((out / "rows" / "input" / slug / f"seed{s}.json").read_text()) for slug in [row["row"].replace(" ", "-")] for s in (0, 1)]
        assert row["seeds"] == [0, 1] and set(row["mean"]) == {"ndcg@3", "mrr@3"}
        if row["row"] == "given order":  # recomputed from the subset's requests alone
            from llm4pr.rankers.base import InitialOrderRanker

            expected = evaluate_run(test, InitialOrderRanker().rank(test))["metrics"]["ndcg@3"]
            assert row["mean"]["ndcg@3"] == pytest.approx(expected, abs=1e-4)
        assert all(seed["n_test"] > subset["requests"] for seed in seeds)
    (paired,) = subset["paired"]["input"]  # the best baseline is the given order here, or is paired with it
    assert all(r[m]["n"] == len(cold) for r in paired["rows"] for m in ("ndcg@3", "mrr@3"))
    assert "## Subset: cold" in (out / "results.md").read_text()
    warm = Benchmark(BenchmarkConfig.model_validate({**config, "cold_items": 0.0}), tmp_path / "warm", progress=False).run()
    assert "subsets" not in warm


def test_a_rerank_calls_row_ranks_the_test_requests_as_bare_documents(tmp_path: Path) -> None:
    """`rerank_calls: true` sends each test candidate with its text only: a bi-encoder reading the
    titles then has nothing to read (the shown order is kept), the one reading the abstracts ranks
    as before; data that cannot be sent as rerank calls (user features) is an error naming the row."""
    from llm4pr.data.semanlink import prepare_semanlink

    data = tmp_path / "semanlink"
    prepare_semanlink(Path(__file__).parent / "fixtures" / "semanlink", data, split_ratio=(0.0, 0.0, 1.0))
    by_title = {"baseline": "bi_encoder", "params": {"text_encoder": "hashing", "feature": "title"}}
    by_text = {"baseline": "bi_encoder", "params": {"text_encoder": "hashing"}}
    rows = [
        {"name": "order", "baseline": "initial"},
        {"name": "title", **by_title},
        {"name": "title (rerank calls)", **by_title, "rerank_calls": True},
        {"name": "abstract", **by_text},
        {"name": "abstract (rerank calls)", **by_text, "rerank_calls": True},
    ]
    config = {"data": str(data), "seeds": [0], "protocols": ["input"], "metrics_at": [10], "rows": rows}
    out = tmp_path / "out"
    results = {row["row"]: row["mean"] for row in Benchmark(BenchmarkConfig.model_validate(config), out, progress=False).run()["rows"]}
    assert results["title (rerank calls)"] == results["order"] != results["title"]
    assert results["abstract (rerank calls)"] == results["abstract"]
    assert json.loads((out / "rows" / "input" / "title-rerank-calls" / "seed0.json").read_text())["rerank_calls"] is True

    toy = write_toy_data(tmp_path / "toy", n_train=10, n_valid=2, n_test=4)
    bad = {**config, "data": str(toy), "rows": [{"name": "order as rerank calls", "baseline": "initial", "rerank_calls": True}]}
    with pytest.raises(DataError, match="row 'order as rerank calls': rerank_calls: .*user features"):
        Benchmark(BenchmarkConfig.model_validate(bad), tmp_path / "out-toy", progress=False).run()


def test_metrics_at_decides_the_cutoffs_evaluated_and_tabled(tmp_path: Path) -> None:
    from llm4pr.baselines import RankingStageOrderRanker
    from llm4pr.data.jsonl import read_requests
    from llm4pr.evaluation.evaluate import evaluate_run
    from tests.toy import TOY_SCHEMA

    data = write_toy_data(tmp_path / "toy", n_train=10, n_valid=2, n_test=6)
    config = {"data": str(data), "seeds": [0], "protocols": ["input"], "metrics_at": [2, 4],
              "rows": [{"name": "ranking-stage order", "baseline": "initial"}]}
    out = tmp_path / "out"
    results = Benchmark(BenchmarkConfig.model_validate(config), out, progress=False).run()
    (row,) = results["rows"]
    assert list(row["mean"]) == ["ndcg@2", "ndcg@4", "mrr@2", "mrr@4"]
    test = read_requests(data / "test.jsonl", TOY_SCHEMA)
    expected = evaluate_run(test, RankingStageOrderRanker().rank(test), ks=(2, 4))["metrics"]
    assert row["mean"] == {metric: round(expected[metric], 4) for metric in row["mean"]}
    record = json.loads((out / "rows" / "input" / "ranking-stage-order" / "seed0.json").read_text())
    assert set(record["metrics"]) == {"ndcg@2", "ndcg@4", "mrr@2", "mrr@4", "map@2", "map@4"}
    assert "| row | signals | ndcg@2 | ndcg@4 | mrr@2 | mrr@4 | input tokens |" in (out / "results.md").read_text()
    assert BenchmarkConfig.model_validate({"rows": config["rows"]}).tabled_metrics == ("ndcg@3", "ndcg@5", "mrr@3", "mrr@5")
    for bad in ([0, 10], [5, 5], []):
        with pytest.raises(ValueError, match="metrics_at"):
            BenchmarkConfig.model_validate({**config, "metrics_at": bad})


def test_the_semanlink_benchmark_and_its_recipe_validate(monkeypatch: pytest.MonkeyPatch) -> None:
    from llm4pr.baselines import BASELINES
    from llm4pr.training.config import TrainConfig

    monkeypatch.chdir(Path(__file__).parent.parent)  # the config names its training config relative to the repository
    config = BenchmarkConfig.load("benchmarks/semanlink.yaml")
    assert (config.data, config.protocols, config.metrics_at, config.seeds) == (Path("data/semanlink"), ["input"], [10], [0, 1, 2])
    assert config.tabled_metrics == ("ndcg@10", "mrr@10")
    assert all(row.baseline in BASELINES for row in config.rows if row.baseline)
    bench = Benchmark(config, Path("unused"), progress=False)
    rows = {row.name: row for row in config.rows}
    trained = {name: bench._training_config(row, 0, "input") for name, row in rows.items() if row.llm4pr}  # every LLM row validates
    assert set(trained) == {"zero-shot LLM", "PTPR", "LLM4PR", "LLM4PR (first_token)", "LLM4PR (first_token, rerank calls)"}
    served = rows["LLM4PR (first_token, rerank calls)"]
    assert served.rerank_calls and served.mode == "first_token" and trained[served.name] == trained["LLM4PR"]  # one run, ranked bare
    assert not trained["zero-shot LLM"].trains and trained["zero-shot LLM"].model.prompt_style == "text"
    assert trained["PTPR"].model.prompt_style == "text" and trained["PTPR"].post_rank.steps > 0
    assert trained["LLM4PR"] == trained["LLM4PR (first_token)"] and rows["LLM4PR (first_token)"].mode == "first_token"
    recipe = TrainConfig.load("configs/semanlink.yaml")
    assert trained["LLM4PR"] == recipe.model_copy(update={"seed": 0})
    assert len(recipe.model.identifiers) >= 20  # the BM25 depth: a request fits one window
    assert not recipe.model.embed_ids  # rerank calls send documents the model never saw, by position
    assert recipe.max_train_requests is None and recipe.post_rank.random_ties
    assert recipe.model.query_similarity and recipe.post_rank.rerank_ratio > 0  # the checkpoint also answers bare rerank calls


@pytest.mark.parametrize("name", ["ml100k", "semanlink"])
def test_the_committed_row_files_still_make_the_committed_table(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    root = Path(__file__).parent.parent
    monkeypatch.chdir(root)  # the config names its training configs relative to the repository
    out = Path("benchmarks/results") / name
    committed = json.loads((out / "results.json").read_text())
    assert Benchmark(BenchmarkConfig.load(f"benchmarks/{name}.yaml"), out, progress=False).collect()["rows"] == committed["rows"]


def test_an_llm_row_fits_by_training_and_saves_its_checkpoint(tmp_path: Path, llm_config: Path) -> None:
    from llm4pr.benchmarks.llm_row import TrainableLLM4PR
    from llm4pr.data.jsonl import read_requests
    from llm4pr.inference.config import InferenceConfig
    from llm4pr.loading import load_ranker
    from llm4pr.training.config import TrainConfig
    from tests.toy import TOY_SCHEMA

    data = write_toy_data(tmp_path / "toy", n_train=8, n_valid=2, n_test=3)
    test = read_requests(data / "test.jsonl", TOY_SCHEMA)
    ranker = TrainableLLM4PR(TrainConfig.load(llm_config), data, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="seed is 0"):
        ranker.fit([], TOY_SCHEMA, seed=1)
    ranker.fit(read_requests(data / "train.jsonl", TOY_SCHEMA), TOY_SCHEMA)
    assert ranker.schema == TOY_SCHEMA and ranker.train_seconds is not None
    ranker.save(tmp_path / "saved")
    loaded = load_ranker(tmp_path / "saved", InferenceConfig(batch_size=16))
    assert [r.ranking for r in loaded.rank(test, mode="first_token")] == [r.ranking for r in ranker.rank(test, mode="first_token")]
    with pytest.raises(DataError, match="exists and is not empty"):
        ranker.save(data)


def _paired(reference: str, rows: dict[str, float]) -> dict:
    return {"reference": reference, "rows": [
        {"row": name, "ndcg@3": {"mean": value, "low": value - 0.01, "high": value + 0.01, "n": 9}} for name, value in rows.items()
    ]}


def test_ablation_table_puts_each_part_against_the_full_model_of_its_mode() -> None:
    script = load_script("ablation_table")
    results = {
        "rows": [{"row": "LLM4PR w/o FA", "protocol": "input", "seeds": [0, 1, 2]},
                 {"row": "LLM4PR w/o FA (first_token)", "protocol": "input", "seeds": [0, 1, 2]}],
        "paired": {"input": [
            _paired("DLCM", {"LLM4PR w/o FA": 0.5}),  # not a full-model reference: ignored
            # each reference also lists the other mode's twin: only the same mode's counts
            _paired("LLM4PR", {"LLM4PR w/o FA": -0.02, "LLM4PR w/o FA (first_token)": 0.3, "LLM4PR (first_token)": 0.1}),
            _paired("LLM4PR (first_token)", {"LLM4PR w/o FA": 0.4, "LLM4PR w/o FA (first_token)": -0.03}),
        ]},
    }
    lines = script.ablation_table(results).splitlines()
    assert lines[0] == "| without | input, `generate` | input, `first_token` | seeds |"
    assert lines[2] == "| FA | -0.0200 [-0.0300, -0.0100] | -0.0300 [-0.0400, -0.0200] | 3 |"
    assert len(lines) == 3
    with pytest.raises(SystemExit, match="'mrr@3' is not paired"):
        script.ablation_table(results, "mrr@3")
    with pytest.raises(SystemExit, match="no ablation row"):
        script.ablation_table({"rows": [], "paired": {"input": [_paired("DLCM", {"LTR-DNN": 0.0})]}})
