"""KuaiSAR preparation: sessions as requests, time split, history, features, bad rows, streaming.

The fixture under `fixtures/kuaisar/` follows the release's published layout: 12 search sessions
of 5 users over four days (42 rows; one session's last row is logged after the next session
began), 4 users in `user_features.csv` (user 88 is missing), 16 items in `item_features.csv`
(a live stream and a user profile shown in results are missing; one item is all padding).
Expectations are recomputed here from the CSV files with a few independent lines of code.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import tracemalloc
import zipfile
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import llm4pr.data.converters as converters
from llm4pr.data.download import fetch, unpack
from llm4pr.data.errors import DataError
from llm4pr.data.kuaisar import prepare_kuaisar
from llm4pr.data.schema import FeatureSchema
from tests.tiny import check_contract, check_prepared_folder, read_prepared

FIXTURE = Path(__file__).parent / "fixtures" / "kuaisar"
BEIJING = timezone(timedelta(hours=8))
DAY_MS = 86_400_000


def _rows(folder: Path = FIXTURE) -> list[dict[str, str]]:
    with (folder / "src_inter.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _sessions(folder: Path = FIXTURE) -> dict[tuple[str, str], list[dict[str, str]]]:
    """(user, session) -> its rows in file order."""
    sessions: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in _rows(folder):
        sessions[row["user_id"], row["search_session_id"]].append(row)
    return dict(sessions)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("kuaisar")
    return out, prepare_kuaisar(FIXTURE, out)


def test_output_follows_the_contract(prepared: tuple[Path, dict[str, Any]]) -> None:
    out, report = prepared
    schema = check_contract(out, report)
    assert (schema.dataset, len(schema.for_owner("user")), len(schema.for_owner("item"))) == ("kuaisar", 6, 10)
    counts = report["counts"]
    assert counts["requests"] == {"train": 5, "valid": 3, "test": 4}
    assert (counts["sessions"], counts["users"], counts["candidates"]) == (12, 5, 42)
    assert (counts["users_in_user_file"], counts["items_in_item_file"], counts["requests_without_click"]) == (4, 16, 3)
    assert report["skipped_rows"] == {} and report["bad_lines"] == []
    for name in ("src_inter.csv", "user_features.csv", "item_features.csv"):
        assert report["input_files"][name] == hashlib.sha256((FIXTURE / name).read_bytes()).hexdigest()


def test_one_request_per_session_with_items_in_logged_order(prepared: tuple[Path, dict[str, Any]]) -> None:
    requests = read_prepared(prepared[0])
    sessions = _sessions()
    assert set(requests) == {f"u{user}-s{session}" for user, session in sessions}
    for (user, session), rows in sessions.items():
        request = requests[f"u{user}-s{session}"]
        assert [c["id"] for c in request["candidates"]] == [row["item_id"] for row in rows]
        assert [c["label"] for c in request["candidates"]] == [int(row["click_cnt"]) for row in rows]
        tokens = [token.strip() for token in rows[0]["keyword"].strip("[]").split(",")]
        assert request["query"] == " ".join(tokens)
        assert request["user"]["features"]["query_tokens"] == tokens
        assert request["user"]["features"]["search_source"] == rows[0]["search_source"]
    late = requests["u14358-s4"]["candidates"]  # its last row comes after session 5's rows in the file
    assert [c["id"] for c in late][-1] == "103656000013"


def test_split_is_by_time_last_day_test_the_day_before_valid(prepared: tuple[Path, dict[str, Any]]) -> None:
    requests = read_prepared(prepared[0])
    starts = {key: int(rows[0]["search_session_timestamp"]) for key, rows in _sessions().items()}
    last = max(starts.values())
    for (user, session), start in starts.items():
        expected = "test" if start > last - DAY_MS else "valid" if start > last - 2 * DAY_MS else "train"
        assert requests[f"u{user}-s{session}"]["_split"] == expected
    latest_train = max(start for key, start in starts.items() if requests[f"u{key[0]}-s{key[1]}"]["_split"] == "train")
    assert all(start > latest_train for key, start in starts.items() if requests[f"u{key[0]}-s{key[1]}"]["_split"] != "train")


@pytest.mark.parametrize("history_length", [10, 2, 0])
def test_history_is_the_users_earlier_clicks(tmp_path: Path, history_length: int) -> None:
    prepare_kuaisar(FIXTURE, tmp_path, history_length=history_length)
    requests = read_prepared(tmp_path)
    by_user: dict[str, list[tuple[int, list[dict[str, str]]]]] = defaultdict(list)
    for (user, _), rows in _sessions().items():
        by_user[user].append((int(rows[0]["search_session_timestamp"]), rows))
    for user, sessions in by_user.items():
        clicked: list[tuple[str, int]] = []
        for _, rows in sorted(sessions, key=lambda s: s[0]):
            request = requests[f"u{user}-s{rows[0]['search_session_id']}"]
            expected = clicked[len(clicked) - history_length :] if history_length else []
            assert [(h["id"], h["label"]) for h in request["history"]] == expected
            clicked += [(row["item_id"], int(row["click_cnt"])) for row in rows if int(row["click_cnt"]) > 0]
    if history_length == 10:
        assert [h["id"] for h in requests["u14358-s8"]["history"]] == ["103656000000", "103656000001", "103656000010"]


def test_user_and_item_features(prepared: tuple[Path, dict[str, Any]]) -> None:
    requests = read_prepared(prepared[0])
    request = requests["u14358-s10"]  # 2023-05-25 (Beijing)
    assert request["user"] == {
        "id": "14358",
        "features": {
            "search_active_level": 3, "rec_active_level": 4, "onehot_feat1": "1", "onehot_feat2": "3",
            "query_tokens": ["80"], "search_source": "USER_INPUT",
        },
    }  # fmt: skip
    football = request["candidates"][1]
    assert football["features"] == {
        "caption": "80 81", "author_id": "21", "item_type": "NORMAL", "upload_type": "Camera",
        "category_1": "Sports", "category_2": "Football", "category_3": "Highlights",
        "category_4": "Champions League", "result_type": "VIDEO",
        "days_since_upload": (date(2023, 5, 25) - date(2023, 5, 24)).days,
    }  # fmt: skip
    padding = requests["u6302-s2"]["candidates"][2]  # author 0, caption [], upload 1970-01-01, categories 0
    assert padding == {"id": "103656000008", "features": {"item_type": "NORMAL", "upload_type": "LongImport", "result_type": "VIDEO"}, "label": 0}
    profile = requests["u14358-s1"]["candidates"][3]  # a user profile result: not in item_features.csv
    assert profile["features"] == {"result_type": "USER"}
    assert requests["u88-s5"]["user"]["features"] == {"query_tokens": ["70"], "search_source": "USER_INPUT"}
    history_item = requests["u14358-s10"]["history"][0]  # its age is counted to the session of the request
    assert history_item["features"]["days_since_upload"] == (date(2023, 5, 25) - date(2023, 4, 22)).days
    assert prepared[1]["warnings"]["src_inter.csv: item not in item_features.csv (kept without item features)"] == 3


def test_binary_labels_and_dropping_sessions_without_a_click(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    report = prepare_kuaisar(FIXTURE, tmp_path, label="binary", drop_unclicked=True)
    requests, graded = read_prepared(tmp_path), read_prepared(prepared[0])
    assert report["counts"]["dropped_unclicked"] == 3 and sum(report["counts"]["requests"].values()) == 9
    assert set(requests) == {rid for rid, r in graded.items() if any(c["label"] > 0 for c in r["candidates"])}
    for rid, request in requests.items():
        assert [c["label"] for c in request["candidates"]] == [min(c["label"], 1) for c in graded[rid]["candidates"]]
        assert {r["_split"] for r in (request, graded[rid])} == {request["_split"]}
    assert [c["label"] for c in requests["u6302-s2"]["candidates"]] == [0, 1, 0]  # click_cnt 2 -> 1
    assert FeatureSchema.load(tmp_path / "schema.json").label == "clicked (1) or not (0)"


def test_max_candidates_keeps_the_first_n_and_history_keeps_cut_clicks(tmp_path: Path) -> None:
    report = prepare_kuaisar(FIXTURE, tmp_path, max_candidates=2)
    requests = read_prepared(tmp_path)
    for (user, session), rows in _sessions().items():
        assert [c["id"] for c in requests[f"u{user}-s{session}"]["candidates"]] == [r["item_id"] for r in rows[:2]]
    truncation = report["counts"]["truncation"]
    assert (truncation["max_candidates"], truncation["truncated_requests"], truncation["dropped_candidates"]) == (2, 10, 42 - 24)
    assert "103656000010" in [h["id"] for h in requests["u14358-s8"]["history"]]  # clicked at position 3 in session 4


def test_order_of_sessions_in_the_files_does_not_matter(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    """Sessions reversed (rows within a session kept in order) and users reversed: identical requests."""
    folder = tmp_path / "data"
    shutil.copytree(FIXTURE, folder)
    header, *lines = (FIXTURE / "src_inter.csv").read_text(encoding="utf-8").splitlines()
    blocks: dict[str, list[str]] = defaultdict(list)
    for line in lines:
        blocks[line.split(",")[1]].append(line)
    reordered = [line for session in reversed(list(blocks)) for line in blocks[session]]
    (folder / "src_inter.csv").write_text("\n".join([header, *reordered]) + "\n", encoding="utf-8")
    user_header, *users = (FIXTURE / "user_features.csv").read_text().splitlines()
    (folder / "user_features.csv").write_text("\n".join([user_header, *reversed(users)]) + "\n")
    prepare_kuaisar(folder, tmp_path / "out")
    for name in ("train.jsonl", "valid.jsonl", "test.jsonl", "schema.json"):
        assert (tmp_path / "out" / name).read_bytes() == (prepared[0] / name).read_bytes(), name


def test_pandas_index_column_and_byte_order_mark_areread_prepared(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    folder = tmp_path / "data"
    shutil.copytree(FIXTURE, folder)
    lines = (FIXTURE / "src_inter.csv").read_text(encoding="utf-8").splitlines()
    indexed = [f",{lines[0]}"] + [f"{n},{line}" for n, line in enumerate(lines[1:])]
    (folder / "src_inter.csv").write_text("\ufeff" + "\n".join(indexed) + "\n", encoding="utf-8")
    prepare_kuaisar(folder, tmp_path / "out")
    assert (tmp_path / "out" / "test.jsonl").read_bytes() == (prepared[0] / "test.jsonl").read_bytes()


def test_bad_rows_are_counted_with_their_line_numbers(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    shutil.copytree(FIXTURE, folder)
    first = _rows()[0]
    bad = [
        "501,12,2023-05-25 21:30:00,later,[40],USER_INPUT,103656000009,0,VIDEO",  # 44: timestamp
        "501,12,2023-05-25 21:30:00,1685021400123,[40],USER_INPUT,103656000009,-1,VIDEO",  # 45: clicks
        "501,12,2023-05-25 21:30:00,1685021400123,[40],USER_INPUT,103656000009,1.5,VIDEO",  # 46: clicks
        "501,12,2023-05-25 21:30:00,1685021400123,[40],USER_INPUT,103656000009",  # 47: fields
        "501,12,2023-05-25 21:30:00,1685021400123,[40],USER_INPUT,,0,VIDEO",  # 48: empty item
        f"14358,1,x,{first['search_session_timestamp']},\"[20, 34, 3]\",USER_INPUT,103656000001,1,VIDEO",  # 49: repeat
    ]
    with (folder / "src_inter.csv").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(bad) + "\n")
    with (folder / "user_features.csv").open("a") as handle:
        handle.write("6302,2,2,1,1\n,1,1,1,1\n")  # lines 6 (duplicate) and 7 (empty id)
    report = prepare_kuaisar(folder, tmp_path / "out")
    assert report["skipped_rows"] == {
        "src_inter.csv: click_cnt is not a non-negative whole number": 2,
        "src_inter.csv: empty user_id, search_session_id or item_id": 1,
        "src_inter.csv: search_session_timestamp is not a number": 1,
        "src_inter.csv: wrong number of fields (7, header has 9)": 1,
        "user_features.csv: duplicate key (first row kept)": 1,
        "user_features.csv: empty id": 1,
    }
    assert report["bad_lines"] == [
        "user_features.csv:6: duplicate key (first row kept)",
        "user_features.csv:7: empty id",
        "src_inter.csv:44: search_session_timestamp is not a number",
        "src_inter.csv:45: click_cnt is not a non-negative whole number",
        "src_inter.csv:46: click_cnt is not a non-negative whole number",
        "src_inter.csv:47: wrong number of fields (7, header has 9)",
        "src_inter.csv:48: empty user_id, search_session_id or item_id",
    ]
    assert report["warnings"]["src_inter.csv: item repeated in a session (first position kept, larger click_cnt)"] == 1
    candidates = read_prepared(tmp_path / "out")["u14358-s1"]["candidates"]
    assert [(c["id"], c["label"]) for c in candidates][:2] == [("103656000000", 1), ("103656000001", 1)]
    assert read_prepared(tmp_path / "out")["u6302-s2"]["user"]["features"]["onehot_feat2"] == "7"  # first row kept


def test_a_missing_column_or_folder_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "src_inter.csv").write_text("user_id,search_session_id,keyword,item_id,click_cnt\n1,2,[3],4,0\n")
    with pytest.raises(DataError, match=r"src_inter\.csv:1: header lacks column\(s\) search_session_timestamp"):
        prepare_kuaisar(tmp_path, tmp_path / "out")
    with pytest.raises(DataError, match=r"no src_inter\.csv found"):
        prepare_kuaisar(tmp_path / "out", tmp_path / "out2")
    with pytest.raises(ValueError, match="label"):
        prepare_kuaisar(FIXTURE, tmp_path / "out3", label="watch time")


def test_memory_does_not_grow_with_the_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python's peak allocation for a 4x longer log stays the same (SQLite sorts on disk)."""
    monkeypatch.setattr(converters, "SQL_BATCH_ROWS", 200)

    def peak(sessions: int) -> int:
        folder = tmp_path / f"log{sessions}"
        folder.mkdir()
        with (folder / "src_inter.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id", "search_session_id", "search_session_timestamp", "keyword", "item_id", "click_cnt"])
            for session in range(sessions):
                for position in range(5):
                    item = (session * 7 + position * 13) % 5000
                    writer.writerow([session % 40, session, 1684763932000 + session * 60_000, "[1, 2]", item, position % 3 == 0])
        tracemalloc.start()
        try:
            prepare_kuaisar(folder, folder / "out")
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small, large = peak(600), peak(2400)
    assert large < small * 1.25, (small, large)


def test_the_release_zip_is_fetched_from_a_url_checked_and_reused(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    archive = tmp_path / "KuaiSAR_v2.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in FIXTURE.iterdir():
            zipped.write(path, f"KuaiSAR_v2/{path.name}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="does not match"):
        prepare_kuaisar(archive.as_uri(), tmp_path / "bad", cache_dir=cache, sha256="0" * 64)
    report = prepare_kuaisar(archive.as_uri(), tmp_path / "out", cache_dir=cache, sha256=digest)
    assert (tmp_path / "out" / "test.jsonl").read_bytes() == (prepared[0] / "test.jsonl").read_bytes()
    assert report["input_files"] == prepared[1]["input_files"]
    archive.unlink()  # the cached copy serves the next run
    prepare_kuaisar(archive.as_uri(), tmp_path / "again", cache_dir=cache, sha256=digest)
    assert not [p for p in cache.rglob("*") if p.name.endswith(".part")]


def test_an_archive_member_leaving_the_target_folder_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../outside.txt", "x")
    with pytest.raises(DataError, match="outside the target folder"):
        unpack(fetch(archive.as_uri(), tmp_path / "cache"))
    assert not list(tmp_path.rglob("outside.txt"))
    with pytest.raises(DataError, match="download failed"):
        fetch((tmp_path / "missing.zip").as_uri(), tmp_path / "cache")


def test_model_baseline_and_evaluate_run_on_the_output(prepared: tuple[Path, dict[str, Any]]) -> None:
    report = check_prepared_folder(prepared[0])
    assert report["n_requests"] == 4


def test_progress_bars_stay_off_when_output_is_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prepare_kuaisar(FIXTURE, tmp_path)
    assert capsys.readouterr().err == ""


def test_fixture_timestamps_are_the_beijing_times_beside_them() -> None:
    for row in _rows():
        when = datetime.strptime(row["search_session_time"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=BEIJING)
        assert int(row["search_session_timestamp"]) // 1000 == int(when.timestamp())
