"""The baselines on the toy problem (labels follow item quality and user-genre affinity, the
ranking-stage order is random): every baseline must learn the order, deterministically, on lists
of any length; the ranking-stage signals and the reorder protocol behave as documented."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from llm4pr.baselines import (
    BASELINES,
    RANKING_STAGE_FEATURES,
    Featuriser,
    ItemQualityRanker,
    LambdaMARTRanker,
    RankingStage,
    build_baseline,
    load_baseline,
    reorder_by_ranking_stage,
)
from llm4pr.baselines.base import NotFittedError
from llm4pr.baselines.features import RANKING_STAGE_SCORE
from llm4pr.baselines.ltr import fold_assignment, out_of_fold
from llm4pr.data.errors import DataError
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.features.text_encoder import HashingTextEncoder
from llm4pr.rankers.base import InitialOrderRanker
from tests.toy import TOY_SCHEMA, toy_requests

torch.set_num_threads(1)

NEURAL = {"text_encoder": "hashing", "text_dim": 8, "hidden": 32, "epochs": 8}
SETTINGS: dict[str, dict[str, Any]] = {
    "initial": {},
    "random": {},
    "bi_encoder": {"text_encoder": "hashing"},
    "item_quality": {"feature": "quality"},
    "mf": {"factors": 8, "epochs": 30},
    "ltr_dnn": NEURAL,
    "lambdamart": {"text_encoder": "hashing", "text_dim": 8, "n_estimators": 50, "n_jobs": 1},
    "dlcm": NEURAL,
    "setrank": NEURAL,
    "prm": NEURAL,
    "seq2slate": NEURAL,
}
LEARNED = [name for name in BASELINES if name not in ("initial", "random", "bi_encoder")]  # the toy queries say nothing of the items


def ndcg3(requests: Sequence[PostRankRequest], run: Sequence[RankResult]) -> float:
    return evaluate_run(requests, run)["metrics"]["ndcg@3"]


def assert_permutations(requests: Sequence[PostRankRequest], run: Sequence[RankResult]) -> None:
    assert [r.request_id for r in run] == [q.request_id for q in requests]
    for request, result in zip(requests, run, strict=True):
        assert sorted(result.ranking) == sorted(request.candidate_ids)
        assert not result.fallback


@pytest.fixture(scope="module")
def split() -> tuple[list[PostRankRequest], list[PostRankRequest]]:
    requests = toy_requests(400, seed=1)  # one item table, so train and test share the items
    return requests[:300], requests[300:]


@pytest.fixture(scope="module")
def fitted(split: tuple[list[PostRankRequest], list[PostRankRequest]]) -> dict[str, Any]:
    train, _ = split
    return {name: build_baseline(name, **SETTINGS[name]).fit(train, TOY_SCHEMA, seed=0) for name in BASELINES}


def test_settings_cover_every_baseline() -> None:
    assert set(SETTINGS) == set(BASELINES)


@pytest.mark.parametrize("name", LEARNED)
def test_baseline_beats_the_ranking_stage_order(name: str, fitted: dict[str, Any], split: Any) -> None:
    _, test = split
    run = fitted[name].rank(test)
    assert_permutations(test, run)
    baseline = ndcg3(test, InitialOrderRanker().rank(test))
    assert ndcg3(test, run) > baseline + 0.15, (name, ndcg3(test, run), baseline)
    assert fitted[name].uses_ranking_stage_signals is False


@pytest.mark.parametrize("name", LEARNED)
def test_same_seed_same_rankings(name: str, fitted: dict[str, Any], split: Any) -> None:
    train, test = split
    again = build_baseline(name, **SETTINGS[name]).fit(train, TOY_SCHEMA, seed=0).rank(test)
    first = fitted[name].rank(test)
    assert [r.ranking for r in again] == [r.ranking for r in first]
    assert [r.scores for r in again] == [r.scores for r in first]


@pytest.mark.parametrize("name", list(BASELINES))
def test_long_lists(name: str) -> None:
    requests = toy_requests(50, n_candidates=30, seed=4)
    settings = {**SETTINGS[name], "epochs": 2} if "epochs" in SETTINGS[name] else SETTINGS[name]
    ranker = build_baseline(name, **settings).fit(requests[:40], TOY_SCHEMA, valid_requests=requests[40:45])
    assert_permutations(requests[45:], ranker.rank(requests[45:]))


def test_random_order_depends_on_the_seed_and_the_request_only(split: Any) -> None:
    _, test = split
    first = build_baseline("random").fit([], TOY_SCHEMA, seed=0)
    rankings = [r.ranking for r in first.rank(test)]
    assert [first.rank([request])[0].ranking for request in reversed(test)] == rankings[::-1]  # alone, in any order
    assert [r.ranking for r in build_baseline("random").fit([], TOY_SCHEMA, seed=1).rank(test)] != rankings
    assert rankings != [request.candidate_ids for request in test]
    positions = np.asarray([[r.candidate_ids.index(i) for i in ranking] for r, ranking in zip(test, rankings, strict=True)])
    assert np.abs(positions.mean(axis=0) - positions.mean()).max() < 1.5  # no position wins on average
    with pytest.raises(NotFittedError):
        build_baseline("random").rank(test)


def test_setrank_is_permutation_invariant(fitted: dict[str, Any], split: Any) -> None:
    _, test = split
    rng = random.Random(0)
    shuffled = [r.model_copy(update={"candidates": rng.sample(r.candidates, len(r.candidates))}) for r in test]
    original = {r.request_id: dict(zip(r.ranking, r.scores or [])) for r in fitted["setrank"].rank(test)}
    for result in fitted["setrank"].rank(shuffled):
        for item_id, score in zip(result.ranking, result.scores or [], strict=True):
            assert score == pytest.approx(original[result.request_id][item_id], abs=1e-5)


def test_rank_before_fit_is_an_error(split: Any) -> None:
    with pytest.raises(NotFittedError):
        build_baseline("setrank", **NEURAL).rank(split[1])
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("nope")


def test_a_failing_request_falls_back_alone(split: Any) -> None:
    class Flaky(ItemQualityRanker):
        def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
            if any(r.request_id == "q301" for r in requests):
                raise RuntimeError("boom")
            return super().score(requests)

    _, test = split
    run = Flaky("quality").fit(test, TOY_SCHEMA).rank(test[:3])
    assert [r.fallback for r in run] == [False, True, False]
    assert run[1].ranking == test[1].candidate_ids and "boom" in (run[1].error or "")


@pytest.mark.parametrize("name", list(BASELINES))
def test_a_saved_baseline_loads_back_and_ranks_alike(name: str, fitted: dict[str, Any], split: Any, tmp_path: Path) -> None:
    _, test = split
    fitted[name].save(tmp_path / name)
    manifest = json.loads((tmp_path / name / "ranker.json").read_text())
    assert (manifest["format"], manifest["kind"], manifest["schema"]["dataset"]) == ("llm4pr-ranker", name, "toy")
    assert manifest["params"] == fitted[name].params and "machine" in manifest["provenance"]
    loaded = load_baseline(tmp_path / name)
    assert type(loaded) is type(fitted[name]) and loaded.schema == TOY_SCHEMA
    before, after = fitted[name].rank(test), loaded.rank(test, mode="first_token")  # one ranking, whatever the mode
    assert [r.ranking for r in after] == [r.ranking for r in before]
    assert [r.scores for r in after] == [r.scores for r in before]


def test_saving_refuses_what_it_cannot_write_and_loading_names_the_folder(fitted: dict[str, Any], split: Any, tmp_path: Path) -> None:
    train, _ = split
    with pytest.raises(NotFittedError):
        build_baseline("lambdamart").save(tmp_path / "unfitted")
    unnamed = LambdaMARTRanker(text_encoder=HashingTextEncoder(), text_dim=8, n_estimators=5, n_jobs=1).fit(train[:50], TOY_SCHEMA)
    with pytest.raises(ValueError, match="pass a text encoder by name"):
        unnamed.save(tmp_path / "unnamed")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not a saved ranker"):
        fitted["lambdamart"].save(tmp_path / "notes")
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"  # never replaced
    fitted["item_quality"].save(tmp_path / "saved")
    fitted["lambdamart"].save(tmp_path / "saved")  # a saved ranker is replaced
    (tmp_path / "saved" / "model.txt").unlink()
    with pytest.raises(DataError, match=f"{tmp_path / 'saved'}: cannot load the saved lambdamart ranker"):
        load_baseline(tmp_path / "saved")


def test_item_quality_puts_missing_last_and_keeps_ties_in_order() -> None:
    request = toy_requests(1, n_candidates=4)[0]
    values = [2.0, None, 3.0, 2.0]
    candidates = [
        c.model_copy(update={"features": {**c.features, "quality": v}}) for c, v in zip(request.candidates, values)
    ]
    request = request.model_copy(update={"candidates": candidates})
    ids = request.candidate_ids
    ranking = ItemQualityRanker("quality").fit([request], TOY_SCHEMA).rank([request])[0].ranking
    assert ranking == [ids[2], ids[0], ids[3], ids[1]]


def test_bi_encoder_ranks_by_the_cosine_of_query_and_text() -> None:
    encoder = HashingTextEncoder()
    requests = toy_requests(6, n_candidates=6, seed=5)
    # each query is the title of the candidate shown last, which must come first
    requests = [r.model_copy(update={"query": r.candidates[-1].features["title"]}) for r in requests]
    ranker = build_baseline("bi_encoder", text_encoder="hashing").fit(requests, TOY_SCHEMA)
    for request, result in zip(requests, ranker.rank(requests), strict=True):
        assert result.ranking[0] == request.candidates[-1].id and result.scores is not None
        assert result.scores[0] == pytest.approx(1.0) and result.mode == "bi_encoder"
        vectors = encoder.encode([request.query, *(c.features["title"] for c in request.candidates)])
        by_hand = dict(zip(request.candidate_ids, (vectors[1:] @ vectors[0]).tolist(), strict=True))
        assert dict(zip(result.ranking, result.scores, strict=True)) == pytest.approx(by_hand, abs=1e-6)


def test_bi_encoder_puts_candidates_without_the_text_last_and_names_a_bad_feature() -> None:
    request = toy_requests(1, n_candidates=5, seed=6)[0]
    untitled = {0, 2}  # without a title: last, in their input order
    candidates = [
        c.model_copy(update={"features": {k: v for k, v in c.features.items() if k != "title" or i not in untitled}})
        for i, c in enumerate(request.candidates)
    ]
    request = request.model_copy(update={"candidates": candidates})
    ranking = build_baseline("bi_encoder", text_encoder="hashing").fit([request], TOY_SCHEMA).rank([request])[0].ranking
    assert ranking[-2:] == [request.candidates[0].id, request.candidates[2].id]
    with pytest.raises(ValueError, match="no item text feature 'genres' in the schema \\(its text features: title\\)"):
        build_baseline("bi_encoder", text_encoder="hashing", feature="genres").fit([request], TOY_SCHEMA)
    without_text = FeatureSchema(dataset="toy", features=tuple(f for f in TOY_SCHEMA.features if f.name != "title"))
    with pytest.raises(ValueError, match="the schema has no item text feature"):
        build_baseline("bi_encoder", text_encoder="hashing").fit([], without_text)
    with pytest.raises(NotFittedError):
        build_baseline("bi_encoder", text_encoder="hashing").rank([request])


def test_featuriser_handles_unseen_and_missing_values() -> None:
    train = toy_requests(30, seed=1)
    odd = toy_requests(1, seed=9)[0]
    user = odd.user.model_copy(update={"features": {"gender": "X"}})  # unseen value, missing age
    candidates = [c.model_copy(update={"features": {"genres": ["Unknown"]}}) for c in odd.candidates]
    odd = odd.model_copy(update={"user": user, "history": [], "candidates": candidates})
    featuriser = Featuriser(TOY_SCHEMA, "hashing", text_dim=4)
    featuriser.fit_transform(train)
    (vectors,) = featuriser.transform([odd])
    assert vectors.shape == (5, featuriser.dim) and np.isfinite(vectors).all()
    assert not featuriser.uses_ranking_stage_signals


def test_out_of_fold_scores_come_from_models_that_never_saw_the_request() -> None:
    requests = toy_requests(23, seed=1)
    seen_by: dict[str, set[str]] = {}

    def fit_predict(train: list[PostRankRequest], held_out: list[PostRankRequest]) -> list[np.ndarray]:
        trained_on = {r.request_id for r in train}
        for request in held_out:
            seen_by[request.request_id] = trained_on
        return [np.full(len(r.candidates), float(len(trained_on))) for r in held_out]

    scores = out_of_fold(requests, folds=4, seed=3, fit_predict=fit_predict)
    assert len(scores) == len(requests) and set(seen_by) == {r.request_id for r in requests}
    for request in requests:
        assert request.request_id not in seen_by[request.request_id]
        assert len(seen_by[request.request_id]) >= len(requests) - 6  # the other three folds
    assignment = fold_assignment(23, 4, seed=3)
    assert sorted(np.bincount(assignment).tolist()) == [5, 6, 6, 6]
    assert (assignment == fold_assignment(23, 4, seed=3)).all()


def test_reorder_by_ranking_stage_is_a_stable_sort() -> None:
    request = toy_requests(1, n_candidates=5)[0]
    ids = request.candidate_ids
    (reordered,) = reorder_by_ranking_stage([request], [[0.5, 2.0, 0.5, 2.0, 1.0]])
    assert reordered.candidate_ids == [ids[1], ids[3], ids[4], ids[0], ids[2]]
    assert request.candidate_ids == ids  # the input is untouched
    with pytest.raises(ValueError):
        reorder_by_ranking_stage([request], [[1.0]])


def test_ranking_stage_signals_and_order(split: Any) -> None:
    train, test = split
    train = train[:120]
    stage = RankingStage.fit(train, TOY_SCHEMA, valid_requests=test[:20], folds=3, seed=0, **NEURAL)
    prepared_train = stage.prepare(train, training=True, order="ranking_stage")
    prepared_test = stage.prepare(test, training=False, order="ranking_stage")
    for request, prepared, oof in zip(train, prepared_train, stage.train_scores, strict=True):
        expected = sorted(zip(request.candidate_ids, oof), key=lambda pair: -pair[1])
        got = [(c.id, c.features[RANKING_STAGE_SCORE]) for c in prepared.candidates]
        assert got == [(i, pytest.approx(s)) for i, s in expected]
        assert not any(name in c.features for c in request.candidates for name in RANKING_STAGE_FEATURES)
    assert {s.name for s in stage.schema.features} >= RANKING_STAGE_FEATURES
    assert 1 <= stage.model.best_epoch <= NEURAL["epochs"]
    with pytest.raises(ValueError, match="training requests"):
        stage.scores(test, training=True)
    ranker = LambdaMARTRanker(**SETTINGS["lambdamart"]).fit(prepared_train, stage.schema)
    assert ranker.uses_ranking_stage_signals
    assert_permutations(prepared_test, ranker.rank(prepared_test))


def taste_requests(n_users: int, pairs: Sequence[tuple[int, Sequence[int]]], rated: bool = True) -> list[PostRankRequest]:
    """Two camps of users with opposite tastes over items 0-9: even users love items 0-4 (label 5)
    and hate 5-9 (label 1), odd users the reverse, so every item's average is the same."""
    requests = []
    for user, items in pairs:
        assert user < n_users
        liked = (lambda i: i < 5) if user % 2 == 0 else (lambda i: i >= 5)
        candidates = [{"id": f"i{i}", "features": {}, **({"label": 5.0 if liked(i) else 1.0} if rated else {})} for i in items]
        requests.append(PostRankRequest.model_validate(
            {"request_id": f"u{user}-{'-'.join(map(str, items))}", "query": "q", "user": {"id": f"u{user}", "features": {}},
             "history": [], "candidates": candidates}
        ))
    return requests


def test_matrix_factorisation_learns_each_users_taste_that_item_averages_cannot() -> None:
    rng = random.Random(0)
    train = taste_requests(20, [(u, rng.sample(range(10), 5)) for u in range(20) for _ in range(4)])
    test = taste_requests(20, [(u, [0, 9, 1, 8, 2, 7]) for u in range(20)])
    run = build_baseline("mf", factors=4, epochs=100, learning_rate=0.02, regularisation=0.01).fit(train, TOY_SCHEMA, seed=0).rank(test)
    for request, result in zip(test, run, strict=True):
        first_half = {"i0", "i1", "i2"} if request.user.id in {f"u{u}" for u in range(0, 20, 2)} else {"i7", "i8", "i9"}
        assert set(result.ranking[:3]) == first_half, (request.user.id, result.ranking)
    assert ndcg3(test, run) == pytest.approx(1.0)


def test_matrix_factorisation_falls_back_to_item_biases_then_the_given_order() -> None:
    from llm4pr.baselines.collaborative import labelled_pairs

    train = taste_requests(4, [(0, [0, 1, 5]), (1, [0, 5, 6]), (2, [1, 2, 7])])
    train[0] = train[0].model_copy(update={"history": [train[1].candidates[1].model_copy(update={"id": "i3"}),
                                                       train[1].candidates[1].model_copy(update={"id": "i4", "label": None})]})
    pairs = labelled_pairs(train)
    assert pairs[("u0", "i3")] == 5.0 and ("u0", "i4") not in pairs  # a labelled history item counts, an unlabelled one not
    ranker = build_baseline("mf", factors=2, epochs=5).fit(train, TOY_SCHEMA, seed=0)
    newcomer = taste_requests(9, [(8, [0, 1, 5])])[0]  # an unknown user: mean + item bias
    scores = ranker.score([newcomer])[0]
    state = ranker._state
    expected = [state["mean"][0] + state["item_bias"][list(state["items"]).index(i)] for i in ("i0", "i1", "i5")]
    assert scores == pytest.approx(expected)
    unknown = taste_requests(9, [(8, [30, 20, 10])])[0]  # nothing known: equal scores keep the given order
    assert ranker.rank([unknown])[0].ranking == ["i30", "i20", "i10"]


def test_matrix_factorisation_checks_its_arguments_and_labels(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys

    with pytest.raises(ValueError, match="factors and epochs must be at least 1"):
        build_baseline("mf", factors=0)
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        build_baseline("mf", learning_rate=0.0)
    with pytest.raises(ValueError, match="no labelled"):
        build_baseline("mf").fit(taste_requests(2, [(0, [0, 1])], rated=False), TOY_SCHEMA)
    train = taste_requests(4, [(u, [0, 1, 5, 6]) for u in range(4)])
    ranker = build_baseline("mf", factors=2, epochs=5).fit(train, TOY_SCHEMA, seed=0)
    ranker.save(tmp_path / "mf")
    monkeypatch.setitem(sys.modules, "surprise", None)  # a saved model scores without scikit-surprise
    assert load_baseline(tmp_path / "mf").score(train) == [pytest.approx(s) for s in ranker.score(train)]
    with pytest.raises(DataError, match=r"needs scikit-surprise and pandas: pip install 'llm4pr\[baselines\]'"):
        build_baseline("mf").fit(train, TOY_SCHEMA)
