"""LETOR/svmlight preparation: queries as requests, f1..fN features, splits, bad lines.

Fixtures under `fixtures/letor/`, each in a published layout:
- `MQ2007/Fold1/{train,vali,test}.txt`: LETOR 4.0, 46 dense features, "#docid = GX..." comments
  (3 + 1 + 2 queries, 33 documents);
- `mslr-web10k-sample.txt`: MSLR-WEB10K, 136 dense features, no comments (3 queries x 5);
- `yahoo-set1-sample.txt`: Yahoo! LTR set 1, sparse lines up to feature 700 (2 queries x 6).
Expectations are recomputed from the files with an independent few lines.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests
from llm4pr.data.letor import prepare_letor
from llm4pr.data.schema import FeatureSchema
from tests.tiny import check_contract, check_prepared_folder

FIXTURE = Path(__file__).parent / "fixtures" / "letor"
FOLD = FIXTURE / "MQ2007" / "Fold1"
MSLR, YAHOO = FIXTURE / "mslr-web10k-sample.txt", FIXTURE / "yahoo-set1-sample.txt"
SPLITS = ("train", "valid", "test")


def _parse(path: Path) -> list[tuple[str, float, dict[str, float], str | None]]:
    """(qid, label, features, docid) per line."""
    documents = []
    for line in path.read_text().splitlines():
        body, _, comment = line.partition("#")
        label, qid, *pairs = body.split()
        features = {f"f{pair.split(':')[0]}": float(pair.split(":")[1]) for pair in pairs}
        docid = comment.split("=")[1].split()[0] if "docid" in comment else None
        documents.append((qid.removeprefix("qid:"), float(label), features, docid))
    return documents


def _read(out: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        split: [json.loads(line) for line in (out / f"{split}.jsonl").read_text().splitlines()] for split in SPLITS
    }


@pytest.fixture(scope="module")
def fold(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("letor")
    return out, prepare_letor(FOLD, out)


def test_a_fold_folder_keeps_its_splits_and_the_contract(fold: tuple[Path, dict[str, Any]]) -> None:
    out, report = fold
    schema = check_contract(out, report)
    assert [s.name for s in schema.features] == [f"f{i}" for i in range(1, 47)]
    assert {s.kind.value for s in schema.features} == {"numerical"} and schema.spec("item", "f3").describe(0.5) == "f3 = 0.5"
    assert report["counts"]["requests"] == {"train": 3, "valid": 1, "test": 2}
    assert (report["counts"]["queries"], report["counts"]["documents"], report["counts"]["features"]) == (6, 33, 46)
    assert list(report["input_files"]) == ["train.txt", "vali.txt", "test.txt"]
    assert report["input_files"]["vali.txt"] == hashlib.sha256((FOLD / "vali.txt").read_bytes()).hexdigest()
    assert report["skipped_rows"] == {} and report["bad_lines"] == []
    written = _read(out)
    for split, name in zip(SPLITS, ("train.txt", "vali.txt", "test.txt"), strict=True):
        documents = _parse(FOLD / name)
        candidates = [c for request in written[split] for c in request["candidates"]]
        assert [r["request_id"] for r in written[split]] == list(dict.fromkeys(qid for qid, *_ in documents))
        assert [(c["id"], c["label"], c["features"]) for c in candidates] == [(d, lab, f) for _, lab, f, d in documents]
    request = written["test"][0]
    assert (request["query"], request["user"], request["history"]) == ("", {"id": "anonymous", "features": {}}, [])


def test_an_unsplit_file_goes_to_test_with_positional_ids(tmp_path: Path) -> None:
    report = prepare_letor(MSLR, tmp_path)
    written = _read(tmp_path)
    assert report["counts"]["requests"] == {"train": 0, "valid": 0, "test": 3}
    assert [r["request_id"] for r in written["test"]] == ["1", "16", "31"]
    assert [c["id"] for c in written["test"][1]["candidates"]] == [f"16-{n}" for n in range(1, 6)]
    assert all(len(c["features"]) == 136 for r in written["test"] for c in r["candidates"])
    assert written["test"][0]["candidates"][0]["features"]["f1"] == _parse(MSLR)[0][2]["f1"]


def test_sparse_lines_leave_features_absent(tmp_path: Path) -> None:
    report = prepare_letor(YAHOO, tmp_path)
    schema = FeatureSchema.load(tmp_path / "schema.json")
    assert report["counts"]["features"] == 700 and len(schema.features) == 700
    candidates = [c for r in _read(tmp_path)["test"] for c in r["candidates"]]
    assert [c["features"] for c in candidates] == [features for _, _, features, _ in _parse(YAHOO)]
    assert all(len(c["features"]) <= 9 for c in candidates)
    read_requests(tmp_path / "test.jsonl", schema)


def test_split_ratio_assigns_each_qid_by_a_seeded_hash(tmp_path: Path) -> None:
    source = tmp_path / "big.txt"
    source.write_text("".join(f"{q % 3} qid:{q} 1:{q}.5 2:1\n{(q + 1) % 3} qid:{q} 1:0 2:2\n" for q in range(400)))
    report = prepare_letor(source, tmp_path / "a", split_ratio=(0.7, 0.1, 0.2), seed=3)
    counts = report["counts"]["requests"]
    assert sum(counts.values()) == 400
    assert 240 <= counts["train"] <= 320 and 20 <= counts["valid"] <= 60 and 50 <= counts["test"] <= 110
    split_of = {r["request_id"]: split for split, rs in _read(tmp_path / "a").items() for r in rs}
    prepare_letor(source, tmp_path / "b", split_ratio=(0.7, 0.1, 0.2), seed=3)
    assert (tmp_path / "b" / "train.jsonl").read_bytes() == (tmp_path / "a" / "train.jsonl").read_bytes()
    prepare_letor(source, tmp_path / "c", split_ratio=(0.7, 0.1, 0.2), seed=4)
    other = {r["request_id"]: split for split, rs in _read(tmp_path / "c").items() for r in rs}
    assert other != split_of
    prepare_letor(source, tmp_path / "d", split_ratio=(1, 0, 0))
    assert len(_read(tmp_path / "d")["train"]) == 400


def test_bad_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    source = tmp_path / "bad.txt"
    source.write_text(
        "# a comment line\n"
        "2 qid:1 1:0.5 2:0.1 # docid = A\n"
        "1 qid:1 1:0.5 1:0.3\n"  # 3: repeated index
        "x qid:1 1:0.5\n"  # 4: label
        "1 1:0.3 2:0.1\n"  # 5: no qid
        "1 qid:1 a:3\n"  # 6: feature
        "1 qid:1 3:nan\n"  # 7: not finite
        "0 qid:1 0:1\n"  # 8: index 0
        "\n"
        "0 qid:1 2:0.7 # docid = B\n"
        "1 qid:2 1:0.2\n"
        "0 qid:1 1:0.9\n"  # 12: qid 1 ended at line 10
        "0 qid:2 2:0.4\n"
    )
    report = prepare_letor(source, tmp_path / "out")
    assert report["bad_lines"] == [
        "bad.txt:3: feature index 1 repeated",
        "bad.txt:4: label 'x' is not a finite number",
        "bad.txt:5: expected 'label qid:Q index:value ... # comment'",
        "bad.txt:6: feature 'a:3' is not index:value with a positive whole index",
        "bad.txt:7: feature 3 'nan' is not a finite number",
        "bad.txt:8: feature '0:1' is not index:value with a positive whole index",
        "bad.txt:12: qid 1 already ended at bad.txt:10",
    ]
    assert sum(report["skipped_rows"].values()) == 7
    test = _read(tmp_path / "out")["test"]
    assert [(r["request_id"], [c["id"] for c in r["candidates"]]) for r in test] == [("1", ["A", "B"]), ("2", ["2-1", "2-2"])]


def test_a_qid_repeated_in_a_later_split_file_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "Fold1"
    folder.mkdir()
    (folder / "train.txt").write_text("1 qid:7 1:1\n0 qid:7 1:0\n")
    (folder / "test.txt").write_text("1 qid:7 1:1\n1 qid:8 1:1\n")
    report = prepare_letor(folder, tmp_path / "out")
    assert report["bad_lines"] == ["test.txt:1: qid 7 already ended at train.txt:2"]
    assert report["counts"]["requests"] == {"train": 1, "valid": 0, "test": 1}


def test_max_candidates_keeps_the_first_lines_of_each_query(tmp_path: Path, fold: tuple[Path, dict[str, Any]]) -> None:
    report = prepare_letor(FOLD, tmp_path, max_candidates=4)
    full, cut = _read(fold[0]), _read(tmp_path)
    for split in SPLITS:
        for short, long in zip(cut[split], full[split], strict=True):
            assert short["candidates"] == long["candidates"][:4]
    assert report["counts"]["truncation"]["dropped_candidates"] == 33 - 6 * 4


def test_folder_and_ratio_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="split_ratio applies to a single file"):
        prepare_letor(FOLD, tmp_path / "out", split_ratio=(0.8, 0.1, 0.1))
    with pytest.raises(ValueError, match="summing to 1"):
        prepare_letor(MSLR, tmp_path / "out", split_ratio=(0.8, 0.1, 0.2))
    folder = tmp_path / "set1"
    folder.mkdir()
    for name in ("set1.train.txt", "set2.train.txt"):
        shutil.copy(FOLD / "train.txt", folder / name)
    with pytest.raises(DataError, match=r"several files for one split \(train: set1\.train\.txt, set2\.train\.txt\)"):
        prepare_letor(folder, tmp_path / "out")


def test_a_url_of_a_file_or_an_archive(tmp_path: Path, fold: tuple[Path, dict[str, Any]]) -> None:
    report = prepare_letor(MSLR.as_uri(), tmp_path / "file", cache_dir=tmp_path / "cache")
    assert report["counts"]["requests"]["test"] == 3
    archive = tmp_path / "MQ2007.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for fold_name in ("Fold1", "Fold2"):
            for path in FOLD.iterdir():
                zipped.write(path, f"MQ2007/{fold_name}/{path.name}")
    with pytest.raises(DataError, match=r"several folders hold LETOR split files .*Fold1, .*Fold2"):
        prepare_letor(archive.as_uri(), tmp_path / "out", cache_dir=tmp_path / "cache")
    unpacked = next((tmp_path / "cache").rglob("Fold1"))  # the user then gives one fold as the source
    prepare_letor(unpacked, tmp_path / "fold1")
    assert (tmp_path / "fold1" / "test.jsonl").read_bytes() == (fold[0] / "test.jsonl").read_bytes()
    with pytest.raises(DataError, match="--sha256 checks a downloaded file"):
        prepare_letor(MSLR, tmp_path / "out", sha256="0" * 64)


def test_model_baseline_and_evaluate_run_on_the_output(fold: tuple[Path, dict[str, Any]]) -> None:
    report = check_prepared_folder(fold[0])
    assert report["n_requests"] == 2
