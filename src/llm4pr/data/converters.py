"""What every streaming dataset converter shares: inputs, bad rows, scratch space, outputs, report.

The KuaiSAR, BEIR and LETOR converters read files of millions of lines, so nothing here holds
a whole file in memory:

- `InputFile` yields numbered lines once, with a progress bar (shown on a terminal only), and
  hashes the bytes as they pass, so the report's sha256 costs no second read;
- `RowProblems` counts rejected rows (`skipped_rows`) and kept-but-incomplete ones
  (`warnings`) by "file: reason", and lists the first rejected ones as "file:line: reason";
- `scratch_database` is a temporary SQLite file in the output folder, for the sorts and joins a
  single pass cannot do: SQLite spills them to disk, so memory stays bounded by its page cache
  (its sort files go to the system temp folder, which `SQLITE_TMPDIR` moves);
- `write_splits` writes train/valid/test requests as they are produced, each file atomically;
- `CandidateLimit` applies `--max-candidates` (keep the first N in ranking-stage order);
- `finish` writes `schema.json` and then `prepare.json`, whose presence marks a complete folder.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import dumps_line, write_json
from llm4pr.data.schema import FeatureSchema
from llm4pr.io import atomic_writer

logger = logging.getLogger(__name__)

T = TypeVar("T")

SPLITS = ("train", "valid", "test")
REQUEST_FILES = {split: f"{split}.jsonl" for split in SPLITS}
SCHEMA_FILE = "schema.json"
REPORT_FILE = "prepare.json"
MAX_LISTED_BAD_LINES = 20
SQL_BATCH_ROWS = 10_000
_SCRATCH_CACHE_KIB = 64 * 1024


def progress(**kwargs: Any) -> tqdm:
    """A tqdm bar that shows only on a terminal (`disable=None`), so logs and CI stay clean."""
    return tqdm(disable=None, dynamic_ncols=True, **kwargs)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class InputFile:
    """One input file, read once as numbered text lines, with a byte progress bar and its sha256."""

    def __init__(self, path: Path, name: str | None = None, encoding: str = "utf-8") -> None:
        self.path = path
        self.name = name or path.name
        self.encoding = encoding
        self._digest = hashlib.sha256()
        self._complete = False

    def lines(self, keep_ends: bool = False) -> Iterator[tuple[int, str]]:
        """(line number from 1, text); a leading byte-order mark is dropped, a decoding error names the line."""
        try:
            handle = self.path.open("rb")
        except FileNotFoundError as exc:
            raise DataError(f"{self.path}: file not found") from exc
        with handle, progress(total=self.path.stat().st_size, desc=self.name, unit="B", unit_scale=True) as bar:
            for number, raw in enumerate(handle, start=1):
                self._digest.update(raw)
                bar.update(len(raw))
                try:
                    text = raw.decode(self.encoding)
                except UnicodeDecodeError as exc:
                    raise DataError(f"{self.path}:{number}: not {self.encoding} text ({exc.reason})") from exc
                if number == 1:
                    text = text.removeprefix("\ufeff")
                yield number, text if keep_ends else text.rstrip("\r\n")
        self._complete = True

    @property
    def sha256(self) -> str:
        """The digest of the bytes read, or of the file when it was not read to the end."""
        return self._digest.hexdigest() if self._complete else sha256_file(self.path)


@dataclass
class RowProblems:
    """Rows a reader rejected or kept incomplete, counted by "file: reason"; never dropped silently."""

    skipped_rows: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    bad_lines: list[str] = field(default_factory=list)

    def skip(self, file: str, line: int, reason: str) -> None:
        self.skipped_rows[f"{file}: {reason}"] += 1
        if len(self.bad_lines) < MAX_LISTED_BAD_LINES:
            self.bad_lines.append(f"{file}:{line}: {reason}")

    def warn(self, file: str, reason: str, count: int = 1) -> None:
        self.warnings[f"{file}: {reason}"] += count

    def report(self) -> dict[str, Any]:
        return {
            "skipped_rows": dict(sorted(self.skipped_rows.items())),
            "warnings": dict(sorted(self.warnings.items())),
            "bad_lines": list(self.bad_lines),
        }

    def log(self, dataset: str) -> None:
        for reason, count in sorted(self.skipped_rows.items()):
            logger.warning("%s: skipped %d row(s): %s", dataset, count, reason)
        for reason, count in sorted(self.warnings.items()):
            logger.warning("%s: %d row(s): %s", dataset, count, reason)


def csv_records(
    source: InputFile, required: Sequence[str], problems: RowProblems
) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line number, {column: value}) per data row of a CSV file with a header row.

    A header that lacks a required column is an error; a row whose field count differs from the
    header's is skipped and counted. Quoted fields may span lines.
    """
    lines = source.lines(keep_ends=True)
    reader = csv.reader(text for _, text in lines)
    header = next((row for row in reader if row), None)
    if header is None:
        raise DataError(f"{source.path}: empty file (expected a header row)")
    header = [name.strip() for name in header]
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(f"{source.path}:1: header lacks column(s) {', '.join(missing)} (has: {', '.join(header)})")
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        if not row:
            continue
        if len(row) != len(header):
            problems.skip(source.name, start, f"wrong number of fields ({len(row)}, header has {len(header)})")
            continue
        yield start, dict(zip(header, row, strict=True))


@contextmanager
def scratch_database(folder: Path) -> Iterator[sqlite3.Connection]:
    """A temporary SQLite database in `folder` (created if needed), deleted on exit, even on error.

    Journaling and syncing are off: the file is thrown away, so a crash may lose it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".scratch-") as scratch:
        connection = sqlite3.connect(Path(scratch) / "scratch.sqlite")
        try:
            connection.execute("PRAGMA journal_mode = OFF")
            connection.execute("PRAGMA synchronous = OFF")
            connection.execute(f"PRAGMA cache_size = -{_SCRATCH_CACHE_KIB}")
            yield connection
        finally:
            connection.close()


def insert_batches(connection: sqlite3.Connection, sql: str, rows: Iterator[tuple[Any, ...]]) -> None:
    """`executemany` in fixed-size batches, so that a stream of rows never sits in memory whole."""
    batch: list[tuple[Any, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == SQL_BATCH_ROWS:
            connection.executemany(sql, batch)
            batch.clear()
    if batch:
        connection.executemany(sql, batch)


def insert_first(
    db: sqlite3.Connection, sql: str, values: tuple[Any, ...], problems: RowProblems, file: str, line: int
) -> bool:
    """Run an `INSERT OR IGNORE`: the first row of a key in file order wins, a later one is counted.

    Returns whether the row was inserted.
    """
    if db.execute(sql, values).rowcount == 0:
        problems.skip(file, line, "duplicate key (first row kept)")
        return False
    return True


def write_splits(out: Path, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, int]:
    """Write (split, request) pairs into the three request files as they come; return the counts.

    Each file appears only if the whole stream succeeds (atomic writes), so a failed conversion
    never leaves a partial split behind. A report from an earlier run is removed first: until
    `finish` writes the new one, the folder does not claim to be complete.
    """
    (out / REPORT_FILE).unlink(missing_ok=True)
    counts = {split: 0 for split in SPLITS}
    with ExitStack() as stack:
        handles = {split: stack.enter_context(atomic_writer(out / REQUEST_FILES[split])) for split in SPLITS}
        for split, request in requests:
            handles[split].write(dumps_line(request) + "\n")
            counts[split] += 1
    return counts


@dataclass
class CandidateLimit:
    """`--max-candidates`: keep the first N candidates in ranking-stage order; count what is cut."""

    max_candidates: int | None = None
    truncated_requests: int = 0
    dropped_candidates: int = 0

    def __post_init__(self) -> None:
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"max_candidates must be at least 1, got {self.max_candidates}")

    def apply(self, candidates: list[T]) -> list[T]:
        if self.max_candidates is None or len(candidates) <= self.max_candidates:
            return candidates
        self.truncated_requests += 1
        self.dropped_candidates += len(candidates) - self.max_candidates
        return candidates[: self.max_candidates]

    def report(self) -> dict[str, Any]:
        return {
            "max_candidates": self.max_candidates,
            "policy": "keep the first N in ranking-stage order",
            "truncated_requests": self.truncated_requests,
            "dropped_candidates": self.dropped_candidates,
        }


def finish(
    out: Path,
    schema: FeatureSchema,
    *,
    source: str,
    inputs: Sequence[InputFile],
    options: Mapping[str, Any],
    protocol: Mapping[str, str],
    counts: Mapping[str, Any],
    problems: RowProblems,
    extra_files: Sequence[str] = (),
) -> dict[str, Any]:
    """Write `schema.json`, then `prepare.json` (last: it marks a complete folder); return the report.

    `extra_files`: other outputs the converter already wrote into `out` (hashed in the report too).
    """
    schema.save(out / SCHEMA_FILE)
    report = {
        "dataset": schema.dataset,
        "source": source,
        "input_files": {input_file.name: input_file.sha256 for input_file in inputs},
        "options": dict(options),
        "protocol": dict(protocol),
        "counts": dict(counts),
        **problems.report(),
        "files": {name: {"sha256": sha256_file(out / name)} for name in (*REQUEST_FILES.values(), SCHEMA_FILE, *extra_files)},
    }
    write_json(out / REPORT_FILE, report)
    problems.log(schema.dataset)
    return report


def number_value(number: float) -> int | float:
    """Integral numbers as JSON integers (`4`, not `4.0`): what the raw files say."""
    return int(number) if number.is_integer() else number


def parse_number(text: str) -> int | float | None:
    """A finite number written as text (integral ones as int), or None for anything else."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number_value(number) if math.isfinite(number) else None
