"""Mixed precision: the backbone's float type chosen per machine, trainable parts and losses in float32."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm4pr.data.jsonl import read_requests
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model import precision
from llm4pr.model.checkpoint import save_checkpoint
from llm4pr.model.config import LoraSettings, ModelConfig
from llm4pr.model.factory import add_lora
from llm4pr.model.precision import attention_implementation, resolve_dtype
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.provenance import DTYPE_PROBE_FILE, bf16_flags, cpuinfo_field, machine, machine_key, write_dtype_probe
from llm4pr.training.examples import ExampleFactory
from llm4pr.training.trainer import Trainer, batch_loss
from tests.tiny import TrainConfigFactory, make_model
from tests.toy import TOY_SCHEMA, toy_requests

EPYC_ZEN1 = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
EPYC_ZEN4 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
XEON_SPR = "processor\t: 0\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n"


def test_bf16_flags_read_from_cpuinfo() -> None:
    assert cpuinfo_field(EPYC_ZEN4 + "model\t\t: 17\nmodel name\t: AMD EPYC\n", "model") == "17"
    assert bf16_flags(EPYC_ZEN1) == frozenset()
    assert bf16_flags(EPYC_ZEN4) == {"avx512_bf16"}
    assert bf16_flags(XEON_SPR) == {"avx512_bf16", "amx_bf16"}
    assert bf16_flags("no flags here") == frozenset()


@pytest.fixture
def probe_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty probe cache of the test's own, probing switched on."""
    monkeypatch.setenv("LLM4PR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(precision.PROBE_ENV, raising=False)
    return tmp_path / "cache" / DTYPE_PROBE_FILE


def _probe_returns(monkeypatch: pytest.MonkeyPatch, speedup: float) -> list[int]:
    calls: list[int] = []
    monkeypatch.setattr(precision, "probe_bf16_speedup", lambda: calls.append(1) or speedup)
    return calls


@pytest.mark.parametrize(("speedup", "expected"), [(2.1, "bfloat16"), (0.6, "float32"), (1.1, "float32")])
def test_auto_on_a_bf16_cpu_picks_what_the_probe_measured_and_caches_it(
    monkeypatch: pytest.MonkeyPatch, probe_cache: Path, speedup: float, expected: str
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: bf16_flags(EPYC_ZEN4))
    calls = _probe_returns(monkeypatch, speedup)
    assert resolve_dtype("auto", "cpu") == expected and calls == [1]
    assert resolve_dtype("auto", "cpu") == expected and calls == [1]  # the second time from the cache
    record = json.loads(probe_cache.read_text())[machine_key()]
    assert (record["dtype"], record["bf16_speedup"]) == (expected, speedup)
    assert machine()["dtype_probe"] == record  # every result file's provenance names the choice
    assert attention_implementation(resolve_dtype("auto", "cpu"), "cpu") == ("eager" if expected == "bfloat16" else "sdpa")
    assert attention_implementation(resolve_dtype("auto", "cpu"), "cpu", "text") == "sdpa"  # long all-text prompts: memory linear in T


def test_a_cached_choice_is_not_measured_again_and_other_machines_records_stay(
    monkeypatch: pytest.MonkeyPatch, probe_cache: Path
) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: bf16_flags(XEON_SPR))
    probe_cache.parent.mkdir(parents=True)
    probe_cache.write_text(json.dumps({machine_key(): {"dtype": "float32"}, "another-machine": {"dtype": "bfloat16"}}))
    calls = _probe_returns(monkeypatch, 3.0)
    assert resolve_dtype("auto", "cpu") == "float32" and calls == []
    probe_cache.write_text("{not json")  # a damaged cache: measured again, and rewritten
    assert resolve_dtype("auto", "cpu") == "bfloat16" and calls == [1]
    assert json.loads(probe_cache.read_text())[machine_key()]["dtype"] == "bfloat16"
    write_dtype_probe({"dtype": "float32"})
    assert set(json.loads(probe_cache.read_text())) == {machine_key()}


def test_without_bf16_units_or_with_probing_off_the_flags_decide(monkeypatch: pytest.MonkeyPatch, probe_cache: Path) -> None:
    calls = _probe_returns(monkeypatch, 3.0)
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: bf16_flags(EPYC_ZEN1))
    assert resolve_dtype("auto", "cpu") == "float32"  # bfloat16 is emulated there: nothing to measure
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: bf16_flags(EPYC_ZEN4))
    monkeypatch.setenv(precision.PROBE_ENV, "0")
    assert resolve_dtype("auto", "cpu") == "bfloat16"  # the documented fallback: flags only
    assert calls == [] and not probe_cache.exists()


def test_a_gpu_takes_bfloat16_without_probing(monkeypatch: pytest.MonkeyPatch, probe_cache: Path) -> None:
    calls = _probe_returns(monkeypatch, 0.1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_dtype("auto", "cuda") == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert resolve_dtype("auto", "cuda") == "float32"
    assert calls == []


def test_the_real_probe_times_both_types() -> None:
    speedup = precision.probe_bf16_speedup(repeats=1)
    assert 0.01 < speedup < 100  # a ratio of two measured times: finite and positive


def test_unknown_dtype_is_an_error_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="'auto', 'bfloat16' or 'float32'.*float16"):
        resolve_dtype("float16")
    assert ModelConfig().dtype == "auto"


def test_bfloat16_backbone_trains_float32_parts_and_ranks_like_float32(tmp_path: Path) -> None:
    model, builder = make_model(seed=3, candidate_prior=True)
    reference, _ = make_model(seed=3, candidate_prior=True)  # the same weights (seeded), kept in float32
    model.backbone.to(torch.bfloat16)
    add_lora(model, LoraSettings(r=4, alpha=8, dropout=0.0))
    model.train()
    factory = ExampleFactory(builder, TOY_SCHEMA, max_history=10, shuffle_candidates=True)
    examples = [factory.main(r, random.Random(0)) for r in toy_requests(4, seed=11)]
    loss = batch_loss(model, builder, examples, listwise_weight=1.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert {p.dtype for p in trainable.values()} == {torch.float32}  # LoRA, QIA, encoders, prior
    assert any("lora_B" in name for name in trainable) and any("adapter" in name for name in trainable)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for name, p in trainable.items() if "lora_B" in name)
    assert model.candidate_prior is not None and model.candidate_prior.weight.grad.abs().sum() > 0  # type: ignore[union-attr]
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert frozen and {p.dtype for p in frozen} == {torch.bfloat16}  # stored once, never cast per call
    save_checkpoint(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["trained_in"] == "bfloat16" and saved["model"]["dtype"] == "float32"  # the tiny config pins float32

    model.eval()  # LoRA's B is still zero: the same function as the float32 reference, rounded
    requests = toy_requests(5, seed=12)
    half = LLM4PRRanker(model, builder, mode="first_token").rank(requests)
    full = LLM4PRRanker(reference, builder, mode="first_token").rank(requests)
    for h, f in zip(half, full):
        assert sorted(h.ranking) == sorted(f.ranking)
        assert h.scores == pytest.approx(f.scores, abs=0.05)
    assert all(sorted(r.ranking) == sorted(c.id for c in q.candidates) for r, q in zip(LLM4PRRanker(model, builder, mode="generate").rank(requests), requests))


def test_a_bfloat16_trained_checkpoint_ranks_identically_in_a_fresh_process(
    tiny_train_config: TrainConfigFactory, toy_data_dir: Path, tmp_path: Path
) -> None:
    config = tiny_train_config()
    config = config.model_copy(update={"model": config.model.model_copy(update={"dtype": "bfloat16"})})
    run_dir = tmp_path / "run"
    Trainer(config, toy_data_dir, run_dir, progress=False).run()
    assert json.loads((resolve_checkpoint(run_dir) / "config.json").read_text())["trained_in"] == "bfloat16"
    requests = read_requests(toy_data_dir / "test.jsonl")
    ranker = LLM4PRRanker.from_pretrained(run_dir, mode="first_token")
    assert ranker.model.backbone_dtype == "bfloat16"
    here = ranker.rank(requests)
    out = tmp_path / "fresh.jsonl"
    command = [sys.executable, "-m", "llm4pr", "rank", "--checkpoint", str(run_dir), "--input", str(toy_data_dir / "test.jsonl"),
               "--output", str(out), "--mode", "first_token"]
    subprocess.run(command, check=True, capture_output=True)
    fresh = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r.request_id, r.ranking) for r in here] == [(f["request_id"], f["ranking"]) for f in fresh]
    assert len({tuple(r.ranking) for r in here}) > 1  # not one fixed order for every request
