"""Fetch a dataset from its official URL into a local cache, check its sha256, unpack archives.

Converters accept a URL wherever they take a source (`--source https://...`): the file is
downloaded once into the cache (`--cache-dir`, default `$LLM4PR_CACHE/datasets` or
`~/.cache/llm4pr/datasets`), checked against `--sha256` when given, and reused by later runs.
Zip and tar archives are unpacked beside the download; a half-finished download or unpack never
counts as done, because both land under a temporary name and are renamed when complete.
Any URL `urllib` opens works, `file://` included (the tests use it: they never touch the network).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from llm4pr.data.converters import progress, sha256_file
from llm4pr.data.errors import DataError

URL_SCHEMES = ("http", "https", "ftp", "file")
_BLOCK = 1 << 20


def default_cache_dir() -> Path:
    root = os.environ.get("LLM4PR_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "llm4pr") / "datasets"


def is_url(source: str | Path) -> bool:
    return urllib.parse.urlsplit(str(source)).scheme in URL_SCHEMES


def fetch(url: str, cache_dir: Path | None = None, sha256: str | None = None) -> Path:
    """The URL's file in the cache, downloaded unless already there (and matching `sha256` if given)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name or "download"
    folder = (cache_dir or default_cache_dir()) / hashlib.sha256(url.encode()).hexdigest()[:16]
    target = folder / name
    expected = sha256.lower() if sha256 else None
    if target.is_file() and (expected is None or sha256_file(target) == expected):
        return target
    folder.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            digest = _download(url, handle, name)
        if expected is not None and digest != expected:
            raise DataError(f"{url}: sha256 {digest} does not match the expected {expected}")
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


def unpack(archive: Path) -> Path:
    """The folder holding the archive's contents (unpacked beside it once); other files as they are."""
    opener = _archive_opener(archive)
    if opener is None:
        return archive
    target = archive.with_name(archive.name + ".d")
    if target.is_dir():
        return target
    partial = Path(tempfile.mkdtemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".part"))
    try:
        opener(archive, partial)
        os.replace(partial, target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def fetch_source(source: str | Path, cache_dir: Path | None = None, sha256: str | None = None) -> Path:
    """`source` as a path, or for a URL the downloaded file, unpacked when it is an archive."""
    if not is_url(source):
        if sha256 is not None:
            raise DataError("--sha256 checks a downloaded file; give a URL as the source, or leave it out")
        return Path(source)
    return unpack(fetch(str(source), cache_dir, sha256))


def locate(root: Path, matches: Callable[[Path], bool], what: str) -> Path:
    """`root` if `matches(root)`, else the one folder below it that matches (an unpacked archive)."""
    if not root.exists():
        raise DataError(f"{root}: no such file or folder")
    if matches(root):
        return root
    found = sorted(folder for folder in root.rglob("*") if folder.is_dir() and matches(folder))
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{root}: no {what} found here or in any folder below")
    listed = ", ".join(str(folder) for folder in found[:10])
    raise DataError(f"{root}: several folders hold {what} ({listed}); give the one to use as the source")


def _download(url: str, handle: BinaryIO, name: str) -> str:
    """Stream the URL into `handle` with a progress bar; return the sha256 of the bytes."""
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url) as response:  # noqa: S310 - the user's own URL
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with progress(total=total, desc=f"download {name}", unit="B", unit_scale=True) as bar:
                for block in iter(lambda: response.read(_BLOCK), b""):
                    handle.write(block)
                    digest.update(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"{url}: download failed: {exc}") from exc
    return digest.hexdigest()


def _archive_opener(path: Path) -> Callable[[Path, Path], None] | None:
    if zipfile.is_zipfile(path):
        return _unzip
    if tarfile.is_tarfile(path):
        return _untar
    return None


def _unzip(archive: Path, into: Path) -> None:
    """Every member must land inside `into`: a name like `../x` is refused, not written."""
    root = into.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for member in zipped.namelist():
            if not (root / member).resolve().is_relative_to(root):
                raise DataError(f"{archive}: member {member!r} would be written outside the target folder")
        zipped.extractall(into)


def _untar(archive: Path, into: Path) -> None:
    with tarfile.open(archive) as tarred:
        try:
            tarred.extractall(into, filter="data")  # refuses links and paths that leave `into`
        except tarfile.FilterError as exc:
            raise DataError(f"{archive}: unsafe member refused: {exc}") from exc
