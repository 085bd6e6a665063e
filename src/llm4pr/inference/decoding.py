"""Turning the model's logits into orders of the candidates shown in a prompt.

- `constrained`: the paper's greedy decoding of identifiers, where each step may only emit a
  candidate not yet emitted: the output is always a permutation. The prompt is encoded once and
  its key/value cache reused for every step; each step projects onto the identifier tokens' rows
  of the LM head only.
- `first_token`: one forward pass; candidates ordered by their identifier's logit at the first
  answer position (FIRST, Reddy et al. 2024). No decoding loop.
- `unconstrained`: free greedy decoding, then `repair`: unknown and repeated identifiers are
  dropped and the missing candidates appended in shown order; the repair is counted.

All functions take a left-padded batch, so every row's answer starts at the last position.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from llm4pr.model.llm4pr import LLM4PRModel, PromptInputs, full_attention_mask, position_ids
from llm4pr.model.prompts import PromptBatch
from llm4pr.rankers.base import MODES, Mode


@dataclass
class Decoded:
    order: list[int]  # positions in the shown candidate list, best first
    scores: list[float] | None = None  # per shown position, where the mode has scores
    repaired: bool = False


def repair(emitted: Sequence[int], n_candidates: int) -> tuple[list[int], bool]:
    """Keep the first occurrence of every valid position, then append the missing ones in order."""
    order: list[int] = []
    for position in emitted:
        if 0 <= position < n_candidates and position not in order:
            order.append(position)
    complete = order + [p for p in range(n_candidates) if p not in order]
    return complete, complete != list(emitted)


@torch.no_grad()
def decode(
    model: LLM4PRModel,
    batch: PromptBatch,
    inputs: Sequence[PromptInputs],
    identifier_ids: Sequence[int],
    n_candidates: Sequence[int],
    mode: Mode = "generate",
    eos_token_id: int | None = None,
    prefix: KeyValueCache | None = None,
    cached_prefix: int = 0,
) -> list[Decoded]:
    """Order the candidates of every prompt in the batch.

    With `prefix`, the batch holds the prompts without their first `cached_prefix` tokens, whose
    keys and values `prefix` already holds (see `PrefixCache`).
    """
    if mode not in MODES:
        raise ValueError(f"unknown inference mode '{mode}'; choose one of {', '.join(MODES)}")
    if (prefix is None) != (cached_prefix == 0):
        raise ValueError("a cached prefix needs both its cache and its length")
    cache = prefix or KeyValueCache(model)
    attention_mask = full_attention_mask(batch, cached_prefix).to(model.device)
    if mode == "unconstrained":
        hidden, prior = model.answer_state(batch, inputs, cached_prefix=cached_prefix, use_cache=True, **cache.argument())
        logits = _full_logits(model, hidden, prior)
        return _unconstrained(model, cache, attention_mask, logits, prior, identifier_ids, n_candidates, eos_token_id)
    # The constrained modes only ever compare identifier tokens: project onto those rows of the LM
    # head, not onto the whole vocabulary (a fifth of a small backbone's weights, per step).
    ids = torch.tensor(identifier_ids[: max(n_candidates)], device=model.device)
    use_cache = mode == "generate" or prefix is not None
    hidden, prior = model.answer_state(batch, inputs, cached_prefix=cached_prefix, use_cache=use_cache, **cache.argument())
    scores = model.token_logits(hidden, ids, prior)
    if mode == "first_token":
        return [_order_by_scores(scores[row], n) for row, n in enumerate(n_candidates)]
    return _constrained(model, cache, attention_mask, scores, ids, prior, n_candidates)


class KeyValueCache:
    """Keys and values of the tokens seen so far, extended by every forward pass that gets it.

    Transformers renamed the cache argument (`past_key_values` -> `cache`); this passes it under
    whichever name the installed backbone's forward takes.
    """

    def __init__(self, model: LLM4PRModel, cache: DynamicCache | None = None) -> None:
        base = model.causal_lm
        self.name = "cache" if "cache" in inspect.signature(type(base).forward).parameters else "past_key_values"
        self.cache = cache if cache is not None else DynamicCache(config=base.config)

    def argument(self) -> dict[str, DynamicCache]:
        return {self.name: self.cache}


class PrefixCache:
    """Keys and values of static prompt prefixes (the instruction), computed once per prefix and
    copied for each batch, so that no request pays for the tokens every request shares."""

    def __init__(self) -> None:
        self._caches: dict[tuple[int, ...], DynamicCache] = {}

    @torch.no_grad()
    def for_batch(self, model: LLM4PRModel, prefix_ids: Sequence[int], batch_size: int) -> KeyValueCache:
        key = tuple(prefix_ids)
        if key not in self._caches:
            computed = KeyValueCache(model)
            model.backbone(input_ids=torch.tensor([list(key)], device=model.device), use_cache=True, **computed.argument())
            self._caches[key] = computed.cache
        cache = copy.deepcopy(self._caches[key])
        cache.batch_repeat_interleave(batch_size)
        return KeyValueCache(model, cache)


def _order_by_scores(identifier_logits: torch.Tensor, n: int) -> Decoded:
    scores = identifier_logits[:n].tolist()
    order = sorted(range(n), key=lambda i: -scores[i])  # stable: ties keep the shown order
    return Decoded(order=order, scores=scores)


def _step(
    model: LLM4PRModel,
    tokens: torch.Tensor,
    attention_mask: torch.Tensor,
    cache: KeyValueCache,
    prior: torch.Tensor | None,
    token_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feed one token per row through the cached backbone; return the next logits (of `token_ids`
    only, when given), the prompts' identifier prior added, and the mask."""
    attention_mask = torch.cat([attention_mask, attention_mask.new_ones(attention_mask.shape[0], 1)], dim=1)
    step_inputs = {
        "input_ids": tokens.unsqueeze(1),
        "attention_mask": attention_mask,
        "position_ids": position_ids(attention_mask)[:, -1:],
        "use_cache": True,
        **cache.argument(),
    }
    hidden = model.causal_lm.get_decoder()(**step_inputs).last_hidden_state[:, -1]
    if token_ids is None:
        return _full_logits(model, hidden, prior), attention_mask
    return model.token_logits(hidden, token_ids, prior), attention_mask


def _full_logits(model: LLM4PRModel, hidden: torch.Tensor, prior: torch.Tensor | None) -> torch.Tensor:
    """[B, H] -> the whole vocabulary's logits [B, V], the identifier prior added."""
    logits = model.causal_lm.get_output_embeddings()(hidden).float()
    return logits if prior is None else logits + prior.float()


def _constrained(
    model: LLM4PRModel,
    cache: KeyValueCache,
    attention_mask: torch.Tensor,
    identifier_logits: torch.Tensor,
    ids: torch.Tensor,
    prior: torch.Tensor | None,
    n_candidates: Sequence[int],
) -> list[Decoded]:
    """Greedy decoding over the identifiers not yet emitted. `identifier_logits` [B, width] are the
    first answer position's logits of the identifier tokens `ids`."""
    device = identifier_logits.device
    width = max(n_candidates)
    allowed = torch.arange(width, device=device)[None, :] < torch.tensor(n_candidates, device=device)[:, None]
    orders: list[list[int]] = [[] for _ in n_candidates]
    for step in range(width - 1):
        scores = identifier_logits.masked_fill(~allowed, float("-inf"))
        choice = scores.argmax(dim=-1)
        for row, n in enumerate(n_candidates):
            if step < n - 1:
                orders[row].append(int(choice[row]))
        allowed[torch.arange(len(n_candidates), device=device), choice] = False
        if step == width - 2:
            break
        identifier_logits, attention_mask = _step(model, ids[choice], attention_mask, cache, prior, token_ids=ids)
    results = []
    for row, n in enumerate(n_candidates):
        order = orders[row] + [p for p in range(n) if p not in orders[row]]  # the one left is last
        results.append(Decoded(order=order))
    return results


def _unconstrained(
    model: LLM4PRModel,
    cache: KeyValueCache,
    attention_mask: torch.Tensor,
    logits: torch.Tensor,
    prior: torch.Tensor | None,
    identifier_ids: Sequence[int],
    n_candidates: Sequence[int],
    eos_token_id: int | None,
) -> list[Decoded]:
    position_of = {token: position for position, token in enumerate(identifier_ids)}
    emitted: list[list[int]] = [[] for _ in n_candidates]
    finished = [False] * len(n_candidates)
    for _ in range(max(n_candidates) + 2):  # room for a stray token or two, then stop
        tokens = logits.argmax(dim=-1)
        for row, token in enumerate(tokens.tolist()):
            if finished[row]:
                continue
            if token == eos_token_id:
                finished[row] = True
            else:
                emitted[row].append(position_of.get(token, -1))
        if all(finished):
            break
        logits, attention_mask = _step(model, tokens, attention_mask, cache, prior)
    results = []
    for row, n in enumerate(n_candidates):
        order, repaired = repair(emitted[row], n)
        results.append(Decoded(order=order, repaired=repaired))
    return results
