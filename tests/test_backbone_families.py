"""What a backbone family changes in LLM4PR's inputs: the soft-token scale and the BOS token.

Soft tokens enter through `inputs_embeds`, past the embedding layer, so their scale is the RMS of
what that LAYER outputs (Gemma's multiplies its rows by sqrt(hidden)); prompts start with the
tokenizer's BOS exactly when the tokenizer itself adds one (Gemma's does; SmolLM2's and Qwen's do
not). For a plain `nn.Embedding` and a tokenizer without BOS nothing changes, bit for bit.

The tiny random families run in a few seconds; the real backbones are `slow` tests that skip
where they are not converted.
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from tokenizers import processors
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from llm4pr.features.encoders import FeatureStats
from llm4pr.features.text_encoder import load_text_encoder
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.backbone import default_cache_dir, load_backbone
from llm4pr.model.config import DEFAULT_IDENTIFIERS
from llm4pr.model.factory import build_model
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.prompts import (
    ADAPTATION_INSTRUCTION,
    AUXILIARY_INSTRUCTION,
    IGNORE_INDEX,
    MAIN_INSTRUCTION,
    Prompt,
    PromptBuilder,
    bos_ids,
    collate,
    shared_prefix,
)
from llm4pr.model.request_prompts import RequestPrompter
from tests.test_backbone_registry import _tiny_family_model
from tests.tiny import TINY, _tiny_tokenizer, tiny_backbone
from tests.toy import TOY_SCHEMA, toy_requests


def _llm4pr_on(backbone: PreTrainedModel) -> LLM4PRModel:
    requests = toy_requests(6, seed=2)
    return LLM4PRModel(TINY, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, requests), backbone, load_text_encoder("hashing"))


def _old_scale(backbone: PreTrainedModel) -> torch.Tensor:
    """The soft-token scale before it looked past the weight: the weight's RMS."""
    return backbone.get_input_embeddings().weight.detach().float().pow(2).mean().sqrt()


# --- the soft-token scale ---


def test_scale_is_the_rms_of_the_scaled_embedding_layers_output() -> None:
    backbone = _tiny_family_model("gemma3")
    layer = backbone.get_input_embeddings()
    with torch.no_grad():
        outputs = layer(torch.arange(layer.weight.shape[0])).float()
    expected = outputs.pow(2).mean().sqrt()
    scale = _llm4pr_on(backbone).soft_token_scale
    torch.testing.assert_close(scale, expected, rtol=1e-5, atol=0.0)
    hidden = backbone.config.hidden_size
    torch.testing.assert_close(scale / _old_scale(backbone), torch.tensor(hidden**0.5), rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_scale_of_a_plain_embedding_is_the_weight_rms_bit_for_bit(family: str, dtype: torch.dtype) -> None:
    backbone = tiny_backbone()[0] if family == "llama" else _tiny_family_model("qwen2")
    backbone = backbone.to(dtype)
    assert type(backbone.get_input_embeddings()) is torch.nn.Embedding
    assert torch.equal(_llm4pr_on(backbone).soft_token_scale, _old_scale(backbone))


# --- the BOS token ---


def _bos_tokenizer() -> PreTrainedTokenizerBase:
    """The tiny tokenizer, made to start every encoded text with its BOS (as Gemma's does)."""
    tokenizer = _tiny_tokenizer()
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    return tokenizer


def test_bos_is_read_from_the_tokenizers_behaviour() -> None:
    with_bos = _bos_tokenizer()
    assert with_bos("Hi")["input_ids"][0] == with_bos.bos_token_id
    assert bos_ids(with_bos) == [with_bos.bos_token_id]
    plain = _tiny_tokenizer()
    assert plain.bos_token_id is not None  # it has a BOS token, but does not add it
    assert bos_ids(plain) == []


def _prompts(builder: PromptBuilder) -> dict[str, Prompt]:
    """Every layout: main and auxiliary task with soft tokens and in words (PTPR), and adaptation."""
    request = toy_requests(1, n_candidates=4, seed=1)[0]
    order = [2, 0, 3, 1]
    prompts = {}
    for style in ("soft", "text"):
        prompter = RequestPrompter(builder, TOY_SCHEMA, max_history=3, prompt_style=style)
        prompts[f"main/{style}"] = prompter.main_task(request, order, target_order=[1, 0, 3, 2])[0]
        prompts[f"inference/{style}"] = prompter.main_task(request, order)[0]
        prompts[f"auxiliary/{style}"] = prompter.auxiliary_task(request, order, [0, 1, 2, 3], [3, 2, 1, 0], better=1)[0]
    prompts["adaptation"] = builder.feature_adaptation(request.query, "a user, an item")
    return prompts


def _check_layout(builder: PromptBuilder, prompt: Prompt) -> None:
    """Slots hold the placeholder, each candidate slot follows its identifier, labels start at the answer."""
    assert len(prompt.labels) == len(prompt.input_ids)
    for position, binding in zip(prompt.slot_positions, prompt.slot_bindings, strict=True):
        assert prompt.input_ids[position] == builder.slot_token_id
        if binding >= 0:
            assert prompt.input_ids[position - 1] == binding
    assert all(label == IGNORE_INDEX for label in prompt.labels[: prompt.answer_start])
    assert prompt.labels[prompt.answer_start :] == prompt.input_ids[prompt.answer_start :]
    assert builder.tokenizer.decode(prompt.input_ids[: prompt.answer_start]).endswith("\nAnswer:")


def test_a_tokenizer_that_adds_bos_gets_it_at_the_start_of_every_prompt() -> None:
    with_bos = PromptBuilder(_bos_tokenizer(), DEFAULT_IDENTIFIERS)
    plain = PromptBuilder(_tiny_tokenizer(), DEFAULT_IDENTIFIERS)
    bos = with_bos.tokenizer.bos_token_id
    assert bos != with_bos.slot_token_id
    expected = _prompts(plain)
    for name, prompt in _prompts(with_bos).items():
        before = expected[name]
        assert prompt.input_ids == [bos] + before.input_ids, name
        assert prompt.labels == [IGNORE_INDEX] + before.labels, name
        assert prompt.slot_positions == [p + 1 for p in before.slot_positions], name
        assert (prompt.slot_sources, prompt.slot_bindings) == (before.slot_sources, before.slot_bindings), name
        assert prompt.answer_start == before.answer_start + 1, name
        # the static prefix (main and auxiliary task) counts the BOS; adaptation declares none
        assert prompt.prefix_length == (before.prefix_length + 1 if before.prefix_length else 0), name
        _check_layout(with_bos, prompt)
    assert with_bos.tokenizer.decode(with_bos.main_task("q", 1, 2).input_ids[1:]).startswith(MAIN_INSTRUCTION)


def test_a_tokenizer_without_bos_lays_out_prompts_as_before() -> None:
    builder = PromptBuilder(_tiny_tokenizer(), DEFAULT_IDENTIFIERS)
    assert builder.bos_ids == []
    for name, prompt in _prompts(builder).items():
        instruction = {"main": MAIN_INSTRUCTION, "inference": MAIN_INSTRUCTION, "auxiliary": AUXILIARY_INSTRUCTION,
                       "adaptation": ADAPTATION_INSTRUCTION}[name.split("/")[0]]
        head = builder.tokenizer(instruction, add_special_tokens=False)["input_ids"]
        assert prompt.input_ids[: len(head)] == head, name
        _check_layout(builder, prompt)


def test_bos_prompts_collate_measure_and_rank_alike_with_and_without_the_prefix_cache() -> None:
    torch.manual_seed(0)
    backbone, tokenizer = tiny_backbone(_bos_tokenizer())
    requests = toy_requests(4, seed=3)
    model, tokenizer = build_model(
        TINY, TOY_SCHEMA, FeatureStats.fit(TOY_SCHEMA, requests), backbone, tokenizer, load_text_encoder("hashing")
    )
    model.eval()
    builder = PromptBuilder(tokenizer, TINY.identifiers)
    bos = tokenizer.bos_token_id

    ranker = LLM4PRRanker(model, builder)
    plain_builder = PromptBuilder(_tiny_tokenizer(), TINY.identifiers)
    plain_length = LLM4PRRanker(model, plain_builder).prompt_length(requests[0])
    assert ranker.prompt_length(requests[0]) == plain_length + 1

    prompts = [ranker.prompter.main_task(r, range(len(r.candidates)))[0] for r in requests]
    prefix = shared_prefix(prompts)
    assert prefix[0] == bos and len(prefix) == prompts[0].prefix_length
    batch = collate(prompts, tokenizer.pad_token_id)
    rows = batch.input_ids[batch.slot_batch, batch.slot_position]
    assert (rows == builder.slot_token_id).all()
    first = batch.attention_mask.argmax(dim=1)  # left padding: each row's first real token
    assert (batch.input_ids[torch.arange(len(prompts)), first] == bos).all()

    cached = LLM4PRRanker(model, builder, cache_prefix=True).rank(requests, mode="first_token")
    uncached = LLM4PRRanker(model, builder, cache_prefix=False).rank(requests, mode="first_token")
    for a, b in zip(cached, uncached, strict=True):
        assert not a.fallback and not b.fallback, (a.error, b.error)
        torch.testing.assert_close(torch.tensor(a.scores), torch.tensor(b.scores), rtol=1e-4, atol=1e-4)


# --- the real backbones (slow; skipped where not converted) ---

# sha256 of the prompts `_real_prompts` gave for SmolLM2 before BOS handling existed (every piece
# encoded with add_special_tokens=False, nothing in front): they must not change.
SMOLLM2_PROMPTS_SHA256 = "4bf921f6a03d832978e5974b904a49ce67779d3288bd46e6ba4ed49cbed97a31"


def _real_backbone(alias: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not (default_cache_dir() / alias).is_dir():
        pytest.skip(f"{alias} is not converted in {default_cache_dir()}")
    try:
        return load_backbone(alias, dtype="float32")
    except ImportError as exc:  # pragma: no cover - depends on the installed packages
        pytest.skip(f"{alias} cannot be loaded here: {exc}")


def _real_prompts(builder: PromptBuilder) -> list[Prompt]:
    """Main and auxiliary task (soft tokens, then words) and adaptation for one toy request."""
    request = toy_requests(3, seed=1)[0]
    order = range(len(request.candidates))
    prompts = []
    for style in ("soft", "text"):
        prompter = RequestPrompter(builder, TOY_SCHEMA, 3, style)
        prompts.append(prompter.main_task(request, order, list(order)[::-1])[0])
        prompts.append(prompter.auxiliary_task(request, order, list(order), list(order)[::-1], 1)[0])
    prompts.append(builder.feature_adaptation(request.query, "hello"))
    return prompts


def _digest(prompts: list[Prompt]) -> str:
    fields = [[p.input_ids, p.labels, p.slot_positions, p.answer_start, p.prefix_length] for p in prompts]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


@pytest.mark.slow
def test_real_smollm2_prompts_and_scale_are_unchanged() -> None:
    backbone, tokenizer = _real_backbone("smollm2-135m-instruct")
    builder = PromptBuilder(tokenizer, DEFAULT_IDENTIFIERS)
    assert builder.bos_ids == []
    prompts = _real_prompts(builder)
    assert _digest(prompts) == SMOLLM2_PROMPTS_SHA256
    head = tokenizer(f"{MAIN_INSTRUCTION}\nQuery:", add_special_tokens=False)["input_ids"]
    assert prompts[0].input_ids[: prompts[0].prefix_length] == head
    for prompt in prompts:
        _check_layout(builder, prompt)
    scale = _llm4pr_on(backbone).soft_token_scale
    # bit for bit the old formula's value (the float itself depends on the reduction's threads)
    assert torch.equal(scale, _old_scale(backbone))


@pytest.mark.slow
def test_real_gemma3_prompts_start_with_bos_and_soft_tokens_have_word_scale() -> None:
    backbone, tokenizer = _real_backbone("gemma3-270m")
    builder = PromptBuilder(tokenizer, DEFAULT_IDENTIFIERS)
    assert tokenizer("Hi")["input_ids"][0] == tokenizer.bos_token_id
    assert builder.bos_ids == [tokenizer.bos_token_id]
    for prompt in _real_prompts(builder):
        assert prompt.input_ids[0] == tokenizer.bos_token_id
        assert tokenizer.bos_token_id not in prompt.input_ids[1:]
        _check_layout(builder, prompt)
    scale = float(_llm4pr_on(backbone).soft_token_scale)
    assert 0.8 < scale < 1.3  # the scaled embedding's output, not the raw weight's ~0.04
    assert float(_old_scale(backbone)) < 0.1
