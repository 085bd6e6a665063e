"""MovieLens: read the raw layouts into one in-memory form, then write the paper's requests.

`prepare_movielens(source, out)` is the entry point (`llm4pr data prepare movielens`). `source`
is "recbole" (MovieLens-100K inside the installed recbole==1.2.1 wheel, read as files and never
imported; the string wins over a folder of that name) or a folder whose layout is detected from
the files it holds:

- GroupLens ML-100K: `u.data` (user item rating timestamp), `u.item` (`|`-separated: id, title
  with a "(1995)" suffix, release date, video release date, IMDb URL, 19 genre flags) and
  `u.user` (id|age|gender|occupation|zip); latin-1.
- GroupLens ML-1M: `ratings.dat`, `movies.dat` (`|`-separated genres) and `users.dat`, fields
  separated by "::"; latin-1. Age is the bucket code of the ML-1M README (1 = under 18, else the
  bucket's first year), described as "age group 25+"; occupation codes become their names.
- RecBole atomic files: one `*.inter` with optional `.item` and `.user` of the same stem; UTF-8,
  tab-separated, a typed header (`name:type`) by whose names columns are read. Values are taken
  as they are (RecBole's ml-1m keeps the raw ML-1M codes).

Readers never drop a row silently. A rejected row (wrong field count, a rating or timestamp
that is not a number, a rating outside 1-5, an empty or duplicate id, a second rating of the
same user-item pair: the first in file order is kept) is counted under `skipped_rows`; a kept
but incomplete one under `warnings` (a rating of an item or user missing from the item or user
file is kept without that side's features; a missing title, year, age, ...). Both go to
`prepare.json` and the log. The protocol itself lives in `llm4pr.data.movielens_protocol`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llm4pr.data.converters import parse_number, sha256_file
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import write_json, write_jsonl
from llm4pr.data.movielens_protocol import (
    AGE_DESCRIPTION,
    SPLITS,
    MovieLensData,
    MovieLensRequests,
    Protocol,
    Rating,
    build_schema,
    id_sort_key,
)

logger = logging.getLogger(__name__)

RECBOLE_INSTALL = "pip install --no-deps recbole==1.2.1"
REQUEST_FILES = {split: f"{split}.jsonl" for split in SPLITS}
SCHEMA_FILE = "schema.json"
REPORT_FILE = "prepare.json"
COLD_FILE = "cold.json"

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
ML1M_OCCUPATIONS = (
    "other or not specified", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care", "executive/managerial",
    "farmer", "homemaker", "K-12 student", "lawyer", "programmer", "retired", "sales/marketing",
    "scientist", "self-employed", "technician/engineer", "tradesman/craftsman", "unemployed",
    "writer",
)  # fmt: skip
ML1M_AGE_DESCRIPTION = "age group {value:.0f}+"

# Placeholders that mean "missing": ML-100K's item 267 is "unknown", RecBole copies it as "unkonwn".
_MISSING_TEXT = frozenset({"", "unknown", "unkonwn"})
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})$")


def prepare_movielens(
    source: str | Path,
    out: str | Path,
    seed: int = 0,
    history_length: int = 10,
    segment_length: int = 5,
    prior_weight: float = 0.0,
    cold_items: float = 0.0,
    cold_seed: int = 0,
) -> dict[str, Any]:
    """Write train/valid/test requests, `schema.json` and `prepare.json` into `out`; return the report.

    With `cold_items`, also `cold.json`: the cold items and, per split, how many cold candidates
    each request has (requests without any are left out). Every write is atomic and the output is
    byte-identical for the same input and arguments; `prepare.json` comes last, so its presence
    marks a complete folder.
    """
    protocol = Protocol(
        seed=seed, history_length=history_length, segment_length=segment_length, prior_weight=prior_weight,
        cold_items=cold_items, cold_seed=cold_seed,
    )
    data = load_movielens(source)
    _log_problems(data)
    out = Path(out)
    requests = MovieLensRequests(data, protocol)
    for split in SPLITS:
        write_jsonl(out / REQUEST_FILES[split], requests.requests(split))
    build_schema(data).save(out / SCHEMA_FILE)
    if requests.cold_items:
        cold = {"fraction": cold_items, "seed": cold_seed, "items": sorted(requests.cold_items, key=id_sort_key),
                "cold_candidates": requests.cold_candidates()}
        write_json(out / COLD_FILE, cold)
    report = _report(data, source, protocol, requests, out)
    write_json(out / REPORT_FILE, report)
    return report


def load_movielens(source: str | Path) -> MovieLensData:
    """Read "recbole" or a MovieLens folder (layout detected from its files) into the common form."""
    if str(source) == "recbole":
        return read_atomic(recbole_ml100k_folder() / "ml-100k.inter")
    folder = Path(source)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (expected 'recbole' or a folder of MovieLens files)")
    if (folder / "u.data").is_file():
        return read_grouplens_100k(folder)
    if (folder / "ratings.dat").is_file():
        return read_grouplens_1m(folder)
    inter_files = sorted(folder.glob("*.inter"))
    if len(inter_files) == 1:
        return read_atomic(inter_files[0])
    if inter_files:
        names = ", ".join(path.name for path in inter_files)
        raise DataError(f"{folder}: several RecBole .inter files ({names}); use a folder with one dataset")
    raise DataError(
        f"{folder}: no MovieLens files found; looked for u.data, u.item, u.user (GroupLens ML-100K), "
        "ratings.dat, movies.dat, users.dat (GroupLens ML-1M) or one *.inter file with optional "
        ".item and .user files (RecBole atomic files)"
    )


def recbole_ml100k_folder() -> Path:
    """The ML-100K atomic files shipped in the recbole wheel, found without importing recbole."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            f"source 'recbole' reads MovieLens-100K from the recbole package, which is not installed: {RECBOLE_INSTALL}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise DataError(f"{folder}: ml-100k.inter not found; reinstall the recbole package: {RECBOLE_INSTALL}")
    return folder


def read_grouplens_100k(folder: Path) -> MovieLensData:
    """The GroupLens ML-100K zip's files; the year comes from the title, else the release date."""
    ratings, items, users = _required_files(folder, "GroupLens ML-100K", "u.data", "u.item", "u.user")
    rows = _Collector("ml-100k", "grouplens-100k", (ratings, items, users))
    for user_id, age, gender, occupation, _zip in _split_lines(users, "latin-1", "|", rows, 5):
        features = {"gender": _text(gender), "age": parse_number(age), "occupation": _text(occupation)}
        rows.add_user(users.name, user_id, features)
    for fields in _split_lines(items, "latin-1", "|", rows, 5 + len(ML100K_GENRES)):
        title, year = _split_title(fields[1])
        if year is None:
            year = _date_year(fields[2])
        genres = [genre for genre, flag in zip(ML100K_GENRES, fields[5:], strict=True) if flag.strip() == "1"]
        rows.add_item(items.name, fields[0], {"title": title, "genres": genres or None, "year": year})
    for fields in _split_lines(ratings, "latin-1", None, rows, 4):
        rows.add_rating(ratings.name, *fields)
    return rows.finish(ratings.name, users.name, items.name)


def read_grouplens_1m(folder: Path) -> MovieLensData:
    """The GroupLens ML-1M zip's files; user codes become README names, ages stay bucket codes."""
    ratings, items, users = _required_files(folder, "GroupLens ML-1M", "ratings.dat", "movies.dat", "users.dat")
    rows = _Collector("ml-1m", "grouplens-1m", (ratings, items, users), age_description=ML1M_AGE_DESCRIPTION)
    for user_id, gender, age, occupation, _zip in _split_lines(users, "latin-1", "::", rows, 5):
        features = {"gender": _text(gender), "age": parse_number(age), "occupation": _ml1m_occupation(occupation)}
        rows.add_user(users.name, user_id, features)
    for item_id, raw_title, genres in _split_lines(items, "latin-1", "::", rows, 3):
        title, year = _split_title(raw_title)
        genre_list = [genre for genre in genres.split("|") if genre.strip()]
        rows.add_item(items.name, item_id, {"title": title, "genres": genre_list or None, "year": year})
    for fields in _split_lines(ratings, "latin-1", "::", rows, 4):
        rows.add_rating(ratings.name, *fields)
    return rows.finish(ratings.name, users.name, items.name)


def read_atomic(inter_path: Path) -> MovieLensData:
    """RecBole atomic files; `.item` and `.user` beside the `.inter` file are optional."""
    folder, stem = inter_path.parent, inter_path.stem
    user_path, item_path = folder / f"{stem}.user", folder / f"{stem}.item"
    present = tuple(path for path in (inter_path, item_path, user_path) if path.is_file())
    rows = _Collector(stem, "recbole-atomic", present)
    if user_path.is_file():
        for row in _atomic_rows(user_path, ("user_id",), rows):
            features = {
                "gender": _text(row.get("gender", "")),
                "age": parse_number(row.get("age", "")),
                "occupation": _text(row.get("occupation", "")),
            }
            rows.add_user(user_path.name, row["user_id"], features)
    if item_path.is_file():
        for row in _atomic_rows(item_path, ("item_id",), rows):
            title, title_year = _split_title(_column(row, "movie_title", "title"))
            year = parse_number(_column(row, "release_year", "year"))
            if year is None:
                year = title_year
            genres = _column(row, "class", "genre", "genres").split()
            rows.add_item(item_path.name, row["item_id"], {"title": title, "genres": genres or None, "year": year})
    for row in _atomic_rows(inter_path, ("user_id", "item_id", "rating", "timestamp"), rows):
        rows.add_rating(inter_path.name, row["user_id"], row["item_id"], row["rating"], row["timestamp"])
    return rows.finish(
        inter_path.name,
        user_path.name if user_path.is_file() else None,
        item_path.name if item_path.is_file() else None,
    )


class _Collector:
    """Builds one `MovieLensData` row by row, counting every row it rejects or keeps incomplete."""

    def __init__(
        self, dataset: str, layout: str, files: tuple[Path, ...], age_description: str = AGE_DESCRIPTION
    ) -> None:
        self.data = MovieLensData(
            dataset, layout, users={}, items={}, ratings={}, input_files=files, age_description=age_description
        )

    def skip(self, file: str, reason: str, count: int = 1) -> None:
        self.data.skipped_rows[f"{file}: {reason}"] += count

    def warn(self, file: str, reason: str, count: int = 1) -> None:
        self.data.warnings[f"{file}: {reason}"] += count

    def add_user(self, file: str, user_id: str, features: dict[str, Any]) -> None:
        self._add_entity(file, user_id.strip(), features, self.data.users)

    def add_item(self, file: str, item_id: str, features: dict[str, Any]) -> None:
        self._add_entity(file, item_id.strip(), features, self.data.items)

    def _add_entity(self, file: str, entity_id: str, features: dict[str, Any], table: dict[str, Any]) -> None:
        if not entity_id:
            self.skip(file, "empty id")
        elif entity_id in table:
            self.skip(file, "duplicate id (first row kept)")
        else:
            table[entity_id] = self._present(file, features)

    def _present(self, file: str, features: dict[str, Any]) -> dict[str, Any]:
        """The features that have a value; each missing one is counted, none is invented."""
        for name, value in features.items():
            if value is None:
                self.warn(file, f"{name} missing or invalid (left out)")
        return {name: value for name, value in features.items() if value is not None}

    def add_rating(self, file: str, user_id: str, item_id: str, rating_text: str, timestamp_text: str) -> None:
        user, item = user_id.strip(), item_id.strip()
        if not user or not item:
            self.skip(file, "empty user or item id")
            return
        try:
            rating, timestamp = float(rating_text), float(timestamp_text)
        except ValueError:
            rating = timestamp = math.nan
        if not (math.isfinite(rating) and math.isfinite(timestamp)):
            self.skip(file, "rating or timestamp is not a number")
        elif not 1 <= rating <= 5:
            self.skip(file, "rating out of range 1-5")
        else:
            self.data.ratings.setdefault(sys.intern(user), []).append((timestamp, sys.intern(item), rating))

    def finish(self, ratings_file: str, users_file: str | None, items_file: str | None) -> MovieLensData:
        """Drop second ratings of a user-item pair; count ratings of users or items without a row."""
        for user, ratings in self.data.ratings.items():
            ratings[:] = self._first_per_item(ratings_file, ratings)
            if users_file is not None and user not in self.data.users:
                self.warn(ratings_file, f"user not in {users_file} (ratings kept without user features)", len(ratings))
            if items_file is not None:
                unknown = sum(1 for _, item, _ in ratings if item not in self.data.items)
                if unknown:
                    self.warn(ratings_file, f"item not in {items_file} (ratings kept without item features)", unknown)
        return self.data

    def _first_per_item(self, ratings_file: str, ratings: list[Rating]) -> list[Rating]:
        seen: set[str] = set()
        kept: list[Rating] = []
        for rating in ratings:
            if rating[1] in seen:
                self.skip(ratings_file, "duplicate user-item rating (first row kept)")
            else:
                seen.add(rating[1])
                kept.append(rating)
        return kept


def _required_files(folder: Path, layout: str, *names: str) -> tuple[Path, ...]:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder}: looks like {layout} but lacks {', '.join(missing)} (needs {', '.join(names)})")
    return tuple(folder / name for name in names)


def _lines(path: Path, encoding: str) -> Iterator[str]:
    """Non-blank lines without their line break; a decoding error names the file."""
    try:
        with path.open(encoding=encoding) as handle:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not {encoding} text: {exc}") from exc


def _split_lines(path: Path, encoding: str, separator: str | None, rows: _Collector, width: int) -> Iterator[list[str]]:
    """Rows with exactly `width` fields (`separator` None: any whitespace); others are counted."""
    for line in _lines(path, encoding):
        fields = line.split(separator)
        if len(fields) == width:
            yield fields
        else:
            rows.skip(path.name, "wrong number of fields")


def _atomic_rows(path: Path, required: tuple[str, ...], rows: _Collector) -> Iterator[dict[str, str]]:
    """Rows of a RecBole atomic file as {column name: text}, the `:type` part of the header dropped."""
    lines = _lines(path, "utf-8")
    header = next(lines, "")
    names = [column.split(":", 1)[0].strip() for column in header.split("\t")]
    missing = [name for name in required if name not in names]
    if missing:
        raise DataError(f"{path}: header lacks column(s) {', '.join(missing)} (found: {', '.join(names)})")
    for line in lines:
        fields = line.split("\t")
        if len(fields) == len(names):
            yield dict(zip(names, fields, strict=True))
        else:
            rows.skip(path.name, "wrong number of fields")


def _column(row: dict[str, str], *names: str) -> str:
    """The first of several column names used for one field across RecBole datasets."""
    return next((row[name] for name in names if name in row), "")


def _text(value: str) -> str | None:
    value = value.strip()
    return None if value.lower() in _MISSING_TEXT else value


def _split_title(raw: str) -> tuple[str | None, int | None]:
    """GroupLens titles end in "(1995)": the title without it, and the year."""
    match = _TITLE_YEAR.match(raw.strip())
    if match is None:
        return _text(raw), None
    return _text(match.group(1)), int(match.group(2))


def _date_year(release_date: str) -> int | None:
    match = _DATE_YEAR.search(release_date.strip())
    return int(match.group(1)) if match else None


def _ml1m_occupation(code: str) -> str | None:
    code = code.strip()
    return ML1M_OCCUPATIONS[int(code)] if code.isdigit() and int(code) < len(ML1M_OCCUPATIONS) else None


def _log_problems(data: MovieLensData) -> None:
    for reason, count in sorted(data.skipped_rows.items()):
        logger.warning("%s: skipped %d row(s): %s", data.dataset, count, reason)
    for reason, count in sorted(data.warnings.items()):
        logger.warning("%s: %d row(s): %s", data.dataset, count, reason)


def _report(
    data: MovieLensData, source: str | Path, protocol: Protocol, requests: MovieLensRequests, out: Path
) -> dict[str, Any]:
    written = [*REQUEST_FILES.values(), SCHEMA_FILE, *([COLD_FILE] if requests.cold_items else [])]
    return {
        "dataset": data.dataset,
        "layout": data.layout,
        "source": str(source),
        "input_files": {path.name: sha256_file(path) for path in data.input_files},
        "seed": protocol.seed,
        "protocol": {
            "segment_length": protocol.segment_length,
            "history_length": protocol.history_length,
            "order": "per user by timestamp, ties in file order",
            "remainder": "dropped from the oldest end",
            "split": "per user: last segment test, second-to-last valid, the rest train",
            "statistics": "as of the request: training interactions before its first candidate's timestamp",
            "prior_weight": protocol.prior_weight,
            "cold_items": {"fraction": protocol.cold_items, "seed": protocol.cold_seed, "items": len(requests.cold_items)},
        },
        "counts": {
            **requests.counts(),
            "users_in_user_file": len(data.users),
            "items_in_item_file": len(data.items),
        },
        "skipped_rows": dict(sorted(data.skipped_rows.items())),
        "warnings": dict(sorted(data.warnings.items())),
        "files": {name: {"sha256": sha256_file(out / name)} for name in written},
    }


