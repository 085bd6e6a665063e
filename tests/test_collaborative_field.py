"""The collaborative field: matrix-factorisation features that no request fits on its own labels.

Built on the MovieLens fixture (7 users, 97 ratings) with a small model, so that every fit takes
milliseconds; the full-size defaults are the `mf` baseline's.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

pytest.importorskip("surprise")

from llm4pr.baselines.collaborative import MatrixFactorisationRanker  # noqa: E402
from llm4pr.baselines.collaborative_field import (  # noqa: E402
    MF_ITEM_VECTOR,
    MF_SCORE,
    MF_USER_VECTOR,
    CollaborativeField,
    add_collaborative_field,
)
from llm4pr.baselines.features import Featuriser  # noqa: E402
from llm4pr.baselines.registry import load_baseline  # noqa: E402
from llm4pr.cli import main  # noqa: E402
from llm4pr.data.errors import DataError  # noqa: E402
from llm4pr.data.jsonl import read_requests  # noqa: E402
from llm4pr.data.movielens import prepare_movielens  # noqa: E402
from llm4pr.data.requests import PostRankRequest  # noqa: E402
from llm4pr.data.schema import FeatureSchema  # noqa: E402
from llm4pr.features.text_encoder import HashingTextEncoder  # noqa: E402

if TYPE_CHECKING:
    from tests.tiny import TrainConfigFactory

ML100K = Path(__file__).parent / "fixtures" / "movielens" / "grouplens-100k"
MF = {"factors": 4, "epochs": 40}


def _splits(folder: Path) -> tuple[FeatureSchema, dict[str, list[PostRankRequest]]]:
    schema = FeatureSchema.load(folder / "schema.json")
    return schema, {split: read_requests(folder / f"{split}.jsonl", schema) for split in ("train", "valid", "test")}


@pytest.fixture(scope="module")
def movielens(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml")
    prepare_movielens(ML100K, out)
    return out


@pytest.fixture(scope="module")
def field(movielens: Path) -> CollaborativeField:
    schema, splits = _splits(movielens)
    return CollaborativeField.fit(splits["train"], schema, folds=3, seed=0, vectors=True, **MF)


def _by_id(requests: list[PostRankRequest]) -> dict[str, PostRankRequest]:
    return {request.request_id: request for request in requests}


def test_held_out_requests_get_the_model_fitted_on_every_training_pair(movielens: Path, field: CollaborativeField) -> None:
    schema, splits = _splits(movielens)
    full = MatrixFactorisationRanker(**MF).fit(splits["train"], schema, seed=0)
    for split in ("valid", "test"):
        added = field.add(splits[split], training=False)
        for request in added:
            expected = np.round(full.score([request])[0], 4)
            assert [c.features[MF_SCORE] for c in request.candidates] == pytest.approx(expected, abs=1e-9)
            user_vector = full.user_vector(request.user.id)
            assert (MF_USER_VECTOR in request.user.features) == (user_vector is not None)  # unknown users: missing
            if user_vector is not None:
                assert request.user.features[MF_USER_VECTOR] == pytest.approx(user_vector, abs=1e-5)
            for item in (*request.history, *request.candidates):
                vector = full.item_vector(item.id)
                assert (MF_ITEM_VECTOR in item.features) == (vector is not None), item.id  # unknown items: missing
                if vector is not None:
                    assert item.features[MF_ITEM_VECTOR] == pytest.approx(vector, abs=1e-5)


def test_training_requests_are_scored_out_of_fold(movielens: Path, field: CollaborativeField) -> None:
    schema, splits = _splits(movielens)
    full = MatrixFactorisationRanker(**MF).fit(splits["train"], schema, seed=0)
    added = field.add(splits["train"], training=True)
    differs = 0
    for request in added:
        scores = [c.features[MF_SCORE] for c in request.candidates]
        differs += not np.allclose(scores, np.round(full.score([request])[0], 4))
        model = field.fold_models[request.request_id]
        held_out = {(r.user.id, c.id) for r in splits["train"] if field.fold_models[r.request_id] is model for c in r.candidates}
        assert all(model.item_vector(c.id) is None or (request.user.id, c.id) in held_out for c in request.candidates)
    assert differs == len(added)  # the in-sample model would have given other scores
    assert len({id(model) for model in field.fold_models.values()}) == 3
    with pytest.raises(ValueError, match="not among those the field was fitted on"):
        field.add(splits["valid"], training=True)


def test_a_training_requests_own_labels_never_reach_its_collaborative_features(tmp_path: Path, movielens: Path) -> None:
    """All labels of training request u3-s1 changed (in the raw file, so its later history too):
    its score is unchanged, and so is what its vectors say (every user-item dot product); the
    vectors themselves may turn with the shared rotation into the full model's space."""
    folder = tmp_path / "raw"
    shutil.copytree(ML100K, folder)
    schema, splits = _splits(movielens)
    target = _by_id(splits["train"])["u3-s1"]
    ids = {c.id for c in target.candidates}
    lines = []
    for line in (folder / "u.data").read_text().splitlines():
        user, item, rating, timestamp = line.split("\t")
        lines.append("\t".join((user, item, str(int(rating) % 5 + 1) if user == "3" and item in ids else rating, timestamp)))
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    prepare_movielens(folder, tmp_path / "changed")
    changed_schema, changed_splits = _splits(tmp_path / "changed")
    assert [c.label for c in _by_id(changed_splits["train"])["u3-s1"].candidates] != [c.label for c in target.candidates]

    def features(folder_schema: FeatureSchema, train: list[PostRankRequest]) -> PostRankRequest:
        field = CollaborativeField.fit(train, folder_schema, folds=3, seed=0, vectors=True, **MF)
        return _by_id(field.add(train, training=True))["u3-s1"]

    before, after = features(schema, splits["train"]), features(changed_schema, changed_splits["train"])
    assert [c.features[MF_SCORE] for c in after.candidates] == [c.features[MF_SCORE] for c in before.candidates]

    def dot_products(request: PostRankRequest) -> np.ndarray:
        user = np.asarray(request.user.features[MF_USER_VECTOR])
        return np.asarray([user @ np.asarray(i.features[MF_ITEM_VECTOR]) for i in request.history if MF_ITEM_VECTOR in i.features])

    assert dot_products(after) == pytest.approx(dot_products(before), abs=1e-3)  # features are rounded to 5 decimals


def test_fold_models_are_rotated_into_the_full_models_space(movielens: Path, field: CollaborativeField) -> None:
    schema, splits = _splits(movielens)
    model = next(iter(field.fold_models.values()))
    unaligned = MatrixFactorisationRanker(**MF).fit(splits["train"], schema, seed=1)  # another fit: another space
    aligned = unaligned.aligned_to(field.full)
    assert aligned.score(splits["test"]) == [pytest.approx(s) for s in unaligned.score(splits["test"])]  # a rotation
    items = [i for i in field.full._items if all(m.item_vector(i) is not None for m in (unaligned, model))]

    def distance(ranker: MatrixFactorisationRanker) -> float:
        return float(np.mean([np.linalg.norm(ranker.item_vector(i) - field.full.item_vector(i)) for i in items]))

    assert distance(aligned) < distance(unaligned)
    assert distance(model) < distance(unaligned)


def test_the_schema_declares_the_features_and_every_ranker_reads_them(movielens: Path, field: CollaborativeField) -> None:
    schema, splits = _splits(movielens)
    extended = field.schema(schema)
    specs = {spec.name: spec for spec in extended.features}
    assert (specs[MF_SCORE].owner, specs[MF_SCORE].kind.value) == ("item", "numerical")
    assert (specs[MF_USER_VECTOR].owner, specs[MF_USER_VECTOR].dim) == ("user", 4)
    assert (specs[MF_ITEM_VECTOR].owner, specs[MF_ITEM_VECTOR].dim) == ("item", 4)
    train = field.add(splits["train"], training=True)
    plain, with_field = Featuriser(schema, HashingTextEncoder()), Featuriser(extended, HashingTextEncoder())
    plain.fit_transform(splits["train"])
    with_field.fit_transform(train)
    assert with_field.dim > plain.dim + 2 * 4  # the score, both vectors and their crosses
    score_only = CollaborativeField(field.full, field.fold_models, vectors=False).schema(schema)
    assert [spec.name for spec in score_only.features][-1] == MF_SCORE and MF_USER_VECTOR not in {s.name for s in score_only.features}
    with pytest.raises(ValueError, match="already has collaborative features"):
        CollaborativeField.fit(train, extended, folds=3, **MF)


def test_command_writes_the_folder_and_a_saved_model_that_computes_the_features(tmp_path: Path, movielens: Path) -> None:
    out = tmp_path / "cf"
    assert main(["data", "collaborative", "--data", str(movielens), "--out", str(out), "--folds", "3", "--factors", "4", "--epochs", "40"]) == 0
    schema, splits = _splits(out)  # the files validate against their schema
    assert {spec.name for spec in schema.features} >= {MF_SCORE} and MF_USER_VECTOR not in {s.name for s in schema.features}
    saved = load_baseline(out / "mf")
    for request in splits["test"]:
        assert [c.features[MF_SCORE] for c in request.candidates] == pytest.approx(np.round(saved.score([request])[0], 4), abs=1e-9)
    report = (out / "collaborative.json").read_text()
    assert '"folds": 3' in report and '"commit"' in report and '"machine"' in report
    assert main(["data", "collaborative", "--data", str(out), "--out", str(tmp_path / "again"), "--folds", "3"]) == 2
    with pytest.raises(DataError, match="not a prepared data folder"):
        add_collaborative_field(tmp_path / "nothing", tmp_path / "x")


def test_a_checkpoint_and_a_baseline_trained_with_the_field_rank_alike_in_a_fresh_process(
    tmp_path: Path, movielens: Path, tiny_train_config: "TrainConfigFactory"
) -> None:
    """The field reaches both families as schema features: a tiny LLM4PR trained on it and a
    LambdaMART fitted on it, each saved, rank the test split in a new process as they do here."""
    import json
    import subprocess
    import sys

    from llm4pr.baselines.registry import fit_and_save_baseline
    from llm4pr.inference.ranker import LLM4PRRanker
    from llm4pr.training.trainer import Trainer

    data = tmp_path / "cf"
    add_collaborative_field(movielens, data, folds=3, vectors=True, **MF)
    schema, splits = _splits(data)
    run_dir, lambdamart = tmp_path / "run", tmp_path / "lambdamart"
    config = tiny_train_config(adaptation={"steps": 1, "batch_size": 2}, post_rank={"steps": 2, "batch_size": 2})
    Trainer(config, data, run_dir, progress=False).run()
    fit_and_save_baseline("lambdamart", data, lambdamart, {"text_encoder": "hashing", "text_dim": 4, "n_estimators": 5, "min_data_in_leaf": 1})
    llm = LLM4PRRanker.from_pretrained(run_dir, mode="first_token")
    assert MF_SCORE in llm.model.item_encoder.numeric_names  # QIA reads the score among the numbers
    assert {MF_ITEM_VECTOR} <= {spec.name for spec in llm.model.item_encoder.specs}
    here = {
        run_dir: llm.rank(splits["test"]),
        lambdamart: load_baseline(lambdamart).rank(splits["test"]),
    }
    assert {MF_SCORE, MF_USER_VECTOR, MF_ITEM_VECTOR} <= {spec.name for spec in load_baseline(lambdamart).schema.features}  # type: ignore[union-attr]
    for folder, run in here.items():
        out = tmp_path / f"{folder.name}.jsonl"
        command = [sys.executable, "-m", "llm4pr", "rank", "--checkpoint", str(folder), "--input", str(data / "test.jsonl"),
                   "--output", str(out), "--mode", "first_token"]
        subprocess.run(command, check=True, capture_output=True)
        fresh = [json.loads(line) for line in out.read_text().splitlines()]
        assert [(r.request_id, r.ranking) for r in run] == [(f["request_id"], f["ranking"]) for f in fresh], folder.name
        assert not any(r.fallback for r in run)
