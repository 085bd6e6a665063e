"""The command line: subcommands reach their library functions, bad input ends in one error line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import llm4pr.serving
from llm4pr.baselines import load_baseline
from llm4pr.cli import main
from llm4pr.data.jsonl import read_requests, read_run
from tests.toy import TOY_SCHEMA, write_toy_data


def test_serve_passes_flags_to_the_service(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict = {}
    monkeypatch.setattr(llm4pr.serving, "serve", lambda checkpoint, **kwargs: seen.update(checkpoint=checkpoint, **kwargs))
    assert main(["serve", "--checkpoint", str(tmp_path), "--port", "9001", "--mode", "first_token", "--max-batch-size", "4", "--deadline-ms", "250"]) == 0
    assert seen["checkpoint"] == tmp_path and seen["port"] == 9001 and seen["host"] == "127.0.0.1"
    assert (seen["settings"].mode, seen["settings"].max_batch_size, seen["settings"].deadline_ms) == ("first_token", 4, 250)


def test_serve_rejects_bad_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--checkpoint", str(tmp_path), "--max-batch-size", "0"]) == 2
    assert "max_batch_size: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_prepare_and_evaluate_initial(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = Path(__file__).parent / "fixtures" / "movielens" / "grouplens-100k"
    assert main(["data", "prepare", "movielens", "--source", str(source), "--out", str(tmp_path / "ml")]) == 0
    assert "skipped rows: 0" in capsys.readouterr().out
    assert main(["evaluate", "--data", str(tmp_path / "ml" / "test.jsonl"), "--run", "initial", "--out", str(tmp_path / "r.json")]) == 0
    assert "ndcg@3" in capsys.readouterr().out and (tmp_path / "r.json").is_file()


def test_evaluate_rejects_a_run_that_loses_a_candidate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text('{"request_id":"r1","query":"q","user":{"id":"u"},"candidates":[{"id":"a","label":1},{"id":"b","label":0}]}\n')
    run = tmp_path / "run.jsonl"
    run.write_text('{"request_id":"r1","ranking":["a"]}\n')
    assert main(["evaluate", "--data", str(data), "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: run does not match the data") and "request 'r1'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "arguments",
    [
        ["letor", "--source", "letor/mslr-web10k-sample.txt", "--split-ratio", "0.6", "0.2", "0.2"],
        ["beir", "--source", "beir/sample", "--run", "beir/bm25-top30.trec", "--max-candidates", "20"],
        ["kuaisar", "--source", "kuaisar"],
    ],
)
def test_prepare_other_datasets(arguments: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fixtures = Path(__file__).parent / "fixtures"
    resolved = [str(fixtures / a) if "/" in a or a == "kuaisar" and i > 0 else a for i, a in enumerate(arguments)]
    assert main(["data", "prepare", *resolved, "--out", str(tmp_path)]) == 0
    assert "test " in capsys.readouterr().out
    assert (tmp_path / "prepare.json").is_file() and (tmp_path / "schema.json").is_file()


LAMBDAMART = ["--set", "text_encoder=hashing", "--set", "text_dim=8", "--set", "n_estimators=20", "--set", "min_data_in_leaf=1", "--set", "n_jobs=1"]


def test_fit_baseline_then_rank_with_the_saved_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_toy_data(tmp_path / "data", n_train=60, n_valid=10)
    saved = tmp_path / "lambdamart"
    assert main(["fit-baseline", "--baseline", "lambdamart", "--data", str(data), "--out", str(saved), *LAMBDAMART]) == 0
    assert f"saved lambdamart to {saved}" in capsys.readouterr().out
    assert json.loads((saved / "ranker.json").read_text())["params"]["n_estimators"] == 20
    assert main(["rank", "--checkpoint", str(saved), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "run.jsonl"),
                 "--mode", "first_token", "--batch-size", "2"]) == 0  # LLM options do not apply to a baseline
    assert "(0 fallbacks)" in capsys.readouterr().out
    expected = load_baseline(saved).rank(read_requests(data / "test.jsonl", TOY_SCHEMA))
    assert [r.ranking for r in read_run(tmp_path / "run.jsonl")] == [r.ranking for r in expected]


def test_a_folder_that_is_no_ranker_is_a_clear_error(toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = toy_data_dir
    (tmp_path / "empty").mkdir()
    (tmp_path / "damaged").mkdir()
    (tmp_path / "damaged" / "ranker.json").write_text('{"format": "llm4pr-ranker", "kind": "lambdamart"}')
    cases = [
        (["rank", "--checkpoint", str(tmp_path / "empty"), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "r.jsonl")],
         f"{tmp_path / 'empty'}: no llm4pr checkpoint here (expected config.json or model/config.json); nor is it a saved ranker"),
        (["serve", "--checkpoint", str(tmp_path / "empty")], f"{tmp_path / 'empty'}: no llm4pr checkpoint here"),
        (["serve", "--checkpoint", str(tmp_path / "missing")], f"{tmp_path / 'missing'}: no such folder"),
        (["rank", "--checkpoint", str(tmp_path / "damaged"), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "r.jsonl")],
         f"{tmp_path / 'damaged' / 'ranker.json'}: invalid saved-ranker manifest: schema: Field required"),
        (["rank", "--engine", "ray", "--checkpoint", str(tmp_path / "damaged"), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "r")],
         "--engine ray ranks with llm4pr checkpoints"),
        (["fit-baseline", "--baseline", "nope", "--data", str(data), "--out", str(tmp_path / "x")], "unknown baseline 'nope'"),
        (["fit-baseline", "--baseline", "item_quality", "--data", str(data), "--out", str(tmp_path / "x")],
         "no numerical item feature 'avg_rating'"),
        (["fit-baseline", "--baseline", "initial", "--data", str(data), "--out", str(data)], f"{data}: exists and is not a saved ranker"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "x").exists() and (data / "train.jsonl").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--window", "10", "--stride", "10"], "--stride: must be smaller than the window (10), got 10"),
        (["--shifts", "3"], "--shifts: 3 shifts need mode 'first_token'"),
        (["--quantize", "int8", "--dtype", "bfloat16"], "--dtype: int8 quantization starts from float32 weights"),
        (["--batch-size", "0", "--window", "1"], "--batch-size: Input should be greater than or equal to 1; --window: Input should be"),
    ],
)
def test_bad_inference_options_are_one_error_line_naming_them(
    flags: list[str], message: str, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = toy_data_dir
    commands = [
        ["rank", "--checkpoint", str(tmp_path), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "run.jsonl")],
        ["rank", "--engine", "ray", "--checkpoint", str(tmp_path), "--input", str(data / "test.jsonl"), "--output", str(tmp_path / "out")],
        ["evaluate", "--checkpoint", str(tmp_path), "--data", str(data / "test.jsonl")],
    ]
    for command in commands:
        assert main([*command, *flags]) == 2, command
        err = capsys.readouterr().err
        assert err.startswith("error: invalid inference settings: ") and message in err and "Traceback" not in err, (command, err)
    assert not (tmp_path / "run.jsonl").exists() and not (tmp_path / "out").exists()


def test_serve_passes_the_inference_flags_and_refuses_bad_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict = {}
    monkeypatch.setattr(llm4pr.serving, "serve", lambda checkpoint, **kwargs: seen.update(kwargs))
    assert main(["serve", "--checkpoint", str(tmp_path), "--mode", "first_token", "--window", "6", "--stride", "3", "--quantize", "int8"]) == 0
    inference = seen["inference"]
    assert (inference.mode, inference.window, inference.stride, inference.quantize, inference.device) == ("first_token", 6, 3, "int8", "cpu")
    assert main(["serve", "--checkpoint", str(tmp_path), "--window", "6", "--stride", "8"]) == 2
    assert "error: invalid inference settings: --stride: must be smaller than the window (6), got 8" in capsys.readouterr().err
