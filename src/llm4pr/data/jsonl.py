"""JSON-lines reading with per-line error reports, and atomic JSON writes.

Readers never drop a line silently: every bad line is reported with its file, line number and
reason, and the whole read fails if any line is bad. Writers go through `llm4pr.io.atomic_writer`
(a temporary file and `os.replace`), so a crash never leaves a half-written output behind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from llm4pr.data.errors import DataError, format_validation_error
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.io import atomic_write_text, atomic_writer

T = TypeVar("T")

MAX_REPORTED_ERRORS = 20


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a valid JSON number")


def loads_strict(text: str) -> Any:
    """`json.loads` that rejects NaN and Infinity (Python accepts them; JSON does not)."""
    return json.loads(text, parse_constant=_reject_constant)


def iter_json_lines(path: str | Path) -> Iterator[tuple[int, Any | Exception]]:
    """Yield (line number, parsed object or the parse error) for every non-blank line."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield number, loads_strict(line)
            except ValueError as exc:
                yield number, exc


def read_jsonl(path: str | Path, parse: Callable[[Any], T]) -> list[T]:
    """Parse every line with `parse`; if any line fails, raise one DataError listing them all."""
    records: list[T] = []
    errors: list[str] = []
    for number, obj in iter_json_lines(path):
        if isinstance(obj, Exception):
            errors.append(f"{path}:{number}: invalid JSON: {obj}")
            continue
        try:
            records.append(parse_record(obj, parse, f"{path}:{number}"))
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        shown = errors[:MAX_REPORTED_ERRORS]
        more = len(errors) - len(shown)
        tail = f"\n... and {more} more bad lines" if more else ""
        raise DataError(f"{len(errors)} bad line(s) in {path}:\n" + "\n".join(shown) + tail)
    return records


def parse_record(obj: Any, parse: Callable[[Any], T], where: str) -> T:
    """`parse(obj)`, or a DataError that starts with `where` (file:line) and the request id."""
    try:
        return parse(obj)
    except ValidationError as exc:
        raise DataError(f"{where}: {_record_id(obj)}{format_validation_error(exc)}") from exc
    except (DataError, ValueError, TypeError) as exc:
        raise DataError(f"{where}: {exc}") from exc


def request_parser(schema: FeatureSchema | None) -> Callable[[Any], PostRankRequest]:
    """A parser of one request object; with a schema, features are validated too."""

    def parse(obj: Any) -> PostRankRequest:
        request = PostRankRequest.model_validate(obj)
        return request.check_features(schema) if schema is not None else request

    return parse


def read_requests(path: str | Path, schema: FeatureSchema | None = None) -> list[PostRankRequest]:
    """Read a requests file; with a schema, features are validated too. Request ids must be unique."""
    requests = read_jsonl(path, request_parser(schema))
    _check_unique_ids(path, [r.request_id for r in requests])
    return requests


def read_run(path: str | Path) -> list[RankResult]:
    """Read a run file (`{"request_id", "ranking": [ids]}` per line); request ids must be unique."""
    results = read_jsonl(path, RankResult.model_validate)
    _check_unique_ids(path, [r.request_id for r in results])
    return results


def dumps_line(obj: Any) -> str:
    """One compact JSON line with a stable key order (byte-identical output across runs)."""
    if isinstance(obj, BaseModel):
        obj = obj.model_dump(mode="json", exclude_none=True)
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def write_jsonl(path: str | Path, records: Iterable[Any]) -> int:
    """Atomically write records (dicts or pydantic models) as JSON lines, streaming; return the count."""
    count = 0
    with atomic_writer(path) as handle:
        for record in records:
            handle.write(dumps_line(record) + "\n")
            count += 1
    return count


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write a pretty JSON document."""
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def _record_id(obj: Any) -> str:
    if isinstance(obj, dict) and isinstance(obj.get("request_id"), str):
        return f"request '{obj['request_id']}': "
    return ""


def _check_unique_ids(path: str | Path, ids: list[str]) -> None:
    duplicates = sorted(request_id for request_id, count in Counter(ids).items() if count > 1)
    if duplicates:
        raise DataError(f"{path}: duplicate request ids: {duplicates[:MAX_REPORTED_ERRORS]}")
