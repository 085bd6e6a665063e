"""KuaiSAR search sessions as post-ranking requests (`llm4pr data prepare kuaisar`).

Layout of the KuaiSAR release (https://kuaisar.github.io, "Data Descriptions"), read by header
name (other columns, such as a pandas index column, are ignored):

- `src_inter.csv`: one row per item shown in a search session: user_id, search_session_id,
  search_session_time (Beijing time, text; not needed), search_session_timestamp (Unix ms),
  keyword (the anonymised query as token ids, e.g. "[20, 34, 3]"), search_source, item_id,
  click_cnt, item_type (VIDEO, USER, IMAGE_ATLAS, LIVE, COMMODITY, MUSIC, ADVERT);
- `user_features.csv` (optional): user_id, search_active_level, rec_active_level, onehot_feat*;
- `item_features.csv` (optional): item_id, caption (token ids), author_id (0 is padding),
  item_type, upload_time (1970-01-01 is padding), upload_type and, for the first to fourth level,
  `<level>_level_category_id`, `_name` and `_name_en`.

Protocol (the choices, each documented in docs/datasets.md):

- One request per search session (user_id, search_session_id). Candidates are the session's
  items in logged (file) order; label = click_cnt ("clicks") or clicked 1/0 ("binary"). An item
  logged twice in a session keeps its first position and the larger click count. Sessions
  without a click are requests too (all labels 0) unless `drop_unclicked`.
- Query: the keyword tokens joined by spaces (the text the encoders read) and, as categorical
  ids, the request-level user feature `query_tokens`, beside `search_source`.
- History: the user's last `history_length` clicked items from strictly earlier sessions,
  oldest first, label = their click count. Clicks on candidates cut by `--max-candidates` are
  still history: the user made them.
- Split by time: a session's time is its first row's timestamp. Sessions within the last
  `test_days` x 24 h before the latest session are test, the `valid_days` x 24 h before those
  validation, the rest training, so that no training request comes after an evaluated one.
- `days_since_upload` is counted from the upload date to the session's (Beijing) date.

Streaming: `src_inter.csv` has millions of rows and no promised order, so rows go into a scratch
SQLite database as they are read, with the user and item tables; SQLite then returns them
grouped by user, in session time order, joined with the features, sorting on disk. Python holds
one session and one user's history at a time: memory does not grow with the files.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, NamedTuple

from llm4pr.data.converters import (
    CandidateLimit,
    InputFile,
    RowProblems,
    csv_records,
    finish,
    insert_batches,
    insert_first,
    parse_number,
    progress,
    scratch_database,
    write_splits,
)
from llm4pr.data.download import fetch_source, locate
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec

SRC_FILE = "src_inter.csv"
USER_FILE = "user_features.csv"
ITEM_FILE = "item_features.csv"
SRC_REQUIRED = ("user_id", "search_session_id", "search_session_timestamp", "keyword", "item_id", "click_cnt")
LABELS = ("clicks", "binary")
DAY_MS = 86_400_000
BEIJING_OFFSET_MS = 8 * 3_600_000
USER_NUMBERS = ("search_active_level", "rec_active_level")
CATEGORY_LEVELS = ("first", "second", "third", "fourth")
_ONEHOT = re.compile(r"^onehot_feat\d+$")
_TOKEN = re.compile(r"[^\s,\[\]'\"]+")
_PADDING = frozenset({"", "0", "empty", "空", "unknown", "nan", "none", "null"})
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

_SESSION_ROWS = """
SELECT s.user, s.session, s.start, s.keyword, s.source,
       r.line, r.ts, r.keyword, r.item, r.clicks, r.shown, i.features, i.upload_day, u.features
FROM sessions AS s
JOIN rows AS r ON r.user = s.user AND r.session = s.session
LEFT JOIN items AS i ON i.id = r.item
LEFT JOIN users AS u ON u.id = s.user
ORDER BY s.user, s.start, s.first, r.line
"""


class _SessionRow(NamedTuple):
    """One shown item with its session's first-row values and its user's and item's features."""

    user: str
    session: str
    start: float
    keyword: str
    source: str
    line: int
    ts: float
    row_keyword: str
    item: str
    clicks: int
    shown_type: str
    item_features: str | None
    upload_day: int | None
    user_features: str | None


@dataclass(frozen=True)
class KuaiSARProtocol:
    label: str = "clicks"
    drop_unclicked: bool = False
    test_days: float = 1.0
    valid_days: float = 1.0
    history_length: int = 10

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {', '.join(LABELS)}, got {self.label!r}")
        if not self.test_days > 0 or not self.valid_days >= 0:
            raise ValueError(f"test_days must be > 0 and valid_days >= 0, got {self.test_days}, {self.valid_days}")
        if self.history_length < 0:
            raise ValueError(f"history_length must be at least 0, got {self.history_length}")

    def label_value(self, clicks: int) -> int:
        return clicks if self.label == "clicks" else min(clicks, 1)

    def split(self, start_ms: float, last_ms: float) -> str:
        if start_ms > last_ms - self.test_days * DAY_MS:
            return "test"
        if start_ms > last_ms - (self.test_days + self.valid_days) * DAY_MS:
            return "valid"
        return "train"


def prepare_kuaisar(
    source: str | Path,
    out: str | Path,
    *,
    label: str = "clicks",
    drop_unclicked: bool = False,
    test_days: float = 1.0,
    valid_days: float = 1.0,
    history_length: int = 10,
    max_candidates: int | None = None,
    cache_dir: Path | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Write train/valid/test requests, `schema.json` and `prepare.json` into `out`; return the report.

    `source` is the KuaiSAR folder (or one above it), or a URL of the release zip.
    """
    protocol = KuaiSARProtocol(label, drop_unclicked, test_days, valid_days, history_length)
    limit = CandidateLimit(max_candidates)
    folder = locate(fetch_source(source, cache_dir, sha256), lambda f: (f / SRC_FILE).is_file(), SRC_FILE)
    out = Path(out)
    problems = RowProblems()
    inputs = [InputFile(folder / name) for name in (SRC_FILE, USER_FILE, ITEM_FILE) if (folder / name).is_file()]
    present = {input_file.name: input_file for input_file in inputs}
    with scratch_database(out) as db:
        onehots = _load_users(db, present.get(USER_FILE), problems)
        _load_items(db, present.get(ITEM_FILE), problems)
        _load_rows(db, present[SRC_FILE], problems)
        builder = _SessionRequests(db, protocol, limit, problems, present)
        written = write_splits(out, builder.requests())
        counts = {
            "requests": written,
            **builder.counts,
            "users_in_user_file": _table_size(db, "users"),
            "items_in_item_file": _table_size(db, "items"),
            "truncation": limit.report(),
        }
    return finish(
        out,
        build_schema(protocol.label, onehots),
        source=str(source),
        inputs=inputs,
        options={"max_candidates": max_candidates, **asdict(protocol)},
        protocol={
            "request": "one per search session (user_id, search_session_id)",
            "candidates": "the session's items in logged order; a repeated item keeps its first position",
            "label": "click_cnt" if protocol.label == "clicks" else "1 if click_cnt > 0 else 0",
            "query": "keyword tokens joined by spaces; also the user feature query_tokens",
            "history": "the user's last history_length clicked items of earlier sessions, oldest first",
            "split": "by session start: last test_days x 24 h test, the valid_days x 24 h before valid, rest train",
        },
        counts=counts,
        problems=problems,
    )


def build_schema(label: str, onehot_columns: Sequence[str]) -> FeatureSchema:
    """Every feature a KuaiSAR request may carry, with the templates feature adaptation renders."""
    cat, multi, num, text = (
        FeatureKind.categorical,
        FeatureKind.multi_categorical,
        FeatureKind.numerical,
        FeatureKind.text,
    )

    def user(name: str, kind: FeatureKind, description: str) -> FeatureSpec:
        return FeatureSpec(name=name, owner="user", kind=kind, description=description)

    def item(name: str, kind: FeatureKind, description: str) -> FeatureSpec:
        return FeatureSpec(name=name, owner="item", kind=kind, description=description)

    categories = ("category", "subcategory", "third-level category", "fourth-level category")
    return FeatureSchema(
        dataset="kuaisar",
        label="click_cnt (clicks on the item in the session)" if label == "clicks" else "clicked (1) or not (0)",
        features=(
            user("search_active_level", num, "search activity level {value:.0f}"),
            user("rec_active_level", num, "recommendation activity level {value:.0f}"),
            *(user(name, cat, "{name} {value}") for name in onehot_columns),
            user("query_tokens", multi, "searched for tokens {value}"),
            user("search_source", cat, "searched from {value}"),
            item("caption", text, "caption {value}"),
            item("author_id", cat, "by author {value}"),
            item("item_type", cat, "item type {value}"),
            item("upload_type", cat, "uploaded as {value}"),
            *(item(f"category_{n}", cat, f"{words} {{value}}") for n, words in enumerate(categories, start=1)),
            item("days_since_upload", num, "uploaded {value:.0f} days before the search"),
            item("result_type", cat, "shown as a {value} result"),
        ),
    )


@dataclass
class _Shown:
    """One item shown in a session: its static features, click count and upload day."""

    id: str
    features: dict[str, Any]
    clicks: int
    upload_day: int | None

    def at(self, day: int, label: int) -> dict[str, Any]:
        """The item as a request entry on `day`, with its age in days when its upload date is known."""
        features = self.features
        if self.upload_day is not None:
            features = {**features, "days_since_upload": day - self.upload_day}
        return {"id": self.id, "features": features, "label": label}


class _SessionRequests:
    """Turns the sorted session rows into requests, holding one session and one user's history."""

    def __init__(
        self,
        db: sqlite3.Connection,
        protocol: KuaiSARProtocol,
        limit: CandidateLimit,
        problems: RowProblems,
        present: dict[str, InputFile],
    ) -> None:
        self.db, self.protocol, self.limit, self.problems = db, protocol, limit, problems
        self.has_users, self.has_items = USER_FILE in present, ITEM_FILE in present
        self.counts = {"sessions": 0, "users": 0, "candidates": 0, "requests_without_click": 0, "dropped_unclicked": 0}
        self.history: deque[_Shown] = deque(maxlen=protocol.history_length)

    def requests(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(split, request) per session: users in id order, each user's sessions by start time."""
        _index_sessions(self.db)
        last = self.db.execute("SELECT MAX(start) FROM sessions").fetchone()[0]
        user = None
        with progress(total=_table_size(self.db, "sessions"), desc="sessions", unit=" sessions") as bar:
            rows = self.db.execute(_SESSION_ROWS)
            rows.row_factory = lambda _, values: _SessionRow(*values)
            for (session_user, _), group in itertools.groupby(rows, key=lambda row: (row.user, row.session)):
                if session_user != user:
                    user = session_user
                    self.history.clear()
                    self.counts["users"] += 1
                session = list(group)
                request = self._request(session)
                bar.update(1)
                if request is not None:
                    yield self.protocol.split(session[0].start, last), request

    def _request(self, rows: list[_SessionRow]) -> dict[str, Any] | None:
        first = rows[0]
        self.counts["sessions"] += 1
        if any(row.ts != first.start or row.row_keyword != first.keyword for row in rows):
            self.problems.warn(SRC_FILE, "session rows disagree on time or keyword (the first row's are used)")
        if first.user_features is None and self.has_users:
            self.problems.warn(SRC_FILE, f"user not in {USER_FILE} (session kept without user features)")
        day = int((first.start + BEIJING_OFFSET_MS) // DAY_MS)
        label = self.protocol.label_value
        shown = self._unique_items(rows)
        candidates = [entry.at(day, label(entry.clicks)) for entry in self.limit.apply(shown)]
        history = [entry.at(day, label(entry.clicks)) for entry in self.history]
        self.history.extend(entry for entry in shown if entry.clicks > 0)
        if not any(entry["label"] > 0 for entry in candidates):
            if self.protocol.drop_unclicked:
                self.counts["dropped_unclicked"] += 1
                return None
            self.counts["requests_without_click"] += 1
        self.counts["candidates"] += len(candidates)
        features = json.loads(first.user_features) if first.user_features else {}
        if first.keyword:
            features["query_tokens"] = first.keyword.split()
        if first.source:
            features["search_source"] = first.source
        return {
            "request_id": f"u{first.user}-s{first.session}",
            "query": first.keyword,
            "user": {"id": first.user, "features": features},
            "history": history,
            "candidates": candidates,
        }

    def _unique_items(self, rows: list[_SessionRow]) -> list[_Shown]:
        """The session's items in logged order; a repeated item keeps its first position, the larger count."""
        entries: dict[str, _Shown] = {}
        for row in rows:
            if row.item in entries:
                self.problems.warn(SRC_FILE, "item repeated in a session (first position kept, larger click_cnt)")
                entries[row.item].clicks = max(entries[row.item].clicks, row.clicks)
                continue
            if row.item_features is None and self.has_items:
                self.problems.warn(SRC_FILE, f"item not in {ITEM_FILE} (kept without item features)")
            static = json.loads(row.item_features) if row.item_features else {}
            if row.shown_type:
                static["result_type"] = row.shown_type
            entries[row.item] = _Shown(row.item, static, row.clicks, row.upload_day)
        return list(entries.values())


def _index_sessions(db: sqlite3.Connection) -> None:
    """One row per session with its first row's time, keyword and source, indexed in output order.

    The indexes let SQLite stream the session query in order, sorting only within a session.
    """
    db.executescript(
        """
        CREATE INDEX rows_by_session ON rows (user, session, line);
        CREATE TABLE sessions AS
            SELECT g.user, g.session, g.first, f.ts AS start, f.keyword, f.source
            FROM (SELECT user, session, MIN(line) AS first FROM rows GROUP BY user, session) AS g
            JOIN rows AS f ON f.line = g.first;
        CREATE INDEX sessions_in_order ON sessions (user, start, first);
        """
    )


def _load_rows(db: sqlite3.Connection, source: InputFile, problems: RowProblems) -> None:
    db.execute(
        "CREATE TABLE rows (line INTEGER PRIMARY KEY, user TEXT, session TEXT, ts REAL, keyword TEXT,"
        " source TEXT, item TEXT, clicks INTEGER, shown TEXT)"
    )
    insert_batches(db, "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _src_rows(source, problems))


def _src_rows(source: InputFile, problems: RowProblems) -> Iterator[tuple[Any, ...]]:
    for line, row in csv_records(source, SRC_REQUIRED, problems):
        user, session, item = (row[name].strip() for name in ("user_id", "search_session_id", "item_id"))
        timestamp, clicks = parse_number(row["search_session_timestamp"]), _clicks(row["click_cnt"])
        if not (user and session and item):
            problems.skip(source.name, line, "empty user_id, search_session_id or item_id")
        elif timestamp is None:
            problems.skip(source.name, line, "search_session_timestamp is not a number")
        elif clicks is None:
            problems.skip(source.name, line, "click_cnt is not a non-negative whole number")
        else:
            keyword = " ".join(_TOKEN.findall(row["keyword"]))
            shown = row.get("item_type", "").strip()
            yield line, user, session, timestamp, keyword, row.get("search_source", "").strip(), item, clicks, shown


def _load_users(db: sqlite3.Connection, source: InputFile | None, problems: RowProblems) -> tuple[str, ...]:
    """The user table; returns the onehot_feat* columns (categorical features) in header order."""
    db.execute("CREATE TABLE users (id TEXT PRIMARY KEY, features TEXT NOT NULL)")
    if source is None:
        return ()
    onehots: dict[str, None] = {}
    for line, row in csv_records(source, ("user_id",), problems):
        onehots.update((name, None) for name in row if _ONEHOT.match(name))
        features: dict[str, Any] = {name: parse_number(row.get(name, "")) for name in USER_NUMBERS}
        features.update((name, row[name].strip() or None) for name in onehots)
        _insert_entity(db, "users", source.name, line, row["user_id"], features, problems)
    return tuple(onehots)


def _load_items(db: sqlite3.Connection, source: InputFile | None, problems: RowProblems) -> None:
    """The item table: static features as JSON, the upload day apart (the age depends on the session)."""
    db.execute("CREATE TABLE items (id TEXT PRIMARY KEY, features TEXT NOT NULL, upload_day INTEGER)")
    if source is None:
        return
    for line, row in csv_records(source, ("item_id",), problems):
        caption = " ".join(_TOKEN.findall(row.get("caption", "")))
        features: dict[str, Any] = {
            "caption": caption or None,
            "author_id": _present(row.get("author_id", "")),
            "item_type": _present(row.get("item_type", "")),
            "upload_type": _present(row.get("upload_type", "")),
        }
        for n, level in enumerate(CATEGORY_LEVELS, start=1):
            features[f"category_{n}"] = _category(row, level)
        upload = {"upload_time": _upload_day(row.get("upload_time", ""))}
        _insert_entity(db, "items", source.name, line, row["item_id"], features, problems, upload)


def _insert_entity(
    db: sqlite3.Connection,
    table: str,
    file: str,
    line: int,
    entity_id: str,
    features: dict[str, Any],
    problems: RowProblems,
    columns: dict[str, Any] | None = None,
) -> None:
    """Insert one user or item (features as JSON, then any further `columns`); an empty or repeated
    id is skipped, each missing value of a kept row counted."""
    entity_id = entity_id.strip()
    if not entity_id:
        problems.skip(file, line, "empty id")
        return
    columns = columns or {}
    present = json.dumps({k: v for k, v in features.items() if v is not None}, ensure_ascii=False)
    sql = f"INSERT OR IGNORE INTO {table} VALUES ({', '.join('?' * (2 + len(columns)))})"
    if insert_first(db, sql, (entity_id, present, *columns.values()), problems, file, line):
        for name, value in {**features, **columns}.items():
            if value is None:
                problems.warn(file, f"{name} missing, padding or invalid (left out)")


def _category(row: dict[str, str], level: str) -> str | None:
    """The level's English name, else its name, else its id; id 0 and "empty" names are padding."""
    prefix = f"{level}_level_category"
    if row.get(f"{prefix}_id", "").strip() in _PADDING:
        return None
    for column in (f"{prefix}_name_en", f"{prefix}_name", f"{prefix}_id"):
        value = _present(row.get(column, ""))
        if value is not None:
            return value
    return None


def _present(value: str) -> str | None:
    value = value.strip()
    return None if value.lower() in _PADDING else value


def _upload_day(text: str) -> int | None:
    """Days since 1970-01-01 of an upload date ("2023-04-22", time of day ignored); padding is None."""
    try:
        day = date.fromisoformat(text.strip()[:10]).toordinal() - _EPOCH_ORDINAL
    except ValueError:
        return None
    return day if day > 0 else None


def _clicks(text: str) -> int | None:
    number = parse_number(text)
    return number if isinstance(number, int) and number >= 0 else None


def _table_size(db: sqlite3.Connection, table: str) -> int:
    return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
