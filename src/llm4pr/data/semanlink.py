"""The Semanlink arXiv set as text re-ranking requests (`llm4pr data prepare semanlink`).

Semanlink (http://www.semanlink.net) is a personal knowledge base whose curator tagged arXiv
papers by hand. The `cherche==2.2.1` source distribution (MIT) ships a copy in
`cherche/data/semanlink/`; this converter reads two of its files and nothing else of cherche:

- `arxiv.json`: a JSON array of 314 papers; read per paper: `arxiv_num` (the id), `arxiv_title`,
  `arxiv_summary` (the abstract) and `tag` (the URIs of the tags the curator gave it);
- `tags.json`: a JSON object, tag URI -> entry; read per tag a paper carries: `prefLabel` (a
  string, or a list whose first string is taken).

Protocol:

- **Queries:** every tag that at least one paper carries, except `arxiv_doc` (on every paper: it
  says "this is an arXiv paper", not what it is about). The query text is the tag's `prefLabel`,
  the request id the tag's name (its URI after `/tag/`). On cherche 2.2.1: 432 queries, 314
  documents, 1,001 relevant (query, paper) pairs, 190 queries with two or more relevant papers
  (191 if `arxiv_doc` is counted: it has 314).
- **Split:** per query, a uniform draw in [0, 1) from sha256("<seed>:<request id>"), cut at the
  cumulative `split_ratio` (default 0.5 / 0.2 / 0.3 for train / valid / test). A query's split
  depends on its id and the seed only, never on the other queries or the file order.
- **First stage:** BM25 (bm25s, Lucene's formula, k1 0.9, b 0.4 as in Anserini/Pyserini's BEIR
  runs) over title + abstract, English stop words removed, Snowball English stemming (PyStemmer).
  Candidates are the `depth` (default 20) best papers with a score above 0, best first, ties in
  `arxiv.json` order; a query that matches fewer papers gets fewer candidates.
- **Candidates:** id = the arXiv number; features `text` (the abstract), `title`, and
  `first_stage_score` (the BM25 score, 4 decimals); label 1 if the paper carries the tag, else 0.
  Titles and abstracts have their whitespace collapsed (arXiv hard-wraps abstracts at 80 columns).
  `text` comes first in the schema: a rerank call's documents fill the first item text feature.
- **Relevant papers the first stage missed** cannot be ranked: the request keeps the ones it
  found, and `prepare.json` reports the first stage's recall. In train, a query without a
  relevant candidate is left out (a list without a positive teaches nothing); in valid and test it
  stays a request with all labels 0, so that an evaluation may count it (it scores 0 for every
  re-ranker alike, as in BEIR and TREC). A query that matches no paper at all cannot be a request
  (a request needs a candidate): it is counted, and it is in the split's qrels file.
- **Qrels:** `train.qrels`, `valid.qrels`, `test.qrels` (TREC format, `qid 0 docid 1`) list every
  relevant pair of each split's queries, found by the first stage or not, for evaluations that
  take the ideal ranking from all relevant papers (trec_eval, ranx).
- **No users:** the user is "anonymous" without features and the history is empty, so the same
  checkpoint can answer text-only rerank calls (the service refuses schemas with user features).
- **In words** (feature adaptation's answers, all-text prompts): the abstract's first
  `DESCRIBED_ABSTRACT_CHARS` characters, the title and the BM25 score. The whole abstract would make
  an all-text prompt of 20 candidates about 4,500 tokens; the soft tokens read it whole.
- **Pseudo-queries** (`pseudo_queries=True`, off by default): more training requests made from
  the documents alone, never from a tag. Each paper's title is a query; its candidates are the
  BM25 top `depth` over the abstracts alone (over title + abstract the paper would come first for
  98% of the titles, over the abstracts for 83%), shown with `text` and `first_stage_score` (that
  BM25 score) and without `title` (the paper's own would be the query, word for word); label 1 for
  the paper, 0 for the others. They go into `train.jsonl` (request id `title:<arXiv number>`), so
  every ranker trained on the folder learns from the same requests; a paper that its title does
  not retrieve is left out (counted).

The data is small (13 MB): both files are read whole. Bad or missing files stop the conversion
with an error that names the file and, for a bad record, the record; the set is a fixed release,
so a file that does not match it is not quietly converted into other counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm4pr.data.bm25 import BM25, BM25_B, BM25_K1
from llm4pr.data.converters import InputFile, RowProblems, SPLITS, finish, write_splits
from llm4pr.data.download import locate
from llm4pr.data.errors import DataError
from llm4pr.data.rerank import ANONYMOUS_USER
from llm4pr.data.jsonl import loads_strict
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec
from llm4pr.io import atomic_writer

ARXIV_FILE = "arxiv.json"
TAGS_FILE = "tags.json"
TAG_PREFIX = "http://www.semanlink.net/tag/"
EXCLUDED_TAGS = ("arxiv_doc",)
DEFAULT_DEPTH = 20
DEFAULT_SPLIT_RATIO = (0.5, 0.2, 0.3)
RECALL_DEPTHS = (10, 20, 30, 50, 100)
FIRST_STAGE_DESCRIPTION = (
    f"BM25 ({{versions}}; Lucene's formula, k1 {BM25_K1}, b {BM25_B}) over arxiv_title + arxiv_summary, "
    "lower-cased words of 2+ characters, English stop words removed, Snowball English stemming"
)
DESCRIBED_ABSTRACT_CHARS = 200  # about 40 tokens: all-text prompts of 20 candidates stay near 1,300 tokens
PSEUDO_QUERY_PREFIX = "title:"


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    abstract: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Query:
    id: str
    uri: str
    text: str
    relevant: tuple[int, ...]  # paper positions in arxiv.json order


def prepare_semanlink(
    source: str | Path,
    out: str | Path,
    *,
    depth: int = DEFAULT_DEPTH,
    split_ratio: Sequence[float] = DEFAULT_SPLIT_RATIO,
    seed: int = 0,
    pseudo_queries: bool = False,
) -> dict[str, Any]:
    """Write train/valid/test requests, their qrels, `schema.json` and `prepare.json` into `out`.

    `source` is the folder with `arxiv.json` and `tags.json` (the sdist's
    `cherche/data/semanlink`), or a folder above it (the unpacked sdist). `pseudo_queries` adds
    each paper's title as a training query for its abstract (module docstring).
    """
    if depth < 1:
        raise DataError(f"--depth must be at least 1, got {depth}")
    ratio = check_ratio(split_ratio)
    folder = locate(Path(source), lambda f: (f / ARXIV_FILE).is_file(), ARXIV_FILE)
    arxiv, tags = InputFile(folder / ARXIV_FILE), InputFile(folder / TAGS_FILE)
    papers = load_papers(arxiv.path)
    all_tags = _load_json(tags.path, dict, "an object (tag URI -> tag)")
    queries, excluded = build_queries(papers, all_tags, tags.path)
    first_stage = BM25([f"{paper.title} {paper.abstract}" for paper in papers])

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    split_of = {query.id: query_split(query.id, seed, ratio) for query in queries}
    stats = _Stats()
    rankings = {query.id: first_stage.rank(query.text) for query in queries}
    pseudo = TitleQueries(papers, depth) if pseudo_queries else None

    def requests() -> Iterator[tuple[str, dict[str, Any]]]:
        for query in queries:
            split = split_of[query.id]
            ranking = rankings[query.id]
            candidates = ranking[:depth]
            found = sum(1 for index, _ in candidates if index in query.relevant)
            stats.add(split, query, ranking, found, len(candidates))
            if not candidates:
                continue  # a request needs a candidate; counted, and in the qrels
            if split == "train" and found == 0:
                continue  # nothing to learn from; counted
            yield split, _request(query.id, query.text, candidates, papers, set(query.relevant), titles=True)
        if pseudo is not None:
            yield from (("train", request) for request in pseudo.requests)

    written = write_splits(out, requests())
    qrels_files = _write_qrels(out, queries, papers, split_of)
    counts = {
        "requests": written,
        "queries": len(queries),
        "documents": len(papers),
        "relevant_pairs": sum(len(query.relevant) for query in queries),
        "queries_with_2plus_relevant": sum(1 for query in queries if len(query.relevant) >= 2),
        "excluded_tags": excluded,
        "tags_in_tags_json": len(all_tags),
        "by_split": stats.by_split(depth),
        "first_stage": {"depth": depth, **stats.summary(depth, queries)},
        **({"pseudo_queries": pseudo.counts} if pseudo is not None else {}),
    }
    return finish(
        out,
        build_schema(),
        source=str(source),
        inputs=[arxiv, tags],
        options={"depth": depth, "split_ratio": list(ratio), "seed": seed, "pseudo_queries": pseudo_queries},
        protocol={
            "request": "one per tag carried by a paper, except " + ", ".join(EXCLUDED_TAGS) + "; query = the tag's prefLabel",
            "split": f"per query: a uniform draw from sha256('{seed}:<request id>') cut at split_ratio {list(ratio)} (train, valid, test)",
            "first_stage": FIRST_STAGE_DESCRIPTION.format(versions=BM25.versions()),
            "candidates": f"the first stage's top {depth} with a score above 0, best first, ties in {ARXIV_FILE} order",
            "label": "1 if the paper carries the tag, else 0",
            "missed_relevant": "relevant papers outside the candidates are not added; recall is under counts.first_stage",
            "queries_without_relevant_candidate": "left out of train; kept in valid and test with all labels 0",
            "queries_without_candidates": "no request (a request needs a candidate); counted, and listed in the split's qrels",
            "qrels": "train.qrels, valid.qrels, test.qrels: every relevant pair of the split's queries (TREC format)",
            "user": "anonymous, without features or history (text-only rerank calls can use the checkpoint)",
            **({"pseudo_queries": TitleQueries.description(depth)} if pseudo is not None else {}),
        },
        counts=counts,
        problems=RowProblems(),
        extra_files=qrels_files,
    )


def build_schema() -> FeatureSchema:
    """`text` first: the service's rerank puts a document into the first item text feature."""
    return FeatureSchema(
        dataset="semanlink",
        label="1 if the curator gave the paper the query's tag (a title pseudo-query: if it is the paper's title), else 0",
        features=(
            FeatureSpec(
                name="text", owner="item", kind=FeatureKind.text, description=f"abstract: {{value:.{DESCRIBED_ABSTRACT_CHARS}}}..."
            ),
            FeatureSpec(name="title", owner="item", kind=FeatureKind.text, description="titled {value}"),
            FeatureSpec(
                name="first_stage_score", owner="item", kind=FeatureKind.numerical, description="BM25 score {value:.2f}"
            ),
        ),
    )


def check_ratio(split_ratio: Sequence[float]) -> tuple[float, float, float]:
    ratio = tuple(float(share) for share in split_ratio)
    if len(ratio) != 3 or any(share < 0 for share in ratio) or abs(sum(ratio) - 1.0) > 1e-6:
        raise DataError(f"--split-ratio needs three shares >= 0 (train, valid, test) summing to 1, got {list(split_ratio)}")
    return ratio  # type: ignore[return-value]


def query_split(query_id: str, seed: int, ratio: Sequence[float]) -> str:
    """The query's split: a uniform draw in [0, 1) from sha256(seed:id), cut at the cumulative ratios."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{query_id}".encode()).digest()[:8], "big") / 2**64
    bound = 0.0
    for split, share in zip(SPLITS, ratio, strict=True):
        bound += share
        if draw < bound:
            return split
    return next(split for split, share in zip(reversed(SPLITS), reversed(ratio), strict=True) if share > 0)


def load_papers(path: Path) -> list[Paper]:
    """The papers of `arxiv.json`, in file order; a bad record is an error naming it."""
    records = _load_json(path, list, "an array of papers")
    papers: list[Paper] = []
    seen: dict[str, int] = {}
    for position, record in enumerate(records):
        where = f"{path}: paper [{position}]"
        if not isinstance(record, dict):
            raise DataError(f"{where}: expected an object, got {_json_type(record)}")
        paper_id = record.get("arxiv_num")
        if not isinstance(paper_id, str) or not paper_id.strip():
            raise DataError(f"{where}: \"arxiv_num\" missing or not a non-empty string")
        paper_id = paper_id.strip()
        where = f"{path}: paper [{position}] (arXiv {paper_id})"
        if paper_id in seen:
            raise DataError(f"{where}: the same arxiv_num as paper [{seen[paper_id]}]")
        seen[paper_id] = position
        title, abstract = _text_field(record, "arxiv_title", where), _text_field(record, "arxiv_summary", where)
        tags = record.get("tag")
        if not isinstance(tags, list) or not all(isinstance(tag, str) and tag.strip() for tag in tags):
            raise DataError(f"{where}: \"tag\" missing or not a list of tag URIs")
        papers.append(Paper(paper_id, title, abstract, tuple(dict.fromkeys(tag.strip() for tag in tags))))
    if not papers:
        raise DataError(f"{path}: no papers")
    return papers


def build_queries(papers: list[Paper], tags: dict[str, Any], tags_path: Path) -> tuple[list[Query], dict[str, int]]:
    """One query per tag carried by a paper (except EXCLUDED_TAGS), by request id; and how many
    papers carry each excluded tag."""
    relevant: dict[str, list[int]] = {}
    for position, paper in enumerate(papers):
        for uri in paper.tags:
            relevant.setdefault(uri, []).append(position)
    queries: list[Query] = []
    excluded: dict[str, int] = {}
    for uri, positions in relevant.items():
        query_id = uri.removeprefix(TAG_PREFIX)
        if query_id in EXCLUDED_TAGS:
            excluded[query_id] = len(positions)
            continue
        entry = tags.get(uri)
        if entry is None:
            first = papers[positions[0]]
            raise DataError(f"{tags_path}: no entry for tag {uri!r} (carried by paper arXiv {first.id} in {ARXIV_FILE})")
        queries.append(Query(query_id, uri, _label(entry, uri, tags_path), tuple(positions)))
    if not queries:
        raise DataError(f"{tags_path.parent / ARXIV_FILE}: no paper carries a tag other than {', '.join(EXCLUDED_TAGS)}")
    queries.sort(key=lambda query: query.id)
    return queries, excluded


class _Stats:
    """Counts per split and the first stage's recall, gathered as the requests are produced."""

    def __init__(self) -> None:
        self.splits = {
            split: {
                "queries": 0,
                "relevant_pairs": 0,
                "relevant_in_candidates": 0,
                "queries_without_relevant_candidate": 0,
                "queries_without_candidates": 0,
                "queries_left_out": 0,
                "candidates": 0,
            }
            for split in SPLITS
        }
        self.found_at = {k: 0 for k in RECALL_DEPTHS}
        self.complete = 0
        self.with_relevant = 0

    def add(self, split: str, query: Query, ranking: list[tuple[int, float]], found: int, candidates: int) -> None:
        counts = self.splits[split]
        counts["queries"] += 1
        counts["relevant_pairs"] += len(query.relevant)
        counts["relevant_in_candidates"] += found
        counts["queries_without_relevant_candidate"] += found == 0
        counts["queries_without_candidates"] += candidates == 0
        left_out = candidates == 0 or (split == "train" and found == 0)
        counts["queries_left_out"] += left_out
        counts["candidates"] += 0 if left_out else candidates
        relevant = set(query.relevant)
        for k in RECALL_DEPTHS:
            self.found_at[k] += sum(1 for position, _ in ranking[:k] if position in relevant)
        self.complete += found == len(query.relevant)
        self.with_relevant += found > 0

    def by_split(self, depth: int) -> dict[str, dict[str, Any]]:
        report = {}
        for split, counts in self.splits.items():
            pairs = counts["relevant_pairs"]
            recall = round(counts["relevant_in_candidates"] / pairs, 4) if pairs else None
            report[split] = {**counts, f"recall@{depth}": recall}
        return report

    def summary(self, depth: int, queries: list[Query]) -> dict[str, Any]:
        pairs = sum(len(query.relevant) for query in queries)
        found = sum(counts["relevant_in_candidates"] for counts in self.splits.values())
        return {
            f"recall@{depth}": round(found / pairs, 4),
            "recall_at": {str(k): round(self.found_at[k] / pairs, 4) for k in RECALL_DEPTHS},
            "recall_definition": "relevant (query, paper) pairs among the first k / all relevant pairs",
            "queries_with_a_relevant_candidate": self.with_relevant,
            "queries_with_all_relevant_in_candidates": self.complete,
            "queries_without_candidates": sum(counts["queries_without_candidates"] for counts in self.splits.values()),
        }


class TitleQueries:
    """Pseudo-queries from the documents alone, each paper's title as the query for its abstract:
    more training lists than the ~150 training tags give, without reading any tag."""

    def __init__(self, papers: list[Paper], depth: int) -> None:
        first_stage = BM25([paper.abstract for paper in papers])
        self.requests: list[dict[str, Any]] = []
        left_out = first = 0
        for position, paper in enumerate(papers):
            candidates = first_stage.rank(paper.title)[:depth]
            found = [index for index, _ in candidates]
            if position not in found:
                left_out += 1
                continue
            first += found[0] == position
            request_id = PSEUDO_QUERY_PREFIX + paper.id
            self.requests.append(_request(request_id, paper.title, candidates, papers, {position}, titles=False))
        self.counts = {"requests": len(self.requests), "left_out": left_out, "paper_ranked_first": first}

    @staticmethod
    def description(depth: int) -> str:
        return (
            f"training only: per paper, its title as the query over the first stage's top {depth} on the abstracts alone; "
            f"candidates without 'title'; label 1 for the paper, else 0; request id '{PSEUDO_QUERY_PREFIX}<arxiv_num>'; "
            "a paper outside its own title's candidates is left out"
        )


def _request(
    request_id: str, query: str, candidates: list[tuple[int, float]], papers: list[Paper], relevant: set[int], titles: bool
) -> dict[str, Any]:
    items = []
    for position, score in candidates:
        paper = papers[position]
        features = {"text": paper.abstract, **({"title": paper.title} if titles else {}), "first_stage_score": _number(score)}
        items.append({"id": paper.id, "features": features, "label": int(position in relevant)})
    return {
        "request_id": request_id,
        "query": query,
        "user": {"id": ANONYMOUS_USER, "features": {}},
        "history": [],
        "candidates": items,
    }


def _write_qrels(out: Path, queries: list[Query], papers: list[Paper], split_of: dict[str, str]) -> list[str]:
    names = []
    for split in SPLITS:
        name = f"{split}.qrels"
        with atomic_writer(out / name) as handle:
            for query in queries:
                if split_of[query.id] == split:
                    handle.writelines(f"{query.id} 0 {papers[position].id} 1\n" for position in query.relevant)
        names.append(name)
    return names


def _load_json(path: Path, expected: type, what: str) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found (expected the Semanlink folder of the cherche 2.2.1 sdist)") from exc
    try:
        value = loads_strict(raw.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except ValueError as exc:
        raise DataError(f"{path}: invalid JSON: {exc}") from exc
    if not isinstance(value, expected):
        raise DataError(f"{path}: expected {what}, got {_json_type(value)}")
    return value


def _text_field(record: dict[str, Any], name: str, where: str) -> str:
    value = record.get(name)
    text = " ".join(value.split()) if isinstance(value, str) else ""
    if not text:
        raise DataError(f"{where}: \"{name}\" missing or not a non-empty string")
    return text


def _label(entry: Any, uri: str, path: Path) -> str:
    """The tag's prefLabel: a string, or the first non-empty string of a list."""
    where = f"{path}: tag {uri!r}"
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {_json_type(entry)}")
    value = entry.get("prefLabel")
    labels = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    text = next((" ".join(label.split()) for label in labels if isinstance(label, str) and label.strip()), None)
    if text is None:
        raise DataError(f"{where}: \"prefLabel\" missing or empty (expected a string or a list of strings)")
    return text


def _number(score: float) -> int | float:
    return int(score) if float(score).is_integer() else score


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)
