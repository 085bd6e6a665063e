"""LETOR / svmlight feature files as post-ranking requests (`llm4pr data prepare letor`).

Format (LETOR 3.0/4.0, MSLR-WEB10K/30K, Yahoo! LTR, Istella): one document per line,

    label qid:Q index:value index:value ... # comment

`label` is the relevance grade, feature indices are positive integers (sparse lines leave
features out), and the comment is free text; LETOR's "docid = GX..." in it names the document.

Protocol:

- One request per qid, in file order; the candidates are the qid's lines in file order (the
  ranking-stage order) with label = the grade. A query's lines must be contiguous, as every
  published file has them: lines of a qid that already ended are bad lines.
- Every feature is a numerical item feature `f<index>`, declared for indices 1..N (N = the
  largest index seen). A feature a sparse line leaves out is absent, which the encoders treat
  as missing (a value plus a missing flag) rather than as 0.
- Candidate ids: the comment's docids when every line of the query has a distinct one, else
  `<qid>-<position>` (position from 1 in file order).
- No query text and no users: query "" and user "anonymous" without features or history.
- Splits: a folder holding the published split files (`train.txt`, `vali.txt`, `test.txt`, or
  Yahoo's `set1.train.txt`, ...) keeps them; a single file is split by qid with `split_ratio`
  (train, valid, test), each qid drawn independently from a hash of the seed and the qid (exact
  proportions in expectation; the same qid always lands in the same split), by default all test.
- Bad lines (no qid, a malformed feature, a repeated index, a non-finite number, a qid that
  already ended) are skipped and listed with their line numbers in the report.

Streaming: only the current query's lines are held; the files are read once.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm4pr.data.converters import (
    SPLITS,
    CandidateLimit,
    InputFile,
    RowProblems,
    finish,
    parse_number,
    write_splits,
)
from llm4pr.data.download import fetch_source, locate
from llm4pr.data.errors import DataError
from llm4pr.data.rerank import ANONYMOUS_USER
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec

SPLIT_WORDS = {"train": "train", "vali": "valid", "valid": "valid", "test": "test"}
_DOCID = re.compile(r"\bdocid\s*=\s*(\S+)")


@dataclass
class _Document:
    line: int
    label: int | float
    features: dict[str, int | float]
    docid: str | None


def prepare_letor(
    source: str | Path,
    out: str | Path,
    *,
    split_ratio: Sequence[float] = (0.0, 0.0, 1.0),
    seed: int = 0,
    max_candidates: int | None = None,
    cache_dir: Path | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Write train/valid/test requests, `schema.json` and `prepare.json` into `out`; return the report.

    `source` is one LETOR file (split by `split_ratio`), a folder of published split files, or a
    URL of either (an archive is unpacked; several candidate folders, as MSLR's Fold1..Fold5,
    must then be chosen by giving the unpacked folder).
    """
    ratio = _check_ratio(split_ratio)
    limit = CandidateLimit(max_candidates)
    path = fetch_source(source, cache_dir, sha256)
    if path.is_file():
        files: list[tuple[InputFile, str | None]] = [(InputFile(path), None)]
    elif ratio != (0.0, 0.0, 1.0):
        raise DataError(f"{path}: a folder of split files keeps its splits; split_ratio applies to a single file")
    else:
        files = _split_files(locate(path, _has_split_files, "LETOR split files (train.txt, vali.txt, test.txt)"))
    problems = RowProblems()
    reader = _Reader(problems)
    out = Path(out)

    def requests() -> Iterator[tuple[str, dict[str, Any]]]:
        for input_file, split in files:
            for qid, documents in reader.queries(input_file):
                candidates = limit.apply(_candidates(qid, documents))
                reader.counts["candidates"] += len(candidates)
                yield split or _ratio_split(qid, ratio, seed), _request(qid, candidates)

    written = write_splits(out, requests())
    return finish(
        out,
        build_schema(reader.max_index),
        source=str(source),
        inputs=[input_file for input_file, _ in files],
        options={"split_ratio": list(ratio), "seed": seed, "max_candidates": max_candidates},
        protocol={
            "request": "one per qid, in file order; the qid's lines in file order are the candidates",
            "features": "f1..fN numerical; features a sparse line leaves out are absent (missing)",
            "ids": "the comment's docids when distinct within the query, else <qid>-<position>",
            "split": "the published split files" if path.is_dir() else "per qid by a seeded hash and split_ratio",
        },
        counts={"requests": written, **reader.counts, "features": reader.max_index, "truncation": limit.report()},
        problems=problems,
    )


def build_schema(num_features: int) -> FeatureSchema:
    return FeatureSchema(
        dataset="letor",
        label="relevance grade",
        features=tuple(
            FeatureSpec(name=f"f{index}", owner="item", kind=FeatureKind.numerical, description="{name} = {value:.4g}")
            for index in range(1, num_features + 1)
        ),
    )


class _Reader:
    """Groups each file's lines into queries, rejecting bad lines and repeated qids."""

    def __init__(self, problems: RowProblems) -> None:
        self.problems = problems
        self.max_index = 0
        self.counts = {"queries": 0, "documents": 0, "candidates": 0}
        self._ended: dict[str, str] = {}  # qid -> "file:line" where its lines ended

    def queries(self, source: InputFile) -> Iterator[tuple[str, list[_Document]]]:
        qid: str | None = None
        documents: list[_Document] = []
        for line, text in source.lines():
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            try:
                line_qid, document = _parse(line, text)
            except ValueError as exc:
                self.problems.skip(source.name, line, str(exc))
                continue
            if line_qid in self._ended:
                self.problems.skip(source.name, line, f"qid {line_qid} already ended at {self._ended[line_qid]}")
                continue
            if line_qid != qid:
                if qid is not None:
                    yield self._ended_query(source, qid, documents)
                qid, documents = line_qid, []
            documents.append(document)
            self.max_index = max(self.max_index, *(int(name[1:]) for name in document.features), 0)
        if qid is not None:
            yield self._ended_query(source, qid, documents)

    def _ended_query(self, source: InputFile, qid: str, documents: list[_Document]) -> tuple[str, list[_Document]]:
        self._ended[qid] = f"{source.name}:{documents[-1].line}"
        self.counts["queries"] += 1
        self.counts["documents"] += len(documents)
        return qid, documents


def _parse(line: int, text: str) -> tuple[str, _Document]:
    """One line as (qid, document); ValueError says what is wrong with it."""
    body, _, comment = text.partition("#")
    fields = body.split()
    if len(fields) < 2 or not fields[1].startswith("qid:") or len(fields[1]) == 4:
        raise ValueError("expected 'label qid:Q index:value ... # comment'")
    label = _finite(fields[0], "label")
    features: dict[str, int | float] = {}
    for field in fields[2:]:
        index_text, colon, value_text = field.partition(":")
        if not colon or not index_text.isdigit() or int(index_text) < 1:
            raise ValueError(f"feature {field!r} is not index:value with a positive whole index")
        name = f"f{int(index_text)}"
        if name in features:
            raise ValueError(f"feature index {int(index_text)} repeated")
        features[name] = _finite(value_text, f"feature {int(index_text)}")
    docid = _DOCID.search(comment)
    return fields[1][4:], _Document(line, label, features, docid.group(1) if docid else None)


def _finite(text: str, what: str) -> int | float:
    number = parse_number(text)
    if number is None:
        raise ValueError(f"{what} {text!r} is not a finite number")
    return number


def _candidates(qid: str, documents: list[_Document]) -> list[dict[str, Any]]:
    docids = [document.docid for document in documents]
    if None in docids or len(set(docids)) != len(docids):
        docids = [f"{qid}-{position}" for position in range(1, len(documents) + 1)]
    return [
        {"id": docid, "features": document.features, "label": document.label}
        for docid, document in zip(docids, documents, strict=True)
    ]


def _request(qid: str, candidates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "request_id": qid,
        "query": "",
        "user": {"id": ANONYMOUS_USER, "features": {}},
        "history": [],
        "candidates": candidates,
    }


def _ratio_split(qid: str, ratio: tuple[float, float, float], seed: int) -> str:
    """The qid's split: a uniform draw in [0, 1) from sha256(seed:qid), cut at the cumulative ratios."""
    draw = int.from_bytes(hashlib.sha256(f"{seed}:{qid}".encode()).digest()[:8], "big") / 2**64
    if draw < ratio[0]:
        return "train"
    return "valid" if draw < ratio[0] + ratio[1] else "test"


def _check_ratio(split_ratio: Sequence[float]) -> tuple[float, float, float]:
    ratio = tuple(float(share) for share in split_ratio)
    valid = len(ratio) == 3 and all(math.isfinite(share) and share >= 0 for share in ratio)
    if not valid or not math.isclose(sum(ratio), 1.0):
        raise ValueError(f"split_ratio needs three shares >= 0 (train, valid, test) summing to 1, got {split_ratio}")
    return ratio  # type: ignore[return-value]


def _split_of(path: Path) -> str | None:
    """The split a published file holds, from the words of its name: `vali.txt`, `set1.train.txt`."""
    words = path.name.lower().split(".")
    splits = {SPLIT_WORDS[word] for word in words if word in SPLIT_WORDS}
    return splits.pop() if len(splits) == 1 else None


def _has_split_files(folder: Path) -> bool:
    return any(_split_of(path) for path in folder.glob("*.txt"))


def _split_files(folder: Path) -> list[tuple[InputFile, str | None]]:
    """The folder's split files in train, valid, test order; two files for one split is an error."""
    by_split: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("*.txt")):
        split = _split_of(path)
        if split is not None:
            by_split.setdefault(split, []).append(path)
    doubled = {split: paths for split, paths in by_split.items() if len(paths) > 1}
    if doubled:
        listed = "; ".join(f"{split}: {', '.join(p.name for p in paths)}" for split, paths in doubled.items())
        raise DataError(f"{folder}: several files for one split ({listed}); give one file as the source")
    return [(InputFile(by_split[split][0]), split) for split in SPLITS if split in by_split]
