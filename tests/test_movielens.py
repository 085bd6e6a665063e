"""MovieLens preparation: layouts, the paper's protocol, leakage, determinism and bad rows.

The fixtures under `fixtures/movielens/` hold the same 97 ratings of 7 users (3 to 25 ratings
each, shuffled, with timestamp ties) in the three raw layouts. Expectations are recomputed here
from `u.data` with an independent few lines of code, not read back from the module.
"""

from __future__ import annotations

import importlib.util
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests
from llm4pr.data.movielens import RECBOLE_INSTALL, prepare_movielens
from llm4pr.data.movielens_protocol import PSEUDO_QUERIES
from llm4pr.data.schema import FeatureSchema

FIXTURES = Path(__file__).parent / "fixtures" / "movielens"
ML100K = FIXTURES / "grouplens-100k"
SPLITS = ("train", "valid", "test")
OUTPUT_FILES = ("train.jsonl", "valid.jsonl", "test.jsonl", "schema.json", "prepare.json")

RawRating = tuple[float, str, float]  # timestamp, item, rating


def _raw_timelines(folder: Path = ML100K) -> dict[str, list[RawRating]]:
    """Per user, u.data ratings sorted by timestamp, ties in file order."""
    by_user: dict[str, list[RawRating]] = {}
    for line in (folder / "u.data").read_text().splitlines():
        user, item, rating, timestamp = line.split("\t")
        by_user.setdefault(user, []).append((float(timestamp), item, float(rating)))
    return {user: sorted(ratings, key=lambda r: r[0]) for user, ratings in by_user.items()}


def _training(timeline: list[RawRating]) -> list[RawRating]:
    held_out = min(2, len(timeline) // 5) * 5
    return timeline[: len(timeline) - held_out]


def _read(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]
        for split in SPLITS
    }


def _all_requests(out: Path) -> dict[str, dict[str, Any]]:
    """request_id -> request, with its split recorded under '_split'."""
    return {r["request_id"]: {**r, "_split": split} for split, rs in _read(out).items() for r in rs}


def _prepare(source: Path | str, out: Path, **kwargs: Any) -> dict[str, Any]:
    return prepare_movielens(source, out, **kwargs)


@pytest.fixture(scope="module")
def ml100k_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ml100k")
    _prepare(ML100K, out)
    return out


@pytest.mark.parametrize(
    ("folder", "dataset", "layout"),
    [
        ("grouplens-100k", "ml-100k", "grouplens-100k"),
        ("grouplens-1m", "ml-1m", "grouplens-1m"),
        ("recbole-atomic", "ml-fixture", "recbole-atomic"),
    ],
)
def test_layout_is_detected_and_output_follows_the_contract(
    tmp_path: Path, folder: str, dataset: str, layout: str
) -> None:
    report = _prepare(FIXTURES / folder, tmp_path)
    assert (report["dataset"], report["layout"]) == (dataset, layout)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OUTPUT_FILES)
    assert json.loads((tmp_path / "prepare.json").read_text()) == report
    schema = FeatureSchema.load(tmp_path / "schema.json")
    assert (schema.dataset, schema.label) == (dataset, "rating 1-5")
    for split in SPLITS:
        read_requests(tmp_path / f"{split}.jsonl", schema)  # every feature declared and of its kind
    counts = report["counts"]
    assert (counts["users"], counts["interactions"], counts["users_with_requests"]) == (7, 97, 6)
    # Users with 12, 17, 25, 23, 10, 7, 3 ratings: 2, 3, 5, 4, 2, 1, 0 segments.
    assert counts["requests"] == {"train": 6, "valid": 5, "test": 6}
    assert counts["interactions_outside_segments"] == 2 + 2 + 0 + 3 + 0 + 2 + 3
    assert report["skipped_rows"] == {}


def test_grouplens_100k_and_recbole_atomic_give_the_same_requests(tmp_path: Path, ml100k_out: Path) -> None:
    _prepare(FIXTURES / "recbole-atomic", tmp_path)
    for split in SPLITS:
        name = f"{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (ml100k_out / name).read_bytes()


def test_ml1m_codes_become_names_and_age_groups(tmp_path: Path) -> None:
    _prepare(FIXTURES / "grouplens-1m", tmp_path)
    requests = _all_requests(tmp_path)
    static = {k: v for k, v in requests["u3-s2"]["user"]["features"].items() if k not in ("avg_rating", "rating_count")}
    assert static == {"gender": "M", "age": 18, "occupation": "writer"}
    assert requests["u2-s0"]["user"]["features"]["occupation"] == "other or not specified"
    schema = FeatureSchema.load(tmp_path / "schema.json")
    assert schema.spec("user", "age").describe(25) == "age group 25+"  # type: ignore[union-attr]


def test_segments_drop_the_oldest_remainder_and_keep_timestamp_order(ml100k_out: Path) -> None:
    requests = _all_requests(ml100k_out)
    seen = set()
    for user, timeline in _raw_timelines().items():
        first = len(timeline) % 5
        for index, start in enumerate(range(first, len(timeline), 5)):
            request = requests[f"u{user}-s{index}"]
            expected = timeline[start : start + 5]
            assert [c["id"] for c in request["candidates"]] == [item for _, item, _ in expected]
            assert [c["label"] for c in request["candidates"]] == [rating for _, _, rating in expected]
            seen.add(request["request_id"])
        if len(timeline) >= 5:  # the test segment is the latest 5 ratings
            latest = {item for _, item, _ in timeline[-5:]}
            last = len(timeline) // 5 - 1
            assert {c["id"] for c in requests[f"u{user}-s{last}"]["candidates"]} == latest
    assert seen == set(requests)


def test_timestamp_ties_keep_file_order(ml100k_out: Path) -> None:
    file_order = [
        line.split("\t")[1] for line in (ML100K / "u.data").read_text().splitlines() if line.startswith("3\t")
    ]
    timeline = _raw_timelines()["3"]
    tied = [item for ts, item, _ in timeline if sum(1 for t, _, _ in timeline if t == ts) > 1]
    assert len(tied) == 3
    assert tied == sorted(tied, key=file_order.index)
    requests = _all_requests(ml100k_out)
    ids = [c["id"] for i in range(5) for c in requests[f"u3-s{i}"]["candidates"]]
    assert [item for item in ids if item in tied] == tied


def test_split_is_per_user_last_test_second_to_last_valid(ml100k_out: Path) -> None:
    requests = _all_requests(ml100k_out)
    for user, timeline in _raw_timelines().items():
        count = len(timeline) // 5
        splits = [requests[f"u{user}-s{i}"]["_split"] for i in range(count)]
        assert splits == ["train"] * max(0, count - 2) + ["valid"] * (count >= 2) + ["test"] * (count >= 1)
    assert requests["u6-s0"]["_split"] == "test"
    assert not any(rid.startswith("u7-") for rid in requests)


def test_target_order_follows_from_the_labels(ml100k_out: Path) -> None:
    timelines = _raw_timelines()
    for request in _all_requests(ml100k_out).values():
        labels = [c["label"] for c in request["candidates"]]
        target = sorted(range(len(labels)), key=lambda i: -labels[i])  # stable: ties in input order
        user, index = request["user"]["id"], int(request["request_id"].rsplit("-s", 1)[1])
        start = len(timelines[user]) % 5 + 5 * index
        ratings = [r for _, _, r in timelines[user][start : start + 5]]
        assert [ratings[i] for i in target] == sorted(ratings, reverse=True)


@pytest.mark.parametrize("history_length", [10, 3, 0])
def test_history_is_strictly_before_the_segment_and_bounded(tmp_path: Path, history_length: int) -> None:
    _prepare(ML100K, tmp_path, history_length=history_length)
    timelines = _raw_timelines()
    for request in _all_requests(tmp_path).values():
        user, index = request["user"]["id"], int(request["request_id"].rsplit("-s", 1)[1])
        timeline = timelines[user]
        start = len(timeline) % 5 + 5 * index
        expected = timeline[max(0, start - history_length) : start]
        history = request["history"]
        assert len(history) <= history_length
        assert [(h["id"], h["label"]) for h in history] == [(item, rating) for _, item, rating in expected]
        candidates = {c["id"] for c in request["candidates"]}
        assert not candidates & {h["id"] for h in history}
    if history_length == 10:
        requests = _all_requests(tmp_path)
        assert requests["u3-s0"]["history"] == []  # 25 ratings: no remainder, nothing before
        assert len(requests["u4-s0"]["history"]) == 3  # the dropped oldest ratings are history


def _request_time(timelines: dict[str, list[RawRating]], request_id: str) -> float:
    """The timestamp of a request's first candidate, from its id `u{user}-s{segment}`."""
    user, segment = request_id[1:].split("-s")
    timeline = timelines[user]
    return timeline[len(timeline) % 5 + 5 * int(segment)][0]


def _expected_statistics(ratings: list[float], prior: float = 0.0, mean: float = 0.0) -> dict[str, Any]:
    average = {"avg_rating": round((sum(ratings) + prior * mean) / (len(ratings) + prior), 4)} if ratings else {}
    return {**average, "rating_count": len(ratings)}


def _statistics(features: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in features.items() if k in ("avg_rating", "rating_count")}


@pytest.mark.parametrize("prior", [0.0, 3.0])
def test_statistics_count_training_interactions_before_the_request(tmp_path: Path, prior: float) -> None:
    _prepare(ML100K, tmp_path, prior_weight=prior)
    timelines = _raw_timelines()
    training = [(time, user, item, rating) for user, t in timelines.items() for time, item, rating in _training(t)]
    rated = {item for timeline in timelines.values() for _, item, _ in timeline}
    assert rated - {item for _, _, item, _ in training}, "the fixture needs an item rated in held-out segments only"
    requests = _all_requests(tmp_path)
    checked_items = 0
    for request_id, request in requests.items():
        time = _request_time(timelines, request_id)
        earlier = [(user, item, rating) for t, user, item, rating in training if t < time]
        mean = sum(rating for _, _, rating in earlier) / len(earlier) if earlier else 0.0
        user = request["user"]["id"]
        user_ratings = [rating for u, _, rating in earlier if u == user]
        assert _statistics(request["user"]["features"]) == _expected_statistics(user_ratings, prior, mean), request_id
        for item in request["history"] + request["candidates"]:
            item_ratings = [rating for _, i, rating in earlier if i == item["id"]]
            assert _statistics(item["features"]) == _expected_statistics(item_ratings, prior, mean), (request_id, item["id"])
            checked_items += bool(item_ratings)
    assert checked_items > 50  # the statistics are not all empty
    assert "avg_rating" not in requests["u5-s1"]["user"]["features"]  # 10 ratings, none training
    assert json.loads((tmp_path / "prepare.json").read_text())["protocol"]["prior_weight"] == prior


def test_a_training_requests_own_labels_never_reach_its_features(tmp_path: Path, ml100k_out: Path) -> None:
    """Every label of one training request changed: its own features stay the same (later
    requests may see the new ratings: they are earlier than those)."""
    folder = tmp_path / "data"
    shutil.copytree(ML100K, folder)
    timeline = _raw_timelines()["3"]
    start = len(timeline) % 5 + 5  # the user's second segment, a training request
    segment = {(item, timestamp): rating for timestamp, item, rating in timeline[start : start + 5]}
    assert len(timeline) // 5 >= 4, "the fixture's user 3 needs two training segments"
    lines = []
    for line in (folder / "u.data").read_text().splitlines():
        user, item, rating, timestamp = line.split("\t")
        if user == "3" and (item, float(timestamp)) in segment:
            rating = f"{int(rating) % 5 + 1}"
        lines.append("\t".join((user, item, rating, timestamp)))
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    _prepare(folder, tmp_path / "out")
    changed, original = _all_requests(tmp_path / "out"), _all_requests(ml100k_out)

    def features(request: dict[str, Any]) -> list[Any]:
        return [request["user"]["features"], [i["features"] for i in request["history"] + request["candidates"]]]

    request = original["u3-s1"]
    assert request["_split"] == "train"
    assert [c["label"] for c in changed["u3-s1"]["candidates"]] != [c["label"] for c in request["candidates"]]
    assert features(changed["u3-s1"]) == features(request)
    assert features(changed["u3-s2"]) != features(original["u3-s2"])  # a later request sees them


@pytest.mark.parametrize("segment_from_end", [1, 2], ids=["test-label", "valid-label"])
def test_changing_a_held_out_label_changes_no_feature(tmp_path: Path, ml100k_out: Path, segment_from_end: int) -> None:
    folder = tmp_path / "data"
    shutil.copytree(ML100K, folder)
    lines = (folder / "u.data").read_text().splitlines()
    timeline = _raw_timelines()["3"]
    timestamp, item, rating = timeline[len(timeline) - 5 * segment_from_end + 2]
    target = f"3\t{item}\t{rating:.0f}\t{timestamp:.0f}"
    changed = f"3\t{item}\t{rating % 5 + 1:.0f}\t{timestamp:.0f}"
    (folder / "u.data").write_text("".join((changed if line == target else line) + "\n" for line in lines))
    _prepare(folder, tmp_path / "out")

    def features(out: Path) -> list[Any]:
        return [
            (r["request_id"], r["user"]["features"], [i["features"] for i in r["history"] + r["candidates"]])
            for split in SPLITS
            for r in _read(out)[split]
        ]

    assert features(tmp_path / "out") == features(ml100k_out)
    assert (tmp_path / "out" / "schema.json").read_bytes() == (ml100k_out / "schema.json").read_bytes()
    assert (tmp_path / "out" / "train.jsonl").read_bytes() == (ml100k_out / "train.jsonl").read_bytes()
    assert _read(tmp_path / "out") != _read(ml100k_out)  # the label itself did change


@pytest.mark.parametrize("cold_seed", [0, 1])
def test_cold_items_reach_no_training_input_and_keep_their_held_out_candidates(tmp_path: Path, ml100k_out: Path, cold_seed: int) -> None:
    from llm4pr.baselines.collaborative import labelled_pairs

    report = _prepare(ML100K, tmp_path, cold_items=0.3, cold_seed=cold_seed)
    cold_file = json.loads((tmp_path / "cold.json").read_text())
    cold = set(cold_file["items"])
    rated = {item for timeline in _raw_timelines().values() for _, item, _ in timeline}
    assert len(cold) == round(0.3 * len(rated)) and cold <= rated
    assert report["protocol"]["cold_items"] == {"fraction": 0.3, "seed": cold_seed, "items": len(cold)}
    requests, warm = _read(tmp_path), _read(ml100k_out)
    for split, split_requests in requests.items():
        for request in split_requests:
            assert not cold & {item["id"] for item in request["history"]}, request["request_id"]  # nobody has rated them
            for item in request["history"] + request["candidates"]:
                if item["id"] in cold:
                    assert item["features"]["rating_count"] == 0 and "avg_rating" not in item["features"]
        if split == "train":
            assert all(len(r["candidates"]) >= 2 and not cold & {c["id"] for c in r["candidates"]} for r in split_requests)
        else:  # held-out requests keep their candidates, cold ones included, and say how many are cold
            assert [[c["id"] for c in r["candidates"]] for r in split_requests] == [[c["id"] for c in r["candidates"]] for r in warm[split]]
            expected = {r["request_id"]: n for r in split_requests if (n := sum(c["id"] in cold for c in r["candidates"]))}
            assert cold_file["cold_candidates"][split] == expected
    assert sum(cold_file["cold_candidates"]["test"].values()) > 0
    schema = FeatureSchema.load(tmp_path / "schema.json")
    pairs = labelled_pairs(read_requests(tmp_path / "train.jsonl", schema))
    assert pairs and not cold & {item for _, item in pairs}  # a collaborative model learns no cold item
    timelines = _raw_timelines()
    for request in requests["train"] + requests["test"]:  # user statistics count warm training ratings only
        time = _request_time(timelines, request["request_id"])
        user = request["user"]["id"]
        ratings = [rating for t, item, rating in _training(timelines[user]) if t < time and item not in cold]
        assert request["user"]["features"]["rating_count"] == len(ratings)
    assert report["counts"]["requests"]["train"] == len(requests["train"]) <= len(warm["train"])
    assert sum(len(r["candidates"]) for r in requests["train"]) < sum(len(r["candidates"]) for r in warm["train"])


def test_other_cold_seeds_draw_other_items_and_bad_fractions_are_refused(tmp_path: Path) -> None:
    from llm4pr.data.movielens_protocol import cold_item_draw

    items = [str(i) for i in range(100)]
    assert cold_item_draw(items, 0.2, 0) == cold_item_draw(items, 0.2, 0) != cold_item_draw(items, 0.2, 1)
    assert len(cold_item_draw(items, 0.2, 0)) == 20 and cold_item_draw(items, 0.0, 0) == frozenset()
    warm = _prepare(ML100K, tmp_path / "warm")
    assert not (tmp_path / "warm" / "cold.json").exists()
    mostly_cold = _prepare(ML100K, tmp_path / "most", cold_items=0.9)  # training requests left with < 2 candidates go
    assert mostly_cold["counts"]["requests"]["train"] < warm["counts"]["requests"]["train"]
    assert all(len(r["candidates"]) >= 2 for r in _read(tmp_path / "most")["train"])
    for bad in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="cold_items must be a fraction"):
            _prepare(ML100K, tmp_path / "bad", cold_items=bad)


def test_features_ids_titles_and_queries(ml100k_out: Path) -> None:
    requests = _all_requests(ml100k_out)
    raw_users = set(_raw_timelines())
    items = {}
    for request in requests.values():
        assert isinstance(request["user"]["id"], str) and request["user"]["id"] in raw_users
        assert request["query"] == random.Random(f"0:{request['request_id']}").choice(PSEUDO_QUERIES)
        for item in request["history"] + request["candidates"]:
            assert isinstance(item["id"], str)
            items[item["id"]] = item["features"]
    assert items["6"]["title"] == "Misérables, Les"  # latin-1 decoded, "(year)" suffix stripped
    assert isinstance(items["6"]["year"], int) and 1960 <= items["6"]["year"] <= 1998
    assert all(isinstance(f["genres"], list) and f["genres"] for f in items.values())
    assert requests["u1-s0"]["user"]["features"] | {"avg_rating": 0} == {
        "gender": "M", "age": 24, "occupation": "technician", "avg_rating": 0, "rating_count": 2,
    }  # fmt: skip
    assert len({r["query"] for r in requests.values()}) > 1


def test_output_is_byte_identical_across_runs_and_hashes_are_reported(tmp_path: Path, ml100k_out: Path) -> None:
    report = _prepare(ML100K, tmp_path)
    for name in OUTPUT_FILES:
        assert (tmp_path / name).read_bytes() == (ml100k_out / name).read_bytes(), name
    import hashlib

    for name, entry in report["files"].items():
        assert entry["sha256"] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert report["seed"] == 0 and report["protocol"]["segment_length"] == 5


def test_the_seed_changes_queries_only(tmp_path: Path, ml100k_out: Path) -> None:
    _prepare(ML100K, tmp_path, seed=1)
    before, after = _all_requests(ml100k_out), _all_requests(tmp_path)
    assert any(before[rid]["query"] != after[rid]["query"] for rid in before)
    assert {rid: {**r, "query": ""} for rid, r in before.items()} == {
        rid: {**r, "query": ""} for rid, r in after.items()
    }


def test_bad_rows_are_counted_by_file_and_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "data"
    shutil.copytree(ML100K, folder)
    first = (folder / "u.data").read_text().splitlines()[0]
    user, item, rating, timestamp = first.split("\t")
    bad_ratings = [
        "1\t5\tx\t881250949",  # rating not a number
        "1\t5\t3\tlater",  # timestamp not a number
        "1\t5\t7\t881250949",  # out of range
        "1\t5\t0\t881250949",  # out of range
        "1\t5\t3",  # wrong number of fields
        f"{user}\t{item}\t{int(rating) % 5 + 1}\t{int(timestamp) + 1}",  # second rating of a pair
        "1\t999\t4\t881250950",  # item not in u.item: kept without item features
        "99\t1\t4\t881250950",  # user not in u.user: kept without user features
    ]
    with (folder / "u.data").open("a") as handle:
        handle.write("\n".join(bad_ratings) + "\n")
    with (folder / "u.item").open("a", encoding="latin-1") as handle:
        handle.write("31|Broken row\n1|Toy Story again (1995)|||" + "|0" * 19 + "\n")
    with (folder / "u.user").open("a") as handle:
        handle.write("8|old|M|other|00000\n")

    report = _prepare(folder, tmp_path / "out")
    assert report["skipped_rows"] == {
        "u.data: duplicate user-item rating (first row kept)": 1,
        "u.data: rating or timestamp is not a number": 2,
        "u.data: rating out of range 1-5": 2,
        "u.data: wrong number of fields": 1,
        "u.item: duplicate id (first row kept)": 1,
        "u.item: wrong number of fields": 1,
    }
    assert report["warnings"] == {
        "u.data: item not in u.item (ratings kept without item features)": 1,
        "u.data: user not in u.user (ratings kept without user features)": 1,
        "u.item: title missing or invalid (left out)": 1,
        "u.item: year missing or invalid (left out)": 1,
        "u.user: age missing or invalid (left out)": 1,
    }
    assert report["counts"]["interactions"] == 97 + 2
    assert "rating out of range 1-5" in caplog.text
    unknown = [
        i for r in _all_requests(tmp_path / "out").values() for i in r["history"] + r["candidates"] if i["id"] == "999"
    ]
    assert unknown and all("title" not in i["features"] for i in unknown)


def test_atomic_file_without_a_required_column_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "x.inter").write_text("user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"x\.inter: header lacks column\(s\) timestamp"):
        _prepare(tmp_path, tmp_path / "out")


def test_unrecognised_folder_names_the_path_and_the_expected_files(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("not movielens\n")
    with pytest.raises(DataError) as error:
        _prepare(tmp_path, tmp_path / "out")
    message = str(error.value)
    assert str(tmp_path) in message
    for name in ("u.data", "ratings.dat", "movies.dat", "*.inter"):
        assert name in message
    with pytest.raises(DataError, match="no such folder"):
        _prepare(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "u.data").write_text("1\t2\t3\t4\n")
    with pytest.raises(DataError, match=r"lacks u\.item, u\.user"):
        _prepare(tmp_path, tmp_path / "out")


def test_recbole_source_without_the_package_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "recbole" else real_find_spec(name, *a)
    )
    with pytest.raises(DataError, match="not installed") as error:
        _prepare("recbole", tmp_path)
    assert RECBOLE_INSTALL in str(error.value)


@pytest.mark.parametrize("kwargs", [{"segment_length": 0}, {"history_length": -1}, {"seed": "0"}])
def test_invalid_protocol_parameters_are_rejected(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        _prepare(ML100K, tmp_path, **kwargs)


@pytest.mark.slow
def test_real_movielens_100k_from_the_recbole_wheel(tmp_path: Path) -> None:
    if importlib.util.find_spec("recbole") is None:
        pytest.skip(f"recbole is not installed: {RECBOLE_INSTALL}")
    started = time.perf_counter()
    report = _prepare("recbole", tmp_path)
    elapsed = time.perf_counter() - started
    counts = report["counts"]
    assert (counts["users"], counts["items"], counts["interactions"]) == (943, 1682, 100_000)
    assert counts["requests"] == {"train": 17_747, "valid": 943, "test": 943}
    assert counts["training_interactions"] == 90_570
    assert report["skipped_rows"] == {}
    assert report["warnings"] == {  # item 267 is a placeholder ("unkonwn") in the data itself
        "ml-100k.item: title missing or invalid (left out)": 1,
        "ml-100k.item: year missing or invalid (left out)": 1,
    }
    test = read_requests(tmp_path / "test.jsonl", FeatureSchema.load(tmp_path / "schema.json"))
    assert len(test) == 943 and all(len(r.candidates) == 5 and len(r.history) == 10 for r in test)
    assert elapsed < 60
