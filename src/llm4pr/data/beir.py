"""A BEIR dataset plus a first-stage run as post-ranking requests (`llm4pr data prepare beir`).

Inputs, in the layout of the BEIR release (https://github.com/beir-cellar/beir):

- `corpus.jsonl`: one passage per line, `{"_id", "title", "text", ...}`;
- `queries.jsonl`: one query per line, `{"_id", "text", ...}`;
- `qrels/test.tsv`, `qrels/dev.tsv`, `qrels/train.tsv` (any present): a header line, then
  `query-id <tab> corpus-id <tab> score` (TREC's `qid 0 docid grade` is read too);
- the run (`--run`): a TREC run file from the first stage, `qid Q0 docid rank score tag` per
  line, e.g. BM25 top-100 from Pyserini.

Protocol:

- One request per query of the run that a qrels file judges; requests follow the run's query
  order. A query judged in several qrels files goes to the first of test, dev (-> valid), train,
  so that an evaluated query is never a training query. Queries of the run that no qrels file
  judges, or that `queries.jsonl` lacks, are skipped and counted.
- Candidates: the run's documents for the query by the rank column (ties in file order), with
  the passage `title` and `text` and the run's score (`first_stage_score`) as item features.
  A document the corpus lacks stays a candidate without text (counted).
- Label: the qrels grade, 0 where unjudged; a negative grade counts as 0 (as trec_eval does).
- BEIR has no users: every request's user is "anonymous", without features or history.

Streaming: the corpus (millions of passages) and the run (queries x depth lines) go into a
scratch SQLite database as they are read; SQLite returns the run grouped by query, joined with
texts and grades. Python holds one query's candidates at a time.
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from llm4pr.data.converters import (
    CandidateLimit,
    InputFile,
    RowProblems,
    finish,
    insert_batches,
    insert_first,
    number_value,
    progress,
    parse_number,
    scratch_database,
    write_splits,
)
from llm4pr.data.download import fetch_source, locate
from llm4pr.data.errors import DataError
from llm4pr.data.rerank import ANONYMOUS_USER
from llm4pr.data.jsonl import loads_strict
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
# qrels file -> split, in priority order: a query judged in two files belongs to the first.
QRELS_SPLITS = (("test.tsv", "test"), ("dev.tsv", "valid"), ("train.tsv", "train"))

_RUN_ROWS = """
SELECT r.qid, q.text, r.line, r.docid, r.score, d.title, d.text, MAX(COALESCE(g.grade, 0), 0), j.split
FROM run AS r
JOIN run_queries AS o ON o.qid = r.qid
JOIN judged AS j ON j.qid = r.qid
LEFT JOIN queries AS q ON q.id = r.qid
LEFT JOIN docs AS d ON d.id = r.docid
LEFT JOIN qrels AS g ON g.qid = r.qid AND g.docid = r.docid
ORDER BY o.first, r.rank, r.line
"""


class _RunRow(NamedTuple):
    """One run line joined with its query text, document, grade and the query's split."""

    qid: str
    query: str | None
    line: int
    docid: str
    score: float
    title: str | None
    text: str | None
    grade: int
    split: str


def prepare_beir(
    source: str | Path,
    run: str | Path,
    out: str | Path,
    *,
    max_candidates: int | None = None,
    cache_dir: Path | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Write train/valid/test requests, `schema.json` and `prepare.json` into `out`; return the report.

    `source` is a BEIR dataset folder (or one above it), or a URL of its zip; `run` a TREC run file.
    """
    limit = CandidateLimit(max_candidates)
    folder = locate(fetch_source(source, cache_dir, sha256), lambda f: (f / CORPUS_FILE).is_file(), CORPUS_FILE)
    qrels = [(InputFile(folder / "qrels" / name, f"qrels/{name}"), split) for name, split in QRELS_SPLITS]
    qrels = [(input_file, split) for input_file, split in qrels if input_file.path.is_file()]
    if not qrels:
        names = ", ".join(f"qrels/{name}" for name, _ in QRELS_SPLITS)
        raise DataError(f"{folder}: no qrels file found (looked for {names})")
    run_file = InputFile(Path(run))
    corpus, queries = InputFile(folder / CORPUS_FILE), InputFile(folder / QUERIES_FILE)
    inputs = [corpus, queries, *(input_file for input_file, _ in qrels), run_file]
    out = Path(out)
    problems = RowProblems()
    with scratch_database(out) as db:
        _load_corpus(db, corpus, problems)
        _load_queries(db, queries, problems)
        _load_qrels(db, qrels, problems)
        _load_run(db, run_file, problems)
        builder = _QueryRequests(db, limit, problems, run_file.name)
        written = write_splits(out, builder.requests())
        counts = {"requests": written, **builder.counts, "truncation": limit.report()}
    return finish(
        out,
        build_schema(),
        source=str(source),
        inputs=inputs,
        options={"run": str(run), "max_candidates": max_candidates},
        protocol={
            "request": "one per query of the run that a qrels file judges, in run order",
            "split": "qrels/test.tsv -> test, dev.tsv -> valid, train.tsv -> train (first file wins)",
            "candidates": "the run's documents by rank, ties in file order",
            "label": "qrels grade, 0 where unjudged, negative grades as 0",
            "user": "anonymous, without features or history",
        },
        counts=counts,
        problems=problems,
    )


def build_schema() -> FeatureSchema:
    return FeatureSchema(
        dataset="beir",
        label="relevance grade from qrels (0 = unjudged)",
        features=(
            FeatureSpec(name="title", owner="item", kind=FeatureKind.text, description="titled {value}"),
            FeatureSpec(name="text", owner="item", kind=FeatureKind.text, description="passage: {value}"),
            FeatureSpec(
                name="first_stage_score",
                owner="item",
                kind=FeatureKind.numerical,
                description="first-stage score {value:.2f}",
            ),
        ),
    )


class _QueryRequests:
    """Turns the run's rows, grouped by query, into requests; one query at a time."""

    def __init__(self, db: sqlite3.Connection, limit: CandidateLimit, problems: RowProblems, run_name: str) -> None:
        self.db, self.limit, self.problems, self.run_name = db, limit, problems, run_name
        self.counts = {
            "queries_in_run": 0,
            "unjudged_queries_skipped": 0,
            "queries_without_text_skipped": 0,
            "candidates": 0,
            "relevant_outside_candidates": 0,
        }

    def requests(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(split, request) per judged query of the run, in the run's query order."""
        self.db.executescript(
            """
            CREATE TABLE run_queries AS SELECT qid, MIN(line) AS first FROM run GROUP BY qid;
            CREATE INDEX run_queries_in_order ON run_queries (first);
            """
        )
        in_run = self.db.execute("SELECT COUNT(*) FROM run_queries").fetchone()[0]
        judged = self.db.execute("SELECT COUNT(*) FROM run_queries WHERE qid IN (SELECT qid FROM judged)").fetchone()[0]
        self.counts.update(queries_in_run=in_run, unjudged_queries_skipped=in_run - judged)
        with progress(total=judged, desc="queries", unit=" queries") as bar:
            rows = self.db.execute(_RUN_ROWS)
            rows.row_factory = lambda _, values: _RunRow(*values)
            for qid, group in itertools.groupby(rows, key=lambda row: row.qid):
                query = list(group)
                bar.update(1)
                if query[0].query is None:
                    self.counts["queries_without_text_skipped"] += 1
                    self.problems.warn(self.run_name, f"query not in {QUERIES_FILE} (its rows skipped)", len(query))
                    continue
                yield query[0].split, self._request(qid, query)

    def _request(self, qid: str, rows: list[_RunRow]) -> dict[str, Any]:
        candidates: list[dict[str, Any]] = []
        seen: set[str] = set()
        for row in rows:
            if row.docid in seen:
                self.problems.skip(self.run_name, row.line, "document repeated for the query (first kept)")
                continue
            seen.add(row.docid)
            features: dict[str, Any] = {"first_stage_score": number_value(row.score)}
            if row.text is None:
                self.problems.warn(self.run_name, f"document not in {CORPUS_FILE} (kept without text)")
            elif row.title:
                features.update(title=row.title, text=row.text)
            else:
                features["text"] = row.text
            candidates.append({"id": row.docid, "features": features, "label": row.grade})
        candidates = self.limit.apply(candidates)
        self.counts["candidates"] += len(candidates)
        relevant = self.db.execute("SELECT COUNT(*) FROM qrels WHERE qid = ? AND grade > 0", (qid,)).fetchone()[0]
        self.counts["relevant_outside_candidates"] += relevant - sum(1 for c in candidates if c["label"] > 0)
        return {
            "request_id": qid,
            "query": rows[0].query,
            "user": {"id": ANONYMOUS_USER, "features": {}},
            "history": [],
            "candidates": candidates,
        }


def _load_corpus(db: sqlite3.Connection, source: InputFile, problems: RowProblems) -> None:
    db.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, title TEXT, text TEXT)")
    for line, entry_id, record in _json_entries(source, problems):
        title = record.get("title")
        values = (entry_id, title if isinstance(title, str) else "", record["text"])
        insert_first(db, "INSERT OR IGNORE INTO docs VALUES (?, ?, ?)", values, problems, source.name, line)


def _load_queries(db: sqlite3.Connection, source: InputFile, problems: RowProblems) -> None:
    db.execute("CREATE TABLE queries (id TEXT PRIMARY KEY, text TEXT)")
    for line, entry_id, record in _json_entries(source, problems):
        values = (entry_id, record["text"])
        insert_first(db, "INSERT OR IGNORE INTO queries VALUES (?, ?)", values, problems, source.name, line)


def _json_entries(source: InputFile, problems: RowProblems) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line, _id, record) per line of a BEIR JSON-lines file that has an "_id" and a "text" string."""
    for line, text in source.lines():
        if not text.strip():
            continue
        try:
            record = loads_strict(text)
        except ValueError:
            problems.skip(source.name, line, "invalid JSON")
            continue
        entry_id = record.get("_id") if isinstance(record, dict) else None
        if isinstance(entry_id, int) and not isinstance(entry_id, bool):
            entry_id = str(entry_id)  # some corpora write numeric ids
        if not isinstance(entry_id, str) or not entry_id.strip():
            problems.skip(source.name, line, 'no "_id" string')
        elif not isinstance(record.get("text"), str):
            problems.skip(source.name, line, 'no "text" string')
        else:
            yield line, entry_id, record


def _load_qrels(db: sqlite3.Connection, qrels: list[tuple[InputFile, str]], problems: RowProblems) -> None:
    """Grades by (query, document), and each query's split: the first qrels file that judges it."""
    db.executescript(
        """
        CREATE TABLE qrels (qid TEXT, docid TEXT, grade INTEGER, PRIMARY KEY (qid, docid));
        CREATE TABLE judged (qid TEXT PRIMARY KEY, split TEXT);
        """
    )
    for source, split in qrels:
        for line, text in source.lines():
            fields = text.split()
            if not fields or (line == 1 and fields[-1].lower() == "score"):
                continue
            if len(fields) not in (3, 4):
                problems.skip(source.name, line, "expected 'query-id corpus-id score' (or TREC 'qid 0 docid grade')")
                continue
            qid, docid, grade_text = fields[0], fields[-2], fields[-1]
            grade = _grade(grade_text)
            if grade is None:
                problems.skip(source.name, line, f"grade {grade_text!r} is not a whole number")
                continue
            db.execute("INSERT OR IGNORE INTO judged VALUES (?, ?)", (qid, split))
            owner = db.execute("SELECT split FROM judged WHERE qid = ?", (qid,)).fetchone()[0]
            if owner != split:
                problems.skip(source.name, line, f"query already judged for split {owner} (ignored here)")
                continue
            if grade < 0:
                problems.warn(source.name, "negative grade (counts as 0)")
            values = (qid, docid, grade)
            insert_first(db, "INSERT OR IGNORE INTO qrels VALUES (?, ?, ?)", values, problems, source.name, line)


def _load_run(db: sqlite3.Connection, source: InputFile, problems: RowProblems) -> None:
    db.execute("CREATE TABLE run (line INTEGER PRIMARY KEY, qid TEXT, docid TEXT, rank INTEGER, score REAL)")
    insert_batches(db, "INSERT INTO run VALUES (?, ?, ?, ?, ?)", _run_rows(source, problems))
    db.execute("CREATE INDEX run_by_query ON run (qid, rank, line)")  # SQLite then sorts within a query only


def _run_rows(source: InputFile, problems: RowProblems) -> Iterator[tuple[Any, ...]]:
    for line, text in source.lines():
        fields = text.split()
        if not fields:
            continue
        if len(fields) != 6:
            problems.skip(source.name, line, "expected 'qid Q0 docid rank score tag'")
            continue
        qid, _, docid, rank_text, score_text, _ = fields
        rank, score = parse_number(rank_text), parse_number(score_text)
        if not isinstance(rank, int) or score is None:
            problems.skip(source.name, line, "rank is not a whole number or score is not a finite number")
            continue
        yield line, qid, docid, rank, score


def _grade(text: str) -> int | None:
    number = parse_number(text)
    return number if isinstance(number, int) else None
