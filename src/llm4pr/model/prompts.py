"""The prompt builder: the ONLY code that lays out prompts (paper, Figure 2 and Table 2).

A prompt is text with soft-token slots. Text pieces are tokenized separately and concatenated, so
that a slot never merges with its neighbours; each slot is one position whose input embedding the
model replaces with a QIA output (user, history item, candidate or feature-adaptation item).
Labels are -100 on every prompt position: only the answer carries loss. With `EntityTexts` the
same templates describe the user and items in words instead (the PTPR baseline's prompts).

The instruction comes first in every template, so the prefix is the same for all requests of a
task (a serving cache can reuse its keys and values). Candidates are labelled with identifiers
that are ONE token each, written with a leading space (" A", " B", ...) both in the candidate
list and in the answer, so the answer " C A B" is exactly the identifier tokens.

A prompt starts with the tokenizer's BOS token exactly when the tokenizer itself adds one to an
encoded text (Gemma: without `<bos>` it degenerates; SmolLM2 and Qwen add none, and their prompts
have no BOS). The BOS is part of the static prefix, and every slot and answer position counts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import PreTrainedTokenizerBase

from llm4pr.data.requests import Item, User
from llm4pr.data.schema import FeatureSchema
from llm4pr.model.backbone import single_token_ids

IGNORE_INDEX = -100
SlotSource = Literal["user", "history", "candidate", "item"]

MAIN_INSTRUCTION = "Rank the candidates for the user and the query, best first."
AUXILIARY_INSTRUCTION = "Which list ranks the candidates better for the user and the query?"
ADAPTATION_INSTRUCTION = "Describe the user and the item, and predict the rating."
LIST_NAMES = ("I", "II")
ADAPTATION_ANSWER_PARTS = {"user": "The user:", "item": "The item:", "rating": "Rating:"}


@dataclass
class Prompt:
    """One tokenized example: ids, soft-token slots, labels, and where the answer starts."""

    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    slot_positions: list[int] = field(default_factory=list)
    slot_sources: list[tuple[SlotSource, int]] = field(default_factory=list)
    slot_bindings: list[int] = field(default_factory=list)  # per slot: the identifier token it stands for, or -1
    answer_start: int = -1  # index of the first answer token; logits at answer_start - 1 predict it
    prefix_length: int = 0  # leading tokens that are the same for every prompt of the task

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class EntityTexts:
    """All-text prompts (the paper's PTPR baseline): entities described in words, no soft tokens."""

    user: str
    history: Sequence[str]
    candidates: Sequence[str]


@dataclass
class PromptBatch:
    """Left-padded tensors for a batch of prompts (left padding keeps every answer at the end)."""

    input_ids: torch.Tensor  # [B, T]
    attention_mask: torch.Tensor  # [B, T]
    labels: torch.Tensor  # [B, T]
    slot_batch: torch.Tensor  # [S] batch index of every soft slot, in prompt order
    slot_position: torch.Tensor  # [S] position of every soft slot
    slot_sources: list[list[tuple[SlotSource, int]]]  # per prompt, what fills its slots
    slot_binding: torch.Tensor  # [S] identifier token id of every candidate slot, -1 for the others
    answer_start: torch.Tensor  # [B] position (after padding) of the first answer token


class PromptBuilder:
    """Builds the feature-adaptation, main-task and auxiliary-task prompts for one tokenizer."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, identifiers: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.identifiers = list(identifiers)
        self.identifier_ids = single_token_ids(tokenizer, self.identifiers, leading_space=True)
        self.slot_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.bos_ids = bos_ids(tokenizer)  # [] or [bos_token_id]: what every prompt starts with
        self._cache: dict[str, list[int]] = {}

    @property
    def max_candidates(self) -> int:
        return len(self.identifiers)

    def _text(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._cache[text] = ids
        return ids

    # -- shared pieces -------------------------------------------------------------------------

    def _start(self) -> Prompt:
        """A new prompt: the BOS token if the tokenizer adds one, else empty."""
        prompt = Prompt()
        _add_text(prompt, self.bos_ids)
        return prompt

    def _context(
        self,
        prompt: Prompt,
        instruction: str,
        query: str,
        n_history: int,
        n_candidates: int,
        texts: EntityTexts | None,
    ) -> None:
        if n_candidates > self.max_candidates:
            raise ValueError(
                f"{n_candidates} candidates but only {self.max_candidates} identifiers: use the sliding window"
            )
        if texts is not None and (len(texts.history), len(texts.candidates)) != (n_history, n_candidates):
            raise ValueError("EntityTexts must describe exactly the prompt's history and candidates")
        _add_text(prompt, self._text(f"{instruction}\nQuery:"))
        prompt.prefix_length = len(prompt.input_ids)
        _add_text(prompt, self._text(f" {query}\nUser:"))
        if texts is None:
            _add_slot(prompt, self.slot_token_id, "user", 0)
        else:
            _add_text(prompt, self._text(f" {texts.user}"))
        _add_text(prompt, self._text("\nHistory:" if n_history else "\nHistory: none"))
        for index in range(n_history):
            if texts is None:
                _add_slot(prompt, self.slot_token_id, "history", index)
            else:
                _add_text(prompt, self._text(f"\n- {texts.history[index]}"))
        _add_text(prompt, self._text("\nCandidates:"))
        for index in range(n_candidates):
            if texts is not None:
                _add_text(prompt, self._text("\n"))
            prompt.input_ids.append(self.identifier_ids[index])
            prompt.labels.append(IGNORE_INDEX)
            if texts is None:
                _add_slot(prompt, self.slot_token_id, "candidate", index, binding=self.identifier_ids[index])
            else:
                _add_text(prompt, self._text(f": {texts.candidates[index]}"))

    def _answer(self, prompt: Prompt, answer_ids: list[int] | None) -> Prompt:
        _add_text(prompt, self._text("\nAnswer:"))
        prompt.answer_start = len(prompt.input_ids)
        if answer_ids is not None:
            prompt.input_ids.extend(answer_ids)
            prompt.labels.extend(answer_ids)
        return prompt

    def _eos(self) -> list[int]:
        return [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []

    # -- the three templates -------------------------------------------------------------------

    def main_task(
        self,
        query: str,
        n_history: int,
        n_candidates: int,
        target_order: Sequence[int] | None = None,
        texts: EntityTexts | None = None,
    ) -> Prompt:
        """Post-rank: the answer is the candidates' identifiers in the ideal order."""
        prompt = self._start()
        self._context(prompt, MAIN_INSTRUCTION, query, n_history, n_candidates, texts)
        answer = None
        if target_order is not None:
            answer = [self.identifier_ids[i] for i in target_order] + self._eos()
        return self._answer(prompt, answer)

    def auxiliary_task(
        self,
        query: str,
        n_history: int,
        n_candidates: int,
        list_one: Sequence[int],
        list_two: Sequence[int],
        better: int | None = None,
        texts: EntityTexts | None = None,
    ) -> Prompt:
        """Judge two orders of the candidates: the answer is " I" or " II", the higher-NDCG list."""
        prompt = self._start()
        self._context(prompt, AUXILIARY_INSTRUCTION, query, n_history, n_candidates, texts)
        for name, order in zip(LIST_NAMES, (list_one, list_two), strict=True):
            _add_text(prompt, self._text(f"\nList {name}:"))
            for index in order:
                prompt.input_ids.append(self.identifier_ids[index])
                prompt.labels.append(IGNORE_INDEX)
        answer = None if better is None else self._text(f" {LIST_NAMES[better]}") + self._eos()
        return self._answer(prompt, answer)

    def feature_adaptation(self, query: str, description: str | None = None) -> Prompt:
        """Feature adaptation: from a user and an item soft token, say what they are and the rating."""
        prompt = self._start()
        _add_text(prompt, self._text(f"{ADAPTATION_INSTRUCTION}\nQuery: {query}\nUser:"))
        _add_slot(prompt, self.slot_token_id, "user", 0)
        _add_text(prompt, self._text("\nItem:"))
        _add_slot(prompt, self.slot_token_id, "item", 0)
        answer = None if description is None else self._text(f" {description}") + self._eos()
        return self._answer(prompt, answer)


def bos_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """`[bos_token_id]` when the tokenizer itself starts an encoded text with its BOS token
    (`add_special_tokens=True`), else `[]`: read from the tokenizer's behaviour, not a model list.

    Prompts are tokenized piece by piece without special tokens (slots must not merge with their
    neighbours), so the BOS the tokenizer would add is put in front of them here."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    probe = "a"
    with_special = tokenizer(probe, add_special_tokens=True)["input_ids"]
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    return [bos] if with_special[:1] == [bos] and plain[:1] != [bos] else []


def adaptation_answer(schema: FeatureSchema, user: User, item: Item) -> str:
    """The feature-adaptation answer: the user and the item in the schema's words, then the label."""
    marks = ADAPTATION_ANSWER_PARTS
    return (
        f"{marks['user']} {schema.describe('user', user.features)}. "
        f"{marks['item']} {schema.describe('item', item.features)}. "
        f"{marks['rating']} {item.label:g}"
    )


def split_adaptation_answer(text: str) -> dict[str, str]:
    """A generated feature-adaptation answer cut into its parts ("user", "item", "rating"): each
    runs from its mark to the next mark found; a part whose mark is missing is empty."""
    found = sorted((start, part) for part, mark in ADAPTATION_ANSWER_PARTS.items() if (start := text.find(mark)) >= 0)
    parts = dict.fromkeys(ADAPTATION_ANSWER_PARTS, "")
    for index, (start, part) in enumerate(found):
        end = found[index + 1][0] if index + 1 < len(found) else len(text)
        parts[part] = text[start + len(ADAPTATION_ANSWER_PARTS[part]) : end].strip().rstrip(".").strip()
    return parts


def entity_texts(schema: FeatureSchema, user: User, history: Sequence[Item], candidates: Sequence[Item]) -> EntityTexts:
    """Describe the prompt's entities with the schema's templates (all-text prompts)."""
    return EntityTexts(
        user=schema.describe("user", user.features),
        history=[schema.describe("item", item.features) for item in history],
        candidates=[schema.describe("item", item.features) for item in candidates],
    )


def _without_prefix(prompt: Prompt, length: int) -> Prompt:
    if any(position < length for position in prompt.slot_positions) or prompt.answer_start < length:
        raise ValueError(f"cannot skip {length} tokens: soft tokens or the answer lie inside them")
    return Prompt(
        input_ids=prompt.input_ids[length:],
        labels=prompt.labels[length:],
        slot_positions=[p - length for p in prompt.slot_positions],
        slot_sources=list(prompt.slot_sources),
        slot_bindings=list(prompt.slot_bindings),
        answer_start=prompt.answer_start - length,
        prefix_length=max(prompt.prefix_length - length, 0),
    )


def _add_text(prompt: Prompt, ids: list[int]) -> None:
    prompt.input_ids.extend(ids)
    prompt.labels.extend([IGNORE_INDEX] * len(ids))


def _add_slot(prompt: Prompt, slot_token_id: int, source: SlotSource, index: int, binding: int = -1) -> None:
    """A soft-token slot; `binding` is the identifier token a candidate slot stands for (its label
    in the list), which the model may add to the slot's input (`ModelConfig.bind_identifiers`)."""
    prompt.slot_positions.append(len(prompt.input_ids))
    prompt.slot_sources.append((source, index))
    prompt.slot_bindings.append(binding)
    prompt.input_ids.append(slot_token_id)
    prompt.labels.append(IGNORE_INDEX)


def shared_prefix(prompts: Sequence[Prompt]) -> list[int]:
    """The static prefix all prompts start with (empty unless every prompt has the same one)."""
    first = prompts[0].input_ids[: prompts[0].prefix_length]
    if all(p.input_ids[: p.prefix_length] == first for p in prompts):
        return list(first)
    return []


def collate(prompts: Sequence[Prompt], pad_token_id: int, skip_prefix: int = 0) -> PromptBatch:
    """Left-pad a batch of prompts into tensors, leaving out the first `skip_prefix` tokens of each
    (whose keys and values come from a cache)."""
    if skip_prefix:
        prompts = [_without_prefix(p, skip_prefix) for p in prompts]
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    labels = torch.full((len(prompts), width), IGNORE_INDEX, dtype=torch.long)
    slot_batch: list[int] = []
    slot_position: list[int] = []
    slot_binding: list[int] = []
    answer_start = []
    for row, prompt in enumerate(prompts):
        offset = width - len(prompt)
        input_ids[row, offset:] = torch.tensor(prompt.input_ids)
        attention_mask[row, offset:] = 1
        labels[row, offset:] = torch.tensor(prompt.labels)
        slot_batch.extend([row] * len(prompt.slot_positions))
        slot_position.extend(offset + p for p in prompt.slot_positions)
        slot_binding.extend(prompt.slot_bindings)
        answer_start.append(offset + prompt.answer_start)
    return PromptBatch(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        slot_batch=torch.tensor(slot_batch, dtype=torch.long),
        slot_position=torch.tensor(slot_position, dtype=torch.long),
        slot_sources=[list(p.slot_sources) for p in prompts],
        slot_binding=torch.tensor(slot_binding, dtype=torch.long),
        answer_start=torch.tensor(answer_start, dtype=torch.long),
    )
