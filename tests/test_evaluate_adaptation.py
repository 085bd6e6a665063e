"""`llm4pr evaluate-adaptation`: reading features back from a generated adaptation answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llm4pr.cli import main
from llm4pr.data.errors import DataError
from llm4pr.data.schema import FeatureSpec
from llm4pr.inference.adaptation import generate_answers, phrase_found, read_back, summarise
from llm4pr.model.llm4pr import PromptInputs
from llm4pr.model.prompts import adaptation_answer, collate, split_adaptation_answer
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.training.trainer import Trainer
from tests.tiny import TrainConfigFactory, tiny_model
from tests.toy import TOY_SCHEMA, toy_requests

REQUEST = toy_requests(1, seed=3)[0]


def test_the_answer_splits_into_the_described_parts() -> None:
    item = REQUEST.candidates[1]
    parts = split_adaptation_answer(adaptation_answer(TOY_SCHEMA, REQUEST.user, item))
    assert parts == {
        "user": TOY_SCHEMA.describe("user", REQUEST.user.features),
        "item": TOY_SCHEMA.describe("item", item.features),
        "rating": f"{item.label:g}",
    }
    assert split_adaptation_answer("The item: titled x. some words") == {"user": "", "item": "titled x. some words", "rating": ""}


def test_the_true_answer_reads_back_completely_and_a_wrong_one_does_not() -> None:
    item = REQUEST.candidates[0]
    answer = adaptation_answer(TOY_SCHEMA, REQUEST.user, item)
    reading = read_back(TOY_SCHEMA, REQUEST, 0, answer)
    assert all(x["recovered"] for x in reading["features"].values())
    assert "item.vec" not in reading["features"]  # embeddings are never written in words
    assert reading["features"]["item.quality"]["abs_error"] == pytest.approx(abs(round(item.features["quality"], 1) - item.features["quality"]))
    assert reading["rating"] == item.label

    wrong_quality = f"quality {item.features['quality'] + 0.5:.1f}"
    wrong = answer.replace(f"quality {item.features['quality']:.1f}", wrong_quality).replace(f"Rating: {item.label:g}", "Rating: 9")
    reading = read_back(TOY_SCHEMA, REQUEST, 0, wrong)
    assert not reading["features"]["item.quality"]["recovered"]
    assert reading["features"]["item.quality"]["abs_error"] == pytest.approx(0.5, abs=0.051)
    assert reading["features"]["item.title"]["recovered"] and reading["rating"] == 9.0
    # the user's phrases are looked for in the user's part only
    swapped = read_back(TOY_SCHEMA, REQUEST, 0, answer.replace("The user:", "The item:", 1))
    assert not any(x["recovered"] for name, x in swapped["features"].items() if name.startswith("user."))


def test_a_phrase_is_found_only_whole() -> None:
    spec = FeatureSpec(name="count", owner="item", kind="numerical", description="rated {value} times")
    assert phrase_found(spec, 6, "genres Drama, rated 6 times")
    assert not phrase_found(spec, 6, "genres Drama, rated 61 times")
    rating = FeatureSpec(name="avg", owner="item", kind="numerical", description="average rating {value:.1f}")
    assert phrase_found(rating, 4.1, "average rating 4.1, rated 6 times")
    assert not phrase_found(rating, 4.1, "average rating 4.15")
    assert not phrase_found(rating, 4.1, "average rating 14.1")


def test_summary_pools_features_by_kind_and_scores_the_rating() -> None:
    requests = toy_requests(4, seed=5)
    readings = [read_back(TOY_SCHEMA, r, 0, adaptation_answer(TOY_SCHEMA, r.user, r.candidates[0])) for r in requests[:3]]
    readings.append(read_back(TOY_SCHEMA, requests[3], 0, "The user: nothing useful. Rating: 1"))
    report = summarise(TOY_SCHEMA, readings)
    assert report["n_items"] == 4
    assert report["by_kind"]["categorical"] == pytest.approx(0.75)
    titles = [r.candidates[0].features["title"] for r in requests]
    assert report["features"]["item.title"] == {"kind": "text", "n": 4, "recovered": 0.75, "most_common_share": max(map(titles.count, titles)) / 4}
    assert report["features"]["user.age"]["number_given"] == pytest.approx(0.75)
    labels = [r.candidates[0].label for r in requests]
    assert report["rating"]["given"] == 1.0
    assert report["rating"]["accuracy"] == pytest.approx((3 + (labels[3] == 1.0)) / 4)
    assert report["rating"]["most_common_rating_accuracy"] == max(map(labels.count, labels)) / 4


def test_greedy_answers_continue_each_left_padded_prompt() -> None:
    """HF `generate` from soft-token embeddings must see the same positions as the model's own
    forward pass: its first tokens are the forward pass's argmax, for prompts of unequal length."""
    requests = toy_requests(6, seed=1)
    model, builder = tiny_model(TOY_SCHEMA, requests)
    pairs = [(requests[0], 0), (requests[1].model_copy(update={"query": "a much longer query than the other one"}), 2)]
    answers = generate_answers(model, builder, pairs, max_new_tokens=3, batch_size=2)
    batch = collate([builder.feature_adaptation(r.query) for r, _ in pairs], builder.tokenizer.pad_token_id)
    inputs = [PromptInputs(query=r.query, user=r.user, item=r.candidates[c]) for r, c in pairs]
    with torch.inference_mode():
        first = model(batch, inputs).logits[:, -1].argmax(-1)
    for answer, token in zip(answers, first.tolist(), strict=True):
        expected = builder.tokenizer.decode([token], skip_special_tokens=True)
        assert answer.startswith(expected) and "Describe the user" not in answer


def test_evaluate_adaptation_command_on_a_run_folder(
    tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_train_config(adaptation={"steps": 2, "batch_size": 4})
    run_dir = tmp_path / "run"
    Trainer(config, toy_data_dir, run_dir, progress=False).run(stages=("adaptation",))
    assert resolve_checkpoint(run_dir, stage_dir="adaptation") == run_dir / "adaptation"
    out = tmp_path / "fa.json"
    args = ["evaluate-adaptation", "--checkpoint", str(run_dir), "--data", str(toy_data_dir / "valid.jsonl"), "--items", "3", "--out", str(out)]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["n_items"] == 3 and report["checkpoint"] == str(run_dir / "adaptation")
    assert set(report["features"]) == {"user.gender", "user.age", "user.favourite", "item.title", "item.genres", "item.quality"}
    assert all(0.0 <= share <= 1.0 for share in report["by_kind"].values())
    assert report["examples"][0]["expected"].startswith("The user: gender ")
    assert "feature adaptation read-back, 3 items" in capsys.readouterr().out
    assert main([*args[:-4], "--items", "0"]) == 2
    assert "--items must be at least 1" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["evaluate-adaptation", "--checkpoint", str(run_dir), "--data", str(empty)]) == 2
    assert f"{empty}: no requests to read back" in capsys.readouterr().err


def test_a_folder_without_a_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{tmp_path}: no llm4pr checkpoint here .expected config.json or adaptation/config.json"):
        resolve_checkpoint(tmp_path, stage_dir="adaptation")
