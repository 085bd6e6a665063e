"""LLM4PR: feature encoders and QIAs that write soft tokens into a causal LM's input embeddings.

Read top to bottom: the config, then the module that owns the backbone, the user and item field
encoders, the two adapters (QIA_u, QIA_i; history items share QIA_i), and the two things it does:
`inputs_embeds` for a batch of prompts, and the backbone's logits for them. Training losses live
in `llm4pr.training.losses`, decoding in `llm4pr.inference`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel

from llm4pr.data.requests import Item, User
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.encoders import EntityEncoder, FeatureStats, SupportsEncode
from llm4pr.model.config import ModelConfig
from llm4pr.model.history_prior import HistoryPrior
from llm4pr.model.prompts import PromptBatch
from llm4pr.model.qia import FieldMLPAdapter, QueryInstructedAdapter
from llm4pr.model.request_context import RequestContext, history_label_deviation

@dataclass
class PromptInputs:
    """The entities behind one prompt's soft-token slots."""

    query: str
    user: User
    history: Sequence[Item] = ()
    candidates: Sequence[Item] = ()
    item: Item | None = None  # feature adaptation's single item


class LLM4PRModel(nn.Module):
    def __init__(
        self,
        config: ModelConfig,
        schema: FeatureSchema,
        stats: FeatureStats,
        backbone: PreTrainedModel,
        text_encoder: SupportsEncode,
    ) -> None:
        super().__init__()
        self.config = config
        self.schema = schema
        self.stats = stats
        self.backbone = backbone
        self.text_encoder = text_encoder  # frozen and external: not a submodule, never saved
        hidden = backbone.get_input_embeddings().embedding_dim
        encoder_args = dict(stats=stats, text_dim=text_encoder.dim, categorical_dim=config.categorical_dim, embed_ids=config.embed_ids)
        self.user_encoder = EntityEncoder(schema, "user", **encoder_args)  # type: ignore[arg-type]
        self.item_encoder = EntityEncoder(schema, "item", **encoder_args)  # type: ignore[arg-type]
        self.user_adapter = self._adapter(self.user_encoder, hidden)
        self.item_adapter = self._adapter(self.item_encoder, hidden)
        self.request_context = (
            RequestContext(
                len(self.item_encoder.numeric_names),
                hidden,
                config.relative_numeric,
                config.history_labels,
                n_text=len(self.item_encoder.text_fields),
                query_similarity=config.query_similarity,
            )
            if config.relative_numeric or config.history_labels or config.query_similarity
            else None
        )
        # Zero-initialised: the model starts as without the prior.
        self.candidate_prior = nn.Linear(hidden, 1) if config.candidate_prior else None
        if self.candidate_prior is not None:
            nn.init.zeros_(self.candidate_prior.weight)
            nn.init.zeros_(self.candidate_prior.bias)
        # Zero-initialised too: one bias per position in the candidate list (identifier k is always
        # the k-th candidate of a prompt).
        self.position_prior = nn.Parameter(torch.zeros(len(config.identifiers))) if config.position_prior else None
        self.history_prior = HistoryPrior(hidden) if config.history_prior else None
        # Soft tokens are layer-normalised, then scaled to the word embeddings' typical size, so
        # that the frozen LLM sees inputs of a familiar magnitude from the first step.
        word_rms = embedding_output_rms(backbone.get_input_embeddings())
        self.register_buffer("soft_token_scale", word_rms.reshape(()), persistent=True)

    def _adapter(self, encoder: EntityEncoder, hidden: int) -> nn.Module:
        if self.config.adapter == "mlp":
            return FieldMLPAdapter(encoder.fields, self.text_encoder.dim, hidden, self.config.qia_hidden_dim)
        return QueryInstructedAdapter(
            encoder.fields, self.text_encoder.dim, hidden, self.config.qia_hidden_dim, self.config.qia_heads
        )

    @property
    def device(self) -> torch.device:
        return self.soft_token_scale.device

    def trainable_state_dict(self, full_state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Encoders, adapters and the scale: what `encoders.safetensors` holds (LoRA is saved by PEFT).

        Taken from `full_state` when given (the full weights gathered from sharded training processes).
        """
        modules = ("user_encoder", "item_encoder", "user_adapter", "item_adapter", "request_context", "candidate_prior", "position_prior", "history_prior", "soft_token_scale")
        state = full_state if full_state is not None else self.state_dict()
        return {k: v for k, v in state.items() if k.split(".", 1)[0] in modules}

    def direct_path_parameters(self) -> list[nn.Parameter]:
        """The parameters of the direct score paths (candidate, position and history prior), which the
        trainer may give their own learning rate."""
        parameters = list(self.candidate_prior.parameters()) if self.candidate_prior is not None else []
        if self.position_prior is not None:
            parameters.append(self.position_prior)
        if self.history_prior is not None:
            parameters.extend(self.history_prior.parameters())
        return parameters

    def soft_tokens(self, inputs: Sequence[PromptInputs], slot_sources: Sequence[Sequence[tuple[str, int]]]) -> torch.Tensor:
        """One LLM input vector per slot, in the order of the batch's slots (prompt by prompt)."""
        query = self.text_encoder.encode([x.query for x in inputs]).float().to(self.device)
        user_fields = self.user_encoder([x.user.id for x in inputs], [x.user.features for x in inputs], self.text_encoder)
        users, _ = self.user_adapter(query, user_fields)

        user_slots: list[int] = []
        user_rows: list[int] = []
        item_slots: list[int] = []
        items: list[Item] = []
        item_groups: list[tuple[int, str]] = []
        slot = 0
        for example, sources in enumerate(slot_sources):
            for source, index in sources:
                if source == "user":
                    user_slots.append(slot)
                    user_rows.append(example)
                else:
                    item_slots.append(slot)
                    items.append(_slot_item(inputs[example], source, index))
                    item_groups.append((example, source))
                slot += 1
        soft = users.new_zeros(slot, users.shape[-1]).index_put((torch.tensor(user_slots, device=self.device),), users[user_rows])
        if items:
            item_fields = self.item_encoder([i.id for i in items], [i.features for i in items], self.text_encoder)
            item_queries = query[[owner for owner, _ in item_groups]]
            item_tokens, _ = self.item_adapter(item_queries, item_fields)
            soft = soft.index_put((torch.tensor(item_slots, device=self.device),), item_tokens)
        soft = nn.functional.layer_norm(soft, soft.shape[-1:]) * self.soft_token_scale
        if items and self.request_context is not None:
            numeric = item_fields[-1] if self.item_encoder.numeric_names else None
            similarity = (
                _query_similarity(item_queries, [item_fields[i] for i in self.item_encoder.text_fields])
                if self.request_context.query_similarity
                else None  # not an input of this model: no cosines on every forward pass
            )
            context = self.request_context(items, item_groups, numeric, similarity)
            soft = soft.index_add(0, torch.tensor(item_slots, device=self.device), context.to(soft.dtype))
        return soft

    def inputs_embeds(self, batch: PromptBatch, inputs: Sequence[PromptInputs]) -> torch.Tensor:
        return self.encode(batch, inputs)[0]

    def encode(self, batch: PromptBatch, inputs: Sequence[PromptInputs]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The LLM's input embeddings [B, T, H], and the identifier prior [B, V] (None without
        `candidate_prior`): what each prompt adds to the vocabulary's logits at its answer positions."""
        words = self.backbone.get_input_embeddings()(batch.input_ids.to(self.device))
        if batch.slot_position.numel() == 0:
            return words, None
        soft = self.soft_tokens(inputs, batch.slot_sources)
        binding = batch.slot_binding.to(self.device)
        history = self._history_labels(inputs, batch.slot_sources) if self.history_prior is not None else None
        prior = self._identifier_prior(
            soft, batch.slot_batch.to(self.device), batch.slot_position.to(self.device), binding, words.shape[0], history
        )
        soft = soft.to(words.dtype)  # float32 from the adapters; the backbone's type from here on
        if self.config.bind_identifiers:
            soft = soft + self._identifier_embeddings(binding).to(words.dtype)
        return words.index_put((batch.slot_batch.to(self.device), batch.slot_position.to(self.device)), soft), prior

    def _history_labels(
        self, inputs: Sequence[PromptInputs], slot_sources: Sequence[Sequence[tuple[str, int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each slot's history label deviation and whether it has one ([S] each, batch slot order)."""
        labels: list[float | None] = []
        groups: list[tuple[int, str]] = []
        for example, sources in enumerate(slot_sources):
            for source, index in sources:
                labels.append(inputs[example].history[index].label if source == "history" else None)
                groups.append((example, source))
        return history_label_deviation(labels, groups, self.device)

    def _identifier_prior(
        self,
        soft: torch.Tensor,
        slot_batch: torch.Tensor,
        slot_position: torch.Tensor,
        binding: torch.Tensor,
        n_prompts: int,
        history: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """[B, V]: each candidate slot's prior at its identifier token's column, zero elsewhere: the
        read-out of its soft token (`candidate_prior`), its position's bias (`position_prior`) and its
        match with the user's liked history (`history_prior`, from the `history` label deviations).

        Why: the LLM learned the item-level signal (an item's average rating) only slowly and up to
        about the level of sorting by it; with a linear path from the candidate's own soft token to its
        identifier's logit, that signal is learned in a few steps and the LLM's attention over the
        request is left to learn what depends on the user, the history and the other candidates. The
        position bias does the same for the given order, which a ranking stage makes informative."""
        parts = self._prior_parts(soft, slot_batch, slot_position, binding, n_prompts, history)
        if not parts:
            return None
        bound = binding >= 0
        scores = soft.new_zeros(int(bound.sum()), dtype=torch.float32)
        for part in parts.values():
            scores = scores + part
        return self._scatter_prior(scores, slot_batch[bound], binding[bound], n_prompts)

    def _prior_parts(
        self,
        soft: torch.Tensor,
        slot_batch: torch.Tensor,
        slot_position: torch.Tensor,
        binding: torch.Tensor,
        n_prompts: int,
        history: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The identifier prior's parts, each [number of candidate slots] in slot order: what
        `_identifier_prior` sums, kept apart so that an explanation can say which part says what."""
        bound = binding >= 0
        parts: dict[str, torch.Tensor] = {}
        if self.candidate_prior is not None:
            parts["candidate_prior"] = self.candidate_prior(soft[bound].float()).squeeze(-1)
        if self.position_prior is not None:
            positions = _list_positions(slot_batch[bound], slot_position[bound]).clamp(max=len(self.position_prior) - 1)
            parts["position_prior"] = self.position_prior[positions]
        if self.history_prior is not None and history is not None:
            tokens = soft.float() / self.soft_token_scale  # unit scale: the maps' default start fits it
            parts["history_prior"] = self.history_prior(tokens, slot_batch, bound, *history, n_prompts)
        return parts

    def _scatter_prior(self, scores: torch.Tensor, slot_batch: torch.Tensor, binding: torch.Tensor, n_prompts: int) -> torch.Tensor:
        """Candidate slots' scores [S] -> [B, V]: each at its prompt's row and identifier's column."""
        vocabulary = self.causal_lm.get_output_embeddings().weight.shape[0]
        prior = scores.new_zeros(n_prompts, vocabulary)
        return prior.index_put((slot_batch, binding), scores, accumulate=True)

    def identifier_prior_parts(self, batch: PromptBatch, inputs: Sequence[PromptInputs]) -> dict[str, torch.Tensor]:
        """Each part of the identifier prior (`candidate_prior`, `position_prior`, `history_prior`, those
        the model has) as [B, V], as `encode` adds their sum to the logits. For explanations."""
        if batch.slot_position.numel() == 0:
            return {}
        soft = self.soft_tokens(inputs, batch.slot_sources)
        slot_batch, slot_position = batch.slot_batch.to(self.device), batch.slot_position.to(self.device)
        binding = batch.slot_binding.to(self.device)
        history = self._history_labels(inputs, batch.slot_sources) if self.history_prior is not None else None
        parts = self._prior_parts(soft, slot_batch, slot_position, binding, len(batch.slot_sources), history)
        bound = binding >= 0
        return {name: self._scatter_prior(part, slot_batch[bound], binding[bound], len(batch.slot_sources)) for name, part in parts.items()}

    def field_attention(self, query: str, user: User, items: Sequence[Item]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The QIAs' attention over feature fields, heads averaged: the user's [k_user] and each
        item's [n, k_item], fields in the encoders' `fields` order; None for the MLP adapter, which
        has no attention. The same computation as `soft_tokens` (for explanations, which it discards)."""
        if not isinstance(self.user_adapter, QueryInstructedAdapter) or not isinstance(self.item_adapter, QueryInstructedAdapter):
            return None
        encoded = self.text_encoder.encode([query]).float().to(self.device)
        _, user_attention = self.user_adapter(encoded, self.user_encoder([user.id], [user.features], self.text_encoder))
        if not items:
            return user_attention.mean(dim=1)[0], user_attention.new_zeros(0, len(self.item_encoder.fields))
        item_fields = self.item_encoder([i.id for i in items], [i.features for i in items], self.text_encoder)
        _, item_attention = self.item_adapter(encoded.expand(len(items), -1), item_fields)
        return user_attention.mean(dim=1)[0], item_attention.mean(dim=1)

    def _identifier_embeddings(self, binding: torch.Tensor) -> torch.Tensor:
        """[S] identifier token ids (-1: none) -> [S, H] their word embeddings (zero where none).

        Why: to answer " C" the model must find the best candidate's soft token and then copy the
        identifier written before it, a two-step lookup; with the identifier's own embedding inside
        the soft token, attending to the best candidate already carries the answer (SmolLM2 ties
        its input and output embeddings)."""
        bound = binding >= 0
        vectors = self.backbone.get_input_embeddings()(binding.clamp(min=0))
        return vectors * bound.unsqueeze(-1).to(vectors.dtype)

    def forward(
        self, batch: PromptBatch, inputs: Sequence[PromptInputs], cached_prefix: int = 0, **backbone_kwargs: Any
    ) -> Any:
        """The backbone's output for a batch of prompts (logits [B, T, V], the identifier prior added,
        and a cache if asked).

        `cached_prefix` tokens precede every prompt in a key/value cache passed in
        `backbone_kwargs`; the batch then holds only what follows them.
        """
        backbone_inputs, prior = self._backbone_inputs(batch, inputs, cached_prefix)
        output = self.backbone(**backbone_inputs, **backbone_kwargs)
        output.logits = output.logits.float()  # losses and scores in float32 whatever the backbone's type
        if prior is not None:
            output.logits = output.logits + prior.unsqueeze(1)
        return output

    def answer_state(
        self, batch: PromptBatch, inputs: Sequence[PromptInputs], cached_prefix: int = 0, **decoder_kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's output at each prompt's last position [B, H], before the vocabulary
        projection (which inference restricts to the identifier tokens, see `token_logits`), and the
        prompts' identifier prior [B, V] (None without `candidate_prior`)."""
        decoder = self.causal_lm.get_decoder()
        backbone_inputs, prior = self._backbone_inputs(batch, inputs, cached_prefix)
        output = decoder(**backbone_inputs, **decoder_kwargs)
        return output.last_hidden_state[:, -1], prior

    def token_logits(self, hidden: torch.Tensor, token_ids: torch.Tensor, prior: torch.Tensor | None = None) -> torch.Tensor:
        """The LM head's logits of `token_ids` only, plus their prior: [B, H] -> [B, len(token_ids)]. The
        same numbers as the full projection's columns, at a fraction of its cost (the vocabulary is ~50k rows)."""
        head = self.causal_lm.get_output_embeddings()
        bias = head.bias[token_ids].float() if getattr(head, "bias", None) is not None else None
        # In float32 even under a bfloat16 backbone: bfloat16 logits keep 8 bits of mantissa and
        # would tie candidates whose scores differ by less than ~0.06; these few rows cost nothing.
        logits = nn.functional.linear(hidden.float(), head.weight[token_ids].float(), bias)
        return logits if prior is None else logits + prior[:, token_ids].float()

    @property
    def backbone_dtype(self) -> str:
        """The float type the backbone runs in: "bfloat16" or "float32" (model/precision.py)."""
        return str(self.causal_lm.dtype).removeprefix("torch.")

    @property
    def causal_lm(self) -> PreTrainedModel:
        """The backbone's causal LM (inside the PEFT wrapper while LoRA is being trained)."""
        return self.backbone.get_base_model() if hasattr(self.backbone, "get_base_model") else self.backbone

    def _backbone_inputs(
        self, batch: PromptBatch, inputs: Sequence[PromptInputs], cached_prefix: int
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        attention_mask = full_attention_mask(batch, cached_prefix).to(self.device)
        inputs_embeds, prior = self.encode(batch, inputs)
        backbone_inputs = {
            "inputs_embeds": inputs_embeds,
            "attention_mask": attention_mask,
            "position_ids": position_ids(attention_mask)[:, cached_prefix:],
        }
        return backbone_inputs, prior


def embedding_output_rms(embedding: nn.Module, sample: int = 1024) -> torch.Tensor:
    """The RMS of what the embedding LAYER gives the LLM for a word: the weight's RMS times the
    ratio of the layer's outputs to its weight rows over a sample of (at most about `sample`) tokens.

    Why: soft tokens enter through `inputs_embeds`, past the layer; a layer that scales its output
    (Gemma's multiplies by sqrt(hidden)) would otherwise leave them ~25x smaller than words. For a
    plain `nn.Embedding` the outputs are the rows themselves, the ratio is exactly 1.0 and the scale
    the weight's RMS bit for bit. The sample keeps the layer from embedding the whole vocabulary."""
    weight = embedding.weight.detach()
    word_rms = weight.float().pow(2).mean().sqrt()
    vocabulary = weight.shape[0]
    ids = torch.arange(0, vocabulary, max(1, vocabulary // sample), device=weight.device)
    with torch.no_grad():
        rows = weight[ids].float().pow(2).sum()
        outputs = embedding(ids).detach().float().pow(2).sum()
    if not rows > 0:
        return word_rms
    return word_rms * (outputs / rows).sqrt()


def full_attention_mask(batch: PromptBatch, cached_prefix: int) -> torch.Tensor:
    """The batch's mask with the cached prefix's positions in front (always attended to)."""
    mask = batch.attention_mask
    if not cached_prefix:
        return mask
    return torch.cat([mask.new_ones(mask.shape[0], cached_prefix), mask], dim=1)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that start at 0 on each row's first real token (left padding)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _slot_item(inputs: PromptInputs, source: str, index: int) -> Item:
    if source == "history":
        return inputs.history[index]
    if source == "candidate":
        return inputs.candidates[index]
    if inputs.item is None:
        raise ValueError("an 'item' slot needs PromptInputs.item")
    return inputs.item


def _query_similarity(queries: torch.Tensor, texts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """([n, t] cosines, [n, t] presence) of n queries with their items' t text-field vectors; a
    missing text is a zero vector (`features.encoders`): cosine 0, presence 0."""
    if not texts:
        empty = queries.new_zeros(queries.shape[0], 0)
        return empty, empty
    stacked = torch.stack(list(texts), dim=1)  # [n, t, d]
    cosine = nn.functional.cosine_similarity(queries.unsqueeze(1), stacked, dim=-1)
    present = (stacked.abs().sum(dim=-1) > 0).to(cosine.dtype)
    return cosine * present, present


def _list_positions(slot_batch: torch.Tensor, slot_position: torch.Tensor) -> torch.Tensor:
    """[S] the rank of each candidate slot within its prompt's candidate slots (0 for the first
    written), from the prompt each belongs to and its token position."""
    same_prompt = slot_batch.unsqueeze(0) == slot_batch.unsqueeze(1)
    earlier = slot_position.unsqueeze(0) < slot_position.unsqueeze(1)
    return (same_prompt & earlier).sum(dim=1)
