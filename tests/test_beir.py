"""BEIR preparation: a BEIR folder plus a first-stage TREC run become labelled requests.

The fixture under `fixtures/beir/` follows the BEIR release layout (`sample/corpus.jsonl` with 45
passages, `queries.jsonl` with 6 queries, `qrels/test.tsv` judging q1-q3 and `qrels/dev.tsv`
judging q4) and a Pyserini-style BM25 run (`bm25-top30.trec`: 30, 30, 28, 12 and 10 documents
for q1-q5; q5 is judged by no qrels file, q6 is in no run). Lists longer than 26 make the
model use its sliding window. Expectations are recomputed from the files here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from llm4pr.data.beir import prepare_beir
from llm4pr.data.errors import DataError
from tests.tiny import check_contract, check_prepared_folder, read_prepared

FIXTURE = Path(__file__).parent / "fixtures" / "beir"
DATA, RUN = FIXTURE / "sample", FIXTURE / "bm25-top30.trec"
SPLITS = ("train", "valid", "test")


def _run() -> dict[str, list[tuple[str, int, float]]]:
    """qid -> (docid, rank, score) sorted by rank."""
    run: dict[str, list[tuple[str, int, float]]] = {}
    for line in RUN.read_text().splitlines():
        qid, _, docid, rank, score, _ = line.split()
        run.setdefault(qid, []).append((docid, int(rank), float(score)))
    return {qid: sorted(docs, key=lambda d: d[1]) for qid, docs in run.items()}


def _qrels(name: str) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in (DATA / "qrels" / name).read_text().splitlines()[1:]:
        qid, docid, grade = line.split("\t")
        qrels.setdefault(qid, {})[docid] = int(grade)
    return qrels


def _jsonl(path: Path) -> dict[str, dict[str, Any]]:
    return {record["_id"]: record for record in map(json.loads, path.read_text().splitlines())}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("beir")
    return out, prepare_beir(DATA, RUN, out)


def test_output_follows_the_contract(prepared: tuple[Path, dict[str, Any]]) -> None:
    out, report = prepared
    schema = check_contract(out, report)
    assert [(s.name, s.kind.value) for s in schema.features] == [
        ("title", "text"), ("text", "text"), ("first_stage_score", "numerical"),
    ]  # fmt: skip
    counts = report["counts"]
    assert counts["requests"] == {"train": 0, "valid": 1, "test": 3}
    assert (counts["queries_in_run"], counts["unjudged_queries_skipped"], counts["candidates"]) == (5, 1, 30 + 30 + 28 + 12)
    assert report["skipped_rows"] == {} and report["warnings"] == {}
    assert report["input_files"]["bm25-top30.trec"] == hashlib.sha256(RUN.read_bytes()).hexdigest()
    assert set(report["input_files"]) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "qrels/dev.tsv", "bm25-top30.trec"}


def test_candidates_in_run_order_with_text_score_and_qrels_labels(prepared: tuple[Path, dict[str, Any]]) -> None:
    requests, corpus, queries = read_prepared(prepared[0]), _jsonl(DATA / "corpus.jsonl"), _jsonl(DATA / "queries.jsonl")
    qrels = {**_qrels("test.tsv"), **_qrels("dev.tsv")}
    assert [qid for qid, r in requests.items() if r["_split"] == "test"] == ["q1", "q2", "q3"]  # run order
    for qid, ranked in _run().items():
        if qid not in qrels:
            assert qid not in requests
            continue
        request = requests[qid]
        assert request["_split"] == ("valid" if qid == "q4" else "test")
        assert request["query"] == queries[qid]["text"]
        assert request["user"] == {"id": "anonymous", "features": {}} and request["history"] == []
        assert [c["id"] for c in request["candidates"]] == [docid for docid, _, _ in ranked]
        assert [c["label"] for c in request["candidates"]] == [qrels[qid].get(docid, 0) for docid, _, _ in ranked]
        for candidate, (docid, _, score) in zip(request["candidates"], ranked, strict=True):
            expected = {"first_stage_score": score, "text": corpus[docid]["text"]}
            if corpus[docid]["title"]:
                expected["title"] = corpus[docid]["title"]
            assert candidate["features"] == expected
    assert max(len(r["candidates"]) for r in requests.values()) > 26  # the model needs its sliding window


def test_candidates_follow_the_rank_column_not_the_line_order(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    lines = RUN.read_text().splitlines()
    by_query: dict[str, list[str]] = {}
    for line in lines:
        by_query.setdefault(line.split()[0], []).append(line)
    run = tmp_path / "reversed.trec"
    run.write_text("".join(line + "\n" for query in by_query.values() for line in reversed(query)))
    prepare_beir(DATA, run, tmp_path / "out")
    for split in SPLITS:
        assert (tmp_path / "out" / f"{split}.jsonl").read_bytes() == (prepared[0] / f"{split}.jsonl").read_bytes()


def test_a_query_judged_for_test_and_train_is_a_test_query_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    unjudged = next(docid for docid, _, _ in _run()["q1"] if docid not in _qrels("test.tsv")["q1"])
    (data / "qrels" / "train.tsv").write_text(f"query-id\tcorpus-id\tscore\nq1\t{unjudged}\t2\nq5\td40\t1\n")
    report = prepare_beir(data, RUN, tmp_path / "out")
    requests = read_prepared(tmp_path / "out")
    assert (requests["q1"]["_split"], requests["q5"]["_split"]) == ("test", "train")
    assert report["counts"]["requests"] == {"train": 1, "valid": 1, "test": 3}
    assert report["bad_lines"] == ["qrels/train.tsv:2: query already judged for split test (ignored here)"]
    assert next(c["label"] for c in requests["q1"]["candidates"] if c["id"] == unjudged) == 0


def test_bad_lines_are_counted_with_their_line_numbers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    with (data / "corpus.jsonl").open("a") as handle:
        handle.write('{"_id": "d46", "text": "broken"\n{"title": "no id", "text": "x"}\n{"_id": "d1", "text": "again"}\n')
    with (data / "qrels" / "test.tsv").open("a") as handle:
        handle.write("q1\td3\thigh\nq2\n")
    with (data / "queries.jsonl").open("a") as handle:
        handle.write('{"_id": 7, "text": "a numeric id"}\n')
    run = tmp_path / "run.trec"
    extra = ["q1 Q0 d999 31 1.0 bm25", "q1 Q0 d7 32 0.5 bm25", "q1 Q0 d8 x 0.5 bm25", "q2 Q0 d9 31", "q9 Q0 d1 1 2.0 bm25"]
    run.write_text(RUN.read_text() + "\n".join(extra) + "\n")
    report = prepare_beir(data, run, tmp_path / "out")
    assert report["skipped_rows"] == {
        "corpus.jsonl: duplicate key (first row kept)": 1,
        "corpus.jsonl: invalid JSON": 1,
        'corpus.jsonl: no "_id" string': 1,
        "qrels/test.tsv: expected 'query-id corpus-id score' (or TREC 'qid 0 docid grade')": 1,
        "qrels/test.tsv: grade 'high' is not a whole number": 1,
        "run.trec: document repeated for the query (first kept)": 1,
        "run.trec: expected 'qid Q0 docid rank score tag'": 1,
        "run.trec: rank is not a whole number or score is not a finite number": 1,
    }
    assert report["bad_lines"][:3] == [
        "corpus.jsonl:46: invalid JSON",
        'corpus.jsonl:47: no "_id" string',
        "corpus.jsonl:48: duplicate key (first row kept)",
    ]
    assert "run.trec:112: document repeated for the query (first kept)" in report["bad_lines"]
    assert report["warnings"] == {"run.trec: document not in corpus.jsonl (kept without text)": 1}
    q1 = read_prepared(tmp_path / "out")["q1"]["candidates"]
    assert q1[-1] == {"id": "d999", "features": {"first_stage_score": 1.0}, "label": 0}
    assert report["counts"]["unjudged_queries_skipped"] == 2  # q5, and q9 of the run


def test_a_judged_query_missing_from_queries_is_skipped(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    lines = (data / "queries.jsonl").read_text().splitlines()
    (data / "queries.jsonl").write_text("\n".join(line for line in lines if '"q2"' not in line) + "\n")
    report = prepare_beir(data, RUN, tmp_path / "out")
    assert "q2" not in read_prepared(tmp_path / "out")
    assert report["counts"]["queries_without_text_skipped"] == 1
    assert report["warnings"] == {"bm25-top30.trec: query not in queries.jsonl (its rows skipped)": 30}


def test_max_candidates_keeps_the_top_of_the_run(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    report = prepare_beir(DATA, RUN, tmp_path, max_candidates=10)
    full, cut = read_prepared(prepared[0]), read_prepared(tmp_path)
    for qid, request in cut.items():
        assert request["candidates"] == full[qid]["candidates"][:10]
    truncation = report["counts"]["truncation"]
    assert (truncation["truncated_requests"], truncation["dropped_candidates"]) == (4, 20 + 20 + 18 + 2)
    lost = sum(1 for qid in cut for c in full[qid]["candidates"][10:] if c["label"] > 0)
    assert report["counts"]["relevant_outside_candidates"] == prepared[1]["counts"]["relevant_outside_candidates"] + lost


def test_missing_qrels_or_corpus_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    shutil.rmtree(data / "qrels")
    with pytest.raises(DataError, match=r"no qrels file found \(looked for qrels/test\.tsv"):
        prepare_beir(data, RUN, tmp_path / "out")
    with pytest.raises(DataError, match=r"no corpus\.jsonl found"):
        prepare_beir(RUN.parent / "sample" / "qrels", RUN, tmp_path / "out")
    with pytest.raises(DataError, match="no such file or folder"):
        prepare_beir(tmp_path / "nothing", RUN, tmp_path / "out")


def test_a_tar_archive_url_is_downloaded_and_unpacked(tmp_path: Path, prepared: tuple[Path, dict[str, Any]]) -> None:
    archive = tmp_path / "sample.tar.gz"
    with tarfile.open(archive, "w:gz") as tarred:
        tarred.add(DATA, arcname="sample")
    prepare_beir(archive.as_uri(), RUN, tmp_path / "out", cache_dir=tmp_path / "cache")
    assert (tmp_path / "out" / "test.jsonl").read_bytes() == (prepared[0] / "test.jsonl").read_bytes()


def test_model_baseline_and_evaluate_run_on_the_output(prepared: tuple[Path, dict[str, Any]]) -> None:
    report = check_prepared_folder(prepared[0])
    assert report["n_requests"] == 3
