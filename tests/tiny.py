"""The tiny random backbone and LLM4PR model the tests run on, and checks shared by the dataset
converter tests.

`tiny_backbone` is a randomly initialised two-layer Llama on an in-memory tokenizer that behaves
like SmolLM2's where the model relies on it; `tiny_model` / `make_model` put an untrained LLM4PR
model on it. Tests that need the backbone as a local model folder (configs and checkpoints name
it by path) take the session fixture `tiny_backbone_dir` (tests/conftest.py), which saves it once
with `save_tiny_backbone`.

Converters are only useful if everything downstream reads their output unchanged: the request
contract (`check_contract`), `evaluate`, a baseline and the model with its sliding window for
long lists (`check_prepared_folder`, a few seconds on a CPU).
"""

from __future__ import annotations

import hashlib
import json
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from llm4pr.baselines import LambdaMARTRanker
from llm4pr.data.jsonl import read_requests
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.features.encoders import FeatureStats
from llm4pr.features.text_encoder import load_text_encoder
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.backbone import prepare_for_generation
from llm4pr.model.factory import build_model
from llm4pr.model.config import ModelConfig
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.prompts import PromptBuilder
from llm4pr.rankers.base import InitialOrderRanker
from llm4pr.training.config import TrainConfig
from tests.toy import TOY_SCHEMA, toy_requests

TINY = ModelConfig(backbone="tiny", dtype="float32", text_encoder="hashing", qia_hidden_dim=32, categorical_dim=8)
SPLITS = ("train", "valid", "test")
OUTPUT_FILES = ["prepare.json", "schema.json", "test.jsonl", "train.jsonl", "valid.jsonl"]

# The type of the session fixture `tiny_train_config` (tests/conftest.py): overrides -> TrainConfig.
TrainConfigFactory = Callable[..., TrainConfig]


def tiny_backbone(
    vocab_tokenizer: PreTrainedTokenizerBase | None = None,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised Llama for fast tests, on `vocab_tokenizer` or a byte-level one.

    The default tokenizer is built in memory (no files, no network) and behaves like SmolLM2's
    where it matters: "A".."Z" and " A".." Z" are one token each, "ABCDE" is five, any text
    round-trips through bytes, and it has the same ChatML special tokens and chat template.
    The model and tokenizer are prepared for batched generation as `load_backbone` prepares a
    loaded backbone. The global torch RNG is left untouched.
    """
    tokenizer = vocab_tokenizer if vocab_tokenizer is not None else _tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.eval()
    prepare_for_generation(model, tokenizer)
    return model, tokenizer


_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2 style byte-level BPE whose only merges are " " + letter."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials)}
    for symbol in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[symbol] = len(vocab)
    merges = [("Ġ", letter) for letter in string.ascii_letters]  # "Ġ" is the byte-level space
    for left, right in merges:
        vocab[left + right] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        chat_template=_CHATML_TEMPLATE,
    )


def save_tiny_backbone(folder: Path, seed: int = 0) -> Path:
    """The tiny random backbone saved as a local model folder, for configs and checkpoints that name
    it: the one way the tests save it (most take the session fixture `tiny_backbone_dir`)."""
    model, tokenizer = tiny_backbone(seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_model(
    schema: FeatureSchema, train_requests: list[PostRankRequest], seed: int = 0, **options: object
) -> tuple[LLM4PRModel, PromptBuilder]:
    """An untrained LLM4PR model on a random tiny backbone, its encoders fitted to `train_requests`;
    `options` are ModelConfig fields set on `TINY`."""
    torch.manual_seed(seed)
    backbone, tokenizer = tiny_backbone(seed=seed)
    config = TINY.model_copy(update=options)
    stats = FeatureStats.fit(schema, train_requests)
    model, tokenizer = build_model(config, schema, stats, backbone, tokenizer, load_text_encoder("hashing"))
    model.eval()
    return model, PromptBuilder(tokenizer, config.identifiers)


def make_model(adapter: str = "qia", seed: int = 0, **options: object) -> tuple[LLM4PRModel, PromptBuilder]:
    """`tiny_model` on the toy schema, its encoders fitted to 30 toy requests."""
    return tiny_model(TOY_SCHEMA, toy_requests(30), seed, adapter=adapter, **options)


def read_prepared(out: Path) -> dict[str, dict[str, Any]]:
    """request_id -> request as written (JSON), with its split added under '_split'; file order kept."""
    requests = {}
    for split in SPLITS:
        for line in (out / f"{split}.jsonl").read_text(encoding="utf-8").splitlines():
            request = json.loads(line)
            requests[request["request_id"]] = {**request, "_split": split}
    return requests


def check_contract(out: Path, report: dict[str, Any]) -> FeatureSchema:
    """The folder holds exactly the output files, `prepare.json` is the returned report with true
    hashes, and every request passes validation against `schema.json`; returns the schema."""
    assert sorted(path.name for path in out.iterdir()) == OUTPUT_FILES  # no scratch file left behind
    assert json.loads((out / "prepare.json").read_text(encoding="utf-8")) == report
    for name, entry in report["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest(), name
    schema = FeatureSchema.load(out / "schema.json")
    for split in SPLITS:
        read_requests(out / f"{split}.jsonl", schema)  # every feature declared and of its kind
    return schema


def assert_permutations(requests: list[PostRankRequest], results: list[RankResult]) -> None:
    assert [r.request_id for r in results] == [r.request_id for r in requests]
    for request, result in zip(requests, results, strict=True):
        assert not result.fallback, f"{result.request_id}: fell back: {result.error}"
        assert sorted(result.ranking) == sorted(request.candidate_ids), result.request_id


def check_prepared_folder(out: Path) -> dict[str, Any]:
    """Load a prepared folder with its schema, then evaluate the ranking-stage order, LambdaMART and
    a tiny LLM4PR model on its test requests; return the ranking-stage order's evaluation report.

    Without training requests (a BEIR set judged for test only) the encoders and the baseline are
    fitted on the test requests: this checks that things run, not how well.
    """
    schema = FeatureSchema.load(out / "schema.json")
    requests = {split: read_requests(out / f"{split}.jsonl", schema) for split in SPLITS}
    test = requests["test"]
    fit_on = requests["train"] or test
    report = evaluate_run(test, InitialOrderRanker().rank(test))

    model, builder = tiny_model(schema, fit_on)
    ranked = LLM4PRRanker(model, builder).rank(test)
    assert_permutations(test, ranked)
    evaluate_run(test, ranked)

    baseline = LambdaMARTRanker(n_estimators=5, min_data_in_leaf=1, text_encoder="hashing")
    baseline_ranked = baseline.fit(fit_on, schema, seed=0).rank(test)
    assert_permutations(test, baseline_ranked)
    evaluate_run(test, baseline_ranked)
    return report
