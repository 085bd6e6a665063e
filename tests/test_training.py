"""Training runs, checkpoints and the train/rank/evaluate commands on a tiny saved backbone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm4pr.cli import main
from llm4pr.data.config_files import parse_overrides
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests, read_run
from llm4pr.features.encoders import FeatureStats
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.checkpoint import save_checkpoint
from llm4pr.model.factory import add_lora, build_model, load_model
from llm4pr.model.config import LoraSettings, ModelConfig
from llm4pr.model.prompts import PromptBuilder
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.training.config import TrainConfig
import llm4pr.training.trainer as trainer_module
from llm4pr.training.trainer import Trainer, learning_rate, parameter_groups, training_seconds
from llm4pr.training.examples import ExampleFactory
from tests.tiny import TrainConfigFactory, tiny_backbone
from tests.toy import TOY_SCHEMA, toy_requests


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    model, _ = load_model(resolve_checkpoint(run_dir))
    return {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k or "adapter" in k or "prior" in k}


def test_learning_rate_schedule() -> None:
    stage = TrainConfig().post_rank.model_copy(update={"steps": 100, "learning_rate": 1e-3, "min_learning_rate": 1e-6})
    assert learning_rate(0, stage) == pytest.approx(1e-4)  # warm-up: 10 steps
    assert learning_rate(9, stage) == pytest.approx(1e-3)
    assert learning_rate(99, stage) == pytest.approx(1e-6, abs=1e-6)
    assert learning_rate(50, stage) < learning_rate(20, stage)


def test_full_run_writes_a_loadable_model_and_a_validation_report(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    report = Trainer(tiny_train_config(), toy_data_dir, run_dir, progress=False).run()
    assert (run_dir / "adaptation" / "encoders.safetensors").is_file()
    assert (run_dir / "model" / "adapter" / "adapter_config.json").is_file()
    assert not (run_dir / "snapshot").exists()
    assert set(report) == {"n_requests", "generate", "first_token"}
    assert 0.0 <= report["generate"]["metrics"]["ndcg@3"] <= 1.0
    assert json.loads((run_dir / "valid_report.json").read_text())["n_requests"] == 4
    assert not list(run_dir.rglob("*.pt")) and not list(run_dir.rglob("*.bin")) and not list(run_dir.rglob("*.pkl"))
    timing = json.loads((run_dir / "timing.json").read_text())
    assert set(timing) == {"adaptation_s", "post_rank_s"} and all(v > 0 for v in timing.values())
    assert training_seconds(run_dir) == pytest.approx(sum(timing.values()), abs=0.11)
    # a finished run is not trained or validated again: the saved report comes back
    (run_dir / "valid_report.json").write_text(json.dumps({"n_requests": -1}))
    assert Trainer(tiny_train_config(), toy_data_dir, run_dir, progress=False).run() == {"n_requests": -1}


@pytest.mark.parametrize("backbone_layers", [None, 1])
def test_save_and_reload_give_identical_output(tiny_backbone_dir: Path, tmp_path: Path, backbone_layers: int | None) -> None:
    config = ModelConfig(
        backbone=str(tiny_backbone_dir), dtype="float32", text_encoder="hashing", qia_hidden_dim=32, categorical_dim=8, backbone_layers=backbone_layers
    )
    stats = FeatureStats.fit(TOY_SCHEMA, toy_requests(20))
    model, tokenizer = build_model(config, TOY_SCHEMA, stats)
    add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    with torch.no_grad():  # LoRA's B starts at zero: make the adapter matter before saving it
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.05)
    model.eval()
    save_checkpoint(model, tmp_path / "ckpt")
    reloaded, tokenizer2 = load_model(tmp_path / "ckpt")
    assert len(reloaded.backbone.get_decoder().layers) == (backbone_layers or 2)  # the tiny backbone has 2
    requests = toy_requests(6, seed=5)
    for mode in ("generate", "first_token"):
        before = LLM4PRRanker(model, PromptBuilder(tokenizer, config.identifiers), mode=mode).rank(requests)
        after = LLM4PRRanker(reloaded, PromptBuilder(tokenizer2, config.identifiers), mode=mode).rank(requests)
        assert [r.ranking for r in before] == [r.ranking for r in after]
        if mode == "first_token":
            for b, a in zip(before, after):
                assert b.scores == pytest.approx(a.scores, abs=1e-5)


def test_direct_paths_get_their_own_learning_rate(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path) -> None:
    model_section = {**tiny_train_config().model.model_dump(), "position_prior": True}
    post_rank = {"steps": 4, "batch_size": 4, "learning_rate": 1e-3, "prior_learning_rate": 0.05}
    run_dir = tmp_path / "run"
    Trainer(tiny_train_config(model=model_section, post_rank=post_rank), toy_data_dir, run_dir, progress=False).run()
    model, _ = load_model(resolve_checkpoint(run_dir))
    direct = {id(p) for p in model.direct_path_parameters()}
    assert {id(model.position_prior), *(id(p) for p in model.candidate_prior.parameters())} == direct

    stage = TrainConfig.model_validate({"post_rank": post_rank}).post_rank
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    shared, priors = parameter_groups(model, stage, 0.05)
    assert {id(p) for p in priors["params"]} == direct and priors["lr_scale"] == pytest.approx(50.0)
    assert shared["lr_scale"] == 1.0 and not direct & {id(p) for p in shared["params"]}
    (single,) = parameter_groups(model, stage, None)
    assert len(single["params"]) == len(list(model.parameters()))
    # the position bias alone at its own rate; the candidate prior then trains with the rest
    shared, position = parameter_groups(model, stage, None, 0.05)
    assert [id(p) for p in position["params"]] == [id(model.position_prior)] and position["lr_scale"] == pytest.approx(50.0)
    assert len(shared["params"]) == len(list(model.parameters())) - 1
    by_scale = {round(group["lr_scale"]): {id(p) for p in group["params"]} for group in parameter_groups(model, stage, 0.01, 0.05)}
    assert by_scale[10] == direct - {id(model.position_prior)} and by_scale[50] == {id(model.position_prior)} and len(by_scale) == 3
    # Adam moves every weight by about the learning rate per step: 4 steps at 1e-3 peak could not
    # take the zero-initialised position bias this far.
    assert model.position_prior.detach().abs().max() > 0.02


def test_interrupted_run_resumes_to_the_same_weights(
    tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a second AdamW group (the direct paths at their own rate): its rate survives the resume.
    model_section = {**tiny_train_config().model.model_dump(), "position_prior": True}
    post_rank = {"steps": 4, "batch_size": 4, "auxiliary_ratio": 0.5, "prior_learning_rate": 0.05}
    config = tiny_train_config(model=model_section, post_rank=post_rank)
    Trainer(config, toy_data_dir, tmp_path / "straight", progress=False).run()
    expected = final_weights(tmp_path / "straight")

    interrupted = tmp_path / "interrupted"
    original = Trainer._backward
    calls = {"post_rank": 0}

    def crash_after_three(self, wrapped, builder, examples, *args):  # type: ignore[no-untyped-def]
        if examples[0].task != "adaptation":
            calls["post_rank"] += 1
            if calls["post_rank"] == 4:
                raise KeyboardInterrupt
        return original(self, wrapped, builder, examples, *args)

    monkeypatch.setattr(Trainer, "_backward", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, toy_data_dir, interrupted, progress=False).run()
    state = json.loads((interrupted / "snapshot" / "trainer_state.json").read_text())
    assert (state["stage"], state["step"]) == ("post_rank", 2)
    before_interruption = state["train_s"]
    assert before_interruption > 0
    assert (interrupted / "adaptation" / "config.json").is_file()
    monkeypatch.setattr(Trainer, "_backward", original)
    Trainer(config, toy_data_dir, interrupted, progress=False).run()
    resumed = final_weights(interrupted)
    assert json.loads((interrupted / "timing.json").read_text())["post_rank_s"] > before_interruption  # resumed parts add up
    assert resumed.keys() == expected.keys()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=1e-4, atol=1e-5)


def test_run_folder_refuses_another_config(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path) -> None:
    Trainer(tiny_train_config(adaptation={"steps": 0}, post_rank={"steps": 0}), toy_data_dir, tmp_path, progress=False)
    with pytest.raises(DataError, match="different config"):
        Trainer(tiny_train_config(seed=1), toy_data_dir, tmp_path, progress=False)


def test_a_run_written_before_an_option_existed_resumes(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path) -> None:
    """An option added later with a default that keeps the old behaviour is not "another config"."""
    config = tiny_train_config(adaptation={"steps": 0}, post_rank={"steps": 0})
    Trainer(config, toy_data_dir, tmp_path, progress=False)
    saved = json.loads((tmp_path / "train_config.json").read_text())
    del saved["post_rank"]["rerank_ratio"], saved["model"]["query_similarity"]
    (tmp_path / "train_config.json").write_text(json.dumps(saved))
    Trainer(config, toy_data_dir, tmp_path, progress=False)  # resumes
    saved["post_rank"]["no_such_option"] = 1
    (tmp_path / "train_config.json").write_text(json.dumps(saved))
    with pytest.raises(DataError, match="different config"):
        Trainer(config, toy_data_dir, tmp_path, progress=False)


def test_rerank_ratio_shows_text_requests_as_rerank_calls(tiny_train_config: TrainConfigFactory, tmp_path: Path, toy_data_dir: Path) -> None:
    """With `rerank_ratio` 1 every post-rank example of a text set shows bare documents (the first
    text feature only, as /v1 and /v2 rerank send them), labels unchanged; at 0 none does; a schema
    that cannot take rerank calls (user features) is never changed."""
    from llm4pr.data.semanlink import prepare_semanlink

    data = tmp_path / "semanlink"
    prepare_semanlink(Path(__file__).parent / "fixtures" / "semanlink", data, split_ratio=(0.5, 0.0, 0.5), pseudo_queries=True)
    model = {**tiny_train_config().model.model_dump(mode="json"), "embed_ids": False, "max_history": 0}
    factory = None
    for ratio, expected in ((1.0, {"text"}), (0.0, {"text", "first_stage_score"})):
        config = tiny_train_config(model=model, post_rank={"steps": 1, "batch_size": 4, "auxiliary_ratio": 0.0, "rerank_ratio": ratio})
        trainer = Trainer(config, data, tmp_path / f"run-{ratio}", progress=False)
        factory = factory or ExampleFactory(PromptBuilder(tiny_backbone()[1], config.model.identifiers), trainer.schema, 0, shuffle_candidates=False)
        examples = trainer._post_rank_batch(factory, 0)
        keys = {key for example in examples for item in example.inputs.candidates for key in item.features}
        assert expected <= keys and (keys <= expected or ratio == 0.0), (ratio, keys)
        assert all(example.inputs.user.id == "anonymous" and not example.inputs.history for example in examples)
        assert all(example.candidate_labels and max(example.candidate_labels) == 1.0 for example in examples)
    toy = tiny_train_config(post_rank={"steps": 1, "batch_size": 4, "auxiliary_ratio": 0.0, "rerank_ratio": 1.0})
    assert Trainer(toy, toy_data_dir, tmp_path / "toy", progress=False)._rerank_feature is None  # user features: never rerank-shaped


def test_first_stage_bm25_estimates_the_score_of_bare_examples(tiny_train_config: TrainConfigFactory, tmp_path: Path) -> None:
    """Under `model.first_stage_bm25` a bare (rerank-shaped) example is shown with the BM25 score of
    its query over its own documents, as a served rerank call will be; the checkpoint keeps the
    option, so the ranker estimates it too; a feature that cannot hold it is refused."""
    from llm4pr.data.rerank import as_rerank_call, with_first_stage_estimate
    from llm4pr.data.semanlink import prepare_semanlink
    from llm4pr.model.request_prompts import RequestPrompter

    data = tmp_path / "semanlink"
    prepare_semanlink(Path(__file__).parent / "fixtures" / "semanlink", data, split_ratio=(1.0, 0.0, 0.0), pseudo_queries=True)
    model = {**tiny_train_config().model.model_dump(mode="json"), "embed_ids": False, "max_history": 0, "first_stage_bm25": "first_stage_score"}
    stage = {"steps": 1, "batch_size": 8, "auxiliary_ratio": 0.0, "rerank_ratio": 1.0}
    config = tiny_train_config(model=model, adaptation={"steps": 0}, post_rank=stage)
    trainer = Trainer(config, data, tmp_path / "run", progress=False)
    builder = PromptBuilder(tiny_backbone()[1], model["identifiers"])
    factory = ExampleFactory(builder, trainer.schema, 0, shuffle_candidates=False, first_stage_bm25="first_stage_score")
    by_query = {r.query: r for r in read_requests(data / "train.jsonl")}
    for example in trainer._post_rank_batch(factory, 0):
        shown = example.inputs.candidates
        assert all(set(c.features) == {"text", "first_stage_score"} for c in shown)
        bare = as_rerank_call(by_query[example.inputs.query], "text")
        expected = {c.id: c.features["first_stage_score"] for c in with_first_stage_estimate(bare, "first_stage_score", "text").candidates}
        assert {c.id: c.features["first_stage_score"] for c in shown} == {c.id: expected[c.id] for c in shown}
    trainer.run()
    ranker = LLM4PRRanker.from_pretrained(tmp_path / "run")
    assert ranker.prompter.first_stage_bm25 == "first_stage_score"
    with pytest.raises(ValueError, match="'title' is not a numerical item feature"):
        RequestPrompter(builder, trainer.schema, 0, first_stage_bm25="title")


def test_rerank_given_order_keeps_the_first_stage_order_of_bare_examples(tiny_train_config: TrainConfigFactory, tmp_path: Path) -> None:
    """Candidates are shuffled in training, except rerank-shaped examples under
    `rerank_given_order`: a rerank call's documents arrive in the first stage's order."""
    from llm4pr.data.semanlink import prepare_semanlink

    data = tmp_path / "semanlink"
    prepare_semanlink(Path(__file__).parent / "fixtures" / "semanlink", data, split_ratio=(1.0, 0.0, 0.0), pseudo_queries=True)
    model = {**tiny_train_config().model.model_dump(mode="json"), "embed_ids": False, "max_history": 0}
    by_id = {r.request_id: r for r in read_requests(data / "train.jsonl")}
    for given_order in (True, False):
        stage = {"steps": 1, "batch_size": 8, "auxiliary_ratio": 0.0, "rerank_ratio": 1.0, "rerank_given_order": given_order}
        trainer = Trainer(tiny_train_config(model=model, post_rank=stage), data, tmp_path / f"run-{given_order}", progress=False)
        factory = ExampleFactory(PromptBuilder(tiny_backbone()[1], model["identifiers"]), trainer.schema, 0, shuffle_candidates=True)
        examples = [e for e in trainer._post_rank_batch(factory, 0) if len(e.inputs.candidates) > 2]
        assert examples
        requests = [r for e in examples for r in by_id.values() if r.query == e.inputs.query]
        kept = [[c.id for c in e.inputs.candidates] == r.candidate_ids[: len(e.inputs.candidates)] for e, r in zip(examples, requests, strict=True)]
        assert all(kept) if given_order else not all(kept)


def test_validation_of_a_text_set_reports_rerank_calls_too(tiny_train_config: TrainConfigFactory, tmp_path: Path) -> None:
    """A checkpoint that answers rerank calls is validated on them as well: the same requests as
    bare documents, first_token."""
    from llm4pr.data.rerank import as_rerank_call
    from llm4pr.data.semanlink import prepare_semanlink
    from llm4pr.evaluation.evaluate import evaluate_run

    data = tmp_path / "semanlink"
    prepare_semanlink(Path(__file__).parent / "fixtures" / "semanlink", data, split_ratio=(0.0, 1.0, 0.0), pseudo_queries=True)
    model = {**tiny_train_config().model.model_dump(mode="json"), "embed_ids": False, "max_history": 0, "query_similarity": True}
    config = tiny_train_config(model=model, adaptation={"steps": 1, "batch_size": 2}, post_rank={"steps": 1, "batch_size": 2}, max_valid_requests=None)
    report = Trainer(config, data, tmp_path / "run", progress=False).run()
    assert set(report) >= {"generate", "first_token", trainer_module.RERANK_REPORT}
    valid = read_requests(data / "valid.jsonl")
    bare = [as_rerank_call(r, "text") for r in valid]
    expected = evaluate_run(bare, LLM4PRRanker.from_pretrained(tmp_path / "run").rank(bare, mode="first_token"), ks=config.metrics_at)
    assert report[trainer_module.RERANK_REPORT]["metrics"] == pytest.approx(expected["metrics"])


def test_no_adaptation_ablation_skips_the_stage(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path) -> None:
    config = tiny_train_config(adaptation={"steps": 0}, model={**tiny_train_config().model.model_dump(), "adapter": "mlp"})
    Trainer(config, toy_data_dir, tmp_path, progress=False).run()
    assert (tmp_path / "model" / "config.json").is_file()
    timing = json.loads((tmp_path / "timing.json").read_text())
    assert timing["adaptation_s"] == 0.0 and timing["post_rank_s"] > 0
    assert json.loads((tmp_path / "model" / "config.json").read_text())["model"]["adapter"] == "mlp"


def test_train_rank_evaluate_commands(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "config.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(tiny_train_config().model_dump(mode="json")))
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(config_path), "--data", str(toy_data_dir), "--out", str(run_dir)]) == 0
    assert "validation (generate)" in capsys.readouterr().out
    run_file = tmp_path / "run.jsonl"
    assert main(["rank", "--checkpoint", str(run_dir), "--input", str(toy_data_dir / "test.jsonl"), "--output", str(run_file), "--mode", "first_token"]) == 0
    run = read_run(run_file)
    requests = read_requests(toy_data_dir / "test.jsonl")
    assert [sorted(r.ranking) for r in run] == [sorted(q.candidate_ids) for q in requests]
    report_path = tmp_path / "report.json"
    assert main(["evaluate", "--data", str(toy_data_dir / "test.jsonl"), "--checkpoint", str(run_dir), "--out", str(report_path), "--batch-size", "1"]) == 0
    report = json.loads(report_path.read_text())
    assert report["valid_ratio"] == 1.0 and report["fallbacks"] == 0
    assert report["mean_input_tokens"] > 10 and report["dtype"] == "float32"  # the tiny config's
    assert report["latency_ms"]["p50"] > 0
    assert set(report["metrics"]) >= {"ndcg@3", "ndcg@5", "mrr@3", "mrr@5"}
    assert_provenance(report["provenance"])
    assert main(["evaluate", "--data", str(toy_data_dir / "test.jsonl"), "--run", str(run_file)]) == 0


def test_commands_report_bad_input_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rank", "--checkpoint", str(tmp_path), "--input", "x.jsonl", "--output", "y.jsonl"]) == 2
    assert "no llm4pr checkpoint here" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("post_rank: {steps: -1}\n")
    assert main(["train", "--config", str(bad), "--data", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "post_rank.steps: Input should be greater than or equal to 0" in capsys.readouterr().err


def test_bench_latency_command(tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Trainer(tiny_train_config(adaptation={"steps": 1, "batch_size": 2}, post_rank={"steps": 1, "batch_size": 2}), toy_data_dir, run_dir, progress=False).run()
    out = tmp_path / "latency.json"
    assert main(["bench-latency", "--checkpoint", str(run_dir), "--data", str(toy_data_dir / "test.jsonl"), "--requests", "4", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert set(report["systems"]) == {  # the other float type and int8, on CPUs
        "generate", "first_token", "all_text_generate", "generate_bf16", "first_token_bf16", "generate_int8", "first_token_int8",
    }
    assert report["dtype"] == "float32" and report["ratios"]["first_token_over_first_token_int8_p50"] > 0
    systems = report["systems"]
    assert systems["all_text_generate"]["mean_input_tokens"] > 2 * systems["first_token"]["mean_input_tokens"]
    assert systems["first_token"]["latency_ms"]["p50"] > 0 and systems["generate"]["throughput_rps"]["batch_16"] > 0
    assert_provenance(report["provenance"])
    # a bfloat16 backbone is measured beside float32 and int8 in the same run
    args = ["bench-latency", "--checkpoint", str(run_dir), "--data", str(toy_data_dir / "test.jsonl"), "--requests", "2", "--out", str(out)]
    assert main([*args, "--dtype", "bfloat16"]) == 0
    report = json.loads(out.read_text())
    assert report["dtype"] == "bfloat16"
    assert {"first_token", "first_token_float32", "first_token_int8", "generate_float32"} <= set(report["systems"])


def test_set_overrides_apply_and_bad_ones_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:

    assert parse_overrides(["post_rank.steps=7", "model.lora.target_modules=[q_proj, v_proj]", "max_valid_requests=null"]) == {
        "post_rank": {"steps": 7}, "model": {"lora": {"target_modules": ["q_proj", "v_proj"]}}, "max_valid_requests": None,
    }
    config = tmp_path / "c.yaml"
    config.write_text("post_rank: {steps: 3, learning_rate: 0.01}\n")
    loaded = TrainConfig.load(config, ["post_rank.steps=9", "model.relative_numeric=true"])
    assert (loaded.post_rank.steps, loaded.post_rank.learning_rate, loaded.model.relative_numeric) == (9, 0.01, True)
    with pytest.raises(DataError, match="expected KEY.PATH=VALUE"):
        parse_overrides(["post_rank.steps"])
    with pytest.raises(DataError, match=r"--set post_rank.stepz=3.*post_rank.stepz"):
        TrainConfig.load(config, ["post_rank.stepz=3"])
    assert main(["train", "--config", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--set", "seed=x"]) == 2
    assert "seed" in capsys.readouterr().err


def test_study_trains_a_variant_and_writes_validation_on_every_request(
    tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import yaml

    config_path = tmp_path / "recipe.yaml"
    tiny = tiny_train_config(adaptation={"steps": 1, "batch_size": 2}, post_rank={"steps": 2, "batch_size": 2})
    config_path.write_text(yaml.safe_dump(tiny.model_dump(mode="json")))
    out = tmp_path / "studies"
    argv = ["study", "--config", str(config_path), "--data", str(toy_data_dir), "--name", "plain", "--runs", str(tmp_path / "runs"),
            "--out", str(out), "--set", "model.bind_identifiers=false", "--set", "metrics_at=[2,4]"]
    assert main([*argv, "--metrics-at", "10"]) == 2
    assert "a recipe's cutoffs are its metrics_at" in capsys.readouterr().err
    assert main(argv) == 0
    assert "plain (first_token): ndcg@2" in capsys.readouterr().out
    record = json.loads((out / "plain.json").read_text())
    n_valid = len(read_requests(toy_data_dir / "valid.jsonl"))
    assert record["validation"]["n_requests"] == n_valid > tiny.max_valid_requests  # the whole split, not the config's prefix
    assert set(record["validation"]) >= {"generate", "first_token"}
    assert record["overrides"] == {"model": {"bind_identifiers": False}, "metrics_at": [2, 4]}
    assert set(record["validation"]["first_token"]["metrics"]) == {"ndcg@2", "ndcg@4", "mrr@2", "mrr@4", "map@2", "map@4"}
    assert record["config"]["model"]["bind_identifiers"] is False
    assert record["train_s"] > 0 and record["peak_rss_mb"] > 0
    assert record["provenance"]["machine"]["processor"]
    assert record["command"].startswith("llm4pr study --config ") and "--set model.bind_identifiers=false" in record["command"]


def test_baseline_study_scores_the_validation_split(toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from llm4pr.baselines import build_baseline
    from llm4pr.data.schema import FeatureSchema
    from llm4pr.evaluation.evaluate import evaluate_run

    out = tmp_path / "studies"
    assert main(["study", "--baseline", "lambdamart", "--data", str(toy_data_dir), "--name", "lm", "--out", str(out)]) == 0
    assert "lm (ranking): ndcg@3" in capsys.readouterr().out
    record = json.loads((out / "lm.json").read_text())
    schema = FeatureSchema.load(toy_data_dir / "schema.json")
    valid = read_requests(toy_data_dir / "valid.jsonl", schema)
    ranker = build_baseline("lambdamart").fit(read_requests(toy_data_dir / "train.jsonl", schema), schema, None, 0)
    assert record["validation"]["ranking"]["metrics"] == evaluate_run(valid, ranker.rank(valid))["metrics"]
    assert record["command"] == f"llm4pr study --baseline lambdamart --data {toy_data_dir} --name lm --out {out} --metrics-at 3 --metrics-at 5"
    assert main(["study", "--baseline", "initial", "--data", str(toy_data_dir), "--name", "at10", "--out", str(out), "--metrics-at", "10"]) == 0
    assert set(json.loads((out / "at10.json").read_text())["validation"]["ranking"]["metrics"]) == {"ndcg@10", "mrr@10", "map@10"}
    assert main(["study", "--baseline", "initial", "--data", str(toy_data_dir), "--name", "x", "--out", str(out), "--metrics-at", "0"]) == 2
    assert "cutoffs must be >= 1" in capsys.readouterr().err
    assert main(["study", "--baseline", "initial", "--data", str(toy_data_dir), "--name", "x", "--out", str(out), "--metrics-at", "5", "--metrics-at", "5"]) == 2
    assert "repeated cutoffs" in capsys.readouterr().err
    assert record["provenance"]["machine"]["processor"]
    assert main(["study", "--baseline", "nope", "--data", str(toy_data_dir), "--name", "x", "--out", str(out)]) == 2
    assert "unknown baseline 'nope'" in capsys.readouterr().err
    assert main(["study", "--baseline", "item_quality", "--data", str(toy_data_dir), "--name", "x", "--out", str(out)]) == 2
    assert "no numerical item feature 'avg_rating'" in capsys.readouterr().err  # the toy schema has none
    # --set gives the baseline's constructor arguments (recorded, and in the command), --seed its fitting seed
    argv = ["study", "--baseline", "lambdamart", "--data", str(toy_data_dir), "--name", "lm7", "--out", str(out), "--set", "num_leaves=7"]
    assert main([*argv, "--seed", "2"]) == 0
    record = json.loads((out / "lm7.json").read_text())
    assert record["params"]["num_leaves"] == 7 and record["seed"] == 2
    assert record["command"].endswith("--set num_leaves=7 --seed 2")
    assert main(["study", "--baseline", "item_quality", "--data", str(toy_data_dir), "--name", "x", "--out", str(out), "--set", "seed=1"]) == 2
    err = capsys.readouterr().err
    assert "study --baseline item_quality:" in err and "'seed'" in err  # not an argument of item_quality
    assert main(["study", "--config", "c.yaml", "--data", str(toy_data_dir), "--name", "x", "--seed", "1"]) == 2
    assert "--seed is for --baseline" in capsys.readouterr().err


def assert_provenance(record: dict) -> None:  # type: ignore[type-arg]
    """A result file's provenance: what code (commit, command, libraries) ran where (the CPU)."""
    assert record["machine"]["processor"] and record["machine"]["cpus"] >= 1
    assert record["libraries"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert {"transformers", "peft", "llm4pr"} <= record["libraries"].keys()
    assert "commit" in record and record["command"] and record["finished"].startswith("20")


def test_demo_trains_one_run_per_config_and_reports_the_test_split(
    tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`make demo` after an update that changed the defaults trains afresh instead of refusing the old run."""
    import shutil

    import yaml

    from llm4pr.demo import run_demo

    out = tmp_path / "demo"
    shutil.copytree(toy_data_dir, out / "data")
    (out / "data" / "prepare.json").write_text("{}")  # prepared: the demo reuses it
    config_path = tmp_path / "quick.yaml"
    small = {"adaptation": {"steps": 1, "batch_size": 2}, "post_rank": {"steps": 1, "batch_size": 2}}
    config_path.write_text(yaml.safe_dump(tiny_train_config(**small).model_dump(mode="json")))
    reports = run_demo(out, config_path)
    assert set(reports) == {"ranking-stage order", "llm4pr (generate)", "llm4pr (first_token)"}
    first_runs = sorted(p.name for p in out.glob("run-*"))
    assert len(first_runs) == 1
    report = json.loads((out / "demo_report.json").read_text())
    assert report["test_requests"] == len(read_requests(toy_data_dir / "test.jsonl")) and report["run"].endswith(first_runs[0])
    assert 0 < report["training_s"] <= report["wall_time_s"]
    assert_provenance(report["provenance"])
    # three requests by a stated rule, each explained: a random one, the largest gain, the largest loss
    shown = report["shown"]
    assert list(shown) == ["a random request (seed 0)", "the largest gain", "the largest loss"]
    gains = {why: entry["model_ndcg@3"] - entry["given_ndcg@3"] for why, entry in shown.items()}
    assert gains["the largest gain"] >= gains["a random request (seed 0)"] >= gains["the largest loss"]
    printed = capsys.readouterr().out
    assert printed.count(": ranked by llm4pr") == 3 and "qia_attention" in printed  # render_text, once a request
    assert f"llm4pr serve --checkpoint {out / first_runs[0]}" in printed
    config_path.write_text(yaml.safe_dump(tiny_train_config(seed=1, **small).model_dump(mode="json")))
    run_demo(out, config_path)
    assert len(list(out.glob("run-*"))) == 2
