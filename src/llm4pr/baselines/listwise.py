"""Neural list-aware post-rankers from the paper's baselines: DLCM, SetRank, PRM and Seq2Slate.

Each is a small `ListModel` over the shared feature vectors, trained by the one loop in
`llm4pr.baselines.neural`; the rankers only choose the model. Losses follow the papers:

- DLCM (Ai et al., 2018) and SetRank (Pang et al., 2020): the attention rank loss, a softmax
  cross-entropy whose target is psi(y) / sum psi(y) with psi(y) = exp(y) for y > 0, else 0.
- PRM (Pei et al., 2019): softmax cross-entropy against the labels themselves (y / sum y).
- Seq2Slate (Bello et al., 2018), supervised variant: teacher forcing along the ideal order;
  at every step a cross-entropy over the items not yet placed, whose target is spread evenly
  over the remaining items with the highest label (ties get equal credit rather than an arbitrary
  order). Ranking decodes greedily, never choosing an item twice.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from llm4pr.baselines.neural import IdVocabulary, ListBatch, ListModel, NeuralListRanker, ScoringListModel

ListTarget = Literal["attention_rank", "labels"]


def attention_rank_weights(labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """psi(y) = exp(y) for y > 0 else 0 (Ai et al.), scaled per list by exp(-max y) to avoid overflow."""
    top = labels.masked_fill(~mask, float("-inf")).amax(1, keepdim=True).clamp(min=0.0)
    return torch.where(mask & (labels > 0), torch.exp(labels - top), torch.zeros_like(labels))


def _reverse_lists(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each list's real positions [0, n_b) in place of order; padding stays at the end."""
    positions = torch.arange(x.shape[1])[None, :]
    index = torch.where(positions < lengths[:, None], lengths[:, None] - 1 - positions, positions)
    return x.gather(1, index[:, :, None].expand_as(x))


class DLCMModel(ScoringListModel):
    """Input abstraction (dense + ELU), a GRU from the bottom of the list to the top, so that
    its final state s_n encodes the list with the ranking stage's top items last, and the local
    ranking function phi(o_i, s_n) = V (o_i * tanh(W s_n + b)) per item (Ai et al.)."""

    def __init__(self, input_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inputs = nn.Sequential(nn.Linear(input_dim, hidden), nn.ELU(), nn.Dropout(dropout))
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.context = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, 1)

    def forward(self, batch: ListBatch) -> torch.Tensor:
        lengths = batch.lengths
        reversed_inputs = _reverse_lists(self.inputs(batch.features), lengths)
        packed = pack_padded_sequence(reversed_inputs, lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.gru(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=batch.features.shape[1])
        outputs = _reverse_lists(outputs, lengths)  # back to ranking-stage order
        context = torch.tanh(self.context(final[-1]))[:, None, :]
        return self.out(outputs * context).squeeze(-1)

    def target_weights(self, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return attention_rank_weights(labels, mask)


class TransformerListModel(ScoringListModel):
    """Self-attention over the candidates, then a per-item score.

    Without position embeddings it is permutation-equivariant (SetRank's multi-head self-attention
    blocks); with learned embeddings of the ranking-stage position it is PRM's encoder. Positions
    beyond `max_positions` share the last embedding.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        heads: int,
        layers: int,
        dropout: float,
        max_positions: int | None,
        target: ListTarget,
    ) -> None:
        super().__init__()
        self.inputs = nn.Linear(input_dim, hidden)
        self.positions = nn.Embedding(max_positions, hidden) if max_positions else None
        layer = nn.TransformerEncoderLayer(hidden, heads, 2 * hidden, dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = nn.Linear(hidden, 1)
        self.target = target

    def forward(self, batch: ListBatch) -> torch.Tensor:
        h = self.inputs(batch.features)
        if self.positions is not None:
            index = torch.arange(h.shape[1]).clamp(max=self.positions.num_embeddings - 1)
            h = h + self.positions(index)[None]
        return self.out(self.encoder(h, src_key_padding_mask=~batch.mask)).squeeze(-1)

    def target_weights(self, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.target == "attention_rank":
            return attention_rank_weights(labels, mask)
        return labels.clamp(min=0.0) * mask


class PointerNetwork(ListModel):
    """Seq2Slate: a GRU encoder over the list in ranking-stage order and a GRU decoder whose
    pointer attention v^T tanh(W_e e_i + W_d d_t) picks the next item among those not yet placed."""

    def __init__(self, input_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.inputs = nn.Sequential(nn.Linear(input_dim, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.encoder = nn.GRU(hidden, hidden, batch_first=True)
        self.decoder = nn.GRUCell(hidden, hidden)
        self.start = nn.Parameter(torch.zeros(hidden))
        self.w_encoder = nn.Linear(hidden, hidden, bias=False)
        self.w_decoder = nn.Linear(hidden, hidden)
        self.v = nn.Linear(hidden, 1, bias=False)

    def loss(self, batch: ListBatch) -> torch.Tensor:
        encoded, state = self._encode(batch)
        keys = self.w_encoder(encoded)
        rows = torch.arange(len(encoded))
        remaining = batch.mask.clone()
        previous = self.start.expand(len(encoded), -1)
        losses, counts = [], []
        for _ in range(batch.features.shape[1]):
            active = remaining.any(1)
            if not active.any():
                break
            state = self.decoder(previous, state)
            log_p = torch.log_softmax(self._pointer(keys, state).masked_fill(~remaining, float("-inf")), dim=1)
            labels = batch.labels.masked_fill(~remaining, float("-inf"))
            best = remaining & (labels == labels.amax(1, keepdim=True))
            target = best / best.sum(1, keepdim=True).clamp(min=1)
            losses.append(-(target * log_p.masked_fill(~remaining, 0.0)).sum(1) * active)
            counts.append(active)
            # Teacher forcing: place the first best item (ties in ranking-stage order).
            chosen = torch.where(active, best.float().argmax(1), torch.zeros_like(rows))
            previous = encoded[rows, chosen]
            remaining = remaining & ~(nn.functional.one_hot(chosen, remaining.shape[1]).bool() & active[:, None])
        return torch.stack(losses).sum() / torch.stack(counts).sum().clamp(min=1)

    def predict(self, batch: ListBatch) -> torch.Tensor:
        """Greedy decoding; the item placed at step t scores n - t."""
        encoded, state = self._encode(batch)
        keys = self.w_encoder(encoded)
        rows = torch.arange(len(encoded))
        size = batch.features.shape[1]
        remaining = batch.mask.clone()
        scores = torch.zeros(batch.mask.shape)
        previous = self.start.expand(len(encoded), -1)
        for step in range(size):
            active = remaining.any(1)
            if not active.any():
                break
            state = self.decoder(previous, state)
            chosen = self._pointer(keys, state).masked_fill(~remaining, float("-inf")).argmax(1)
            scores[rows[active], chosen[active]] = float(size - step)
            previous = encoded[rows, chosen]
            remaining = remaining & ~(nn.functional.one_hot(chosen, size).bool() & active[:, None])
        return scores

    def _encode(self, batch: ListBatch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.inputs(batch.features)
        packed = pack_padded_sequence(inputs, batch.lengths, batch_first=True, enforce_sorted=False)
        outputs, final = self.encoder(packed)
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=batch.features.shape[1])
        return outputs, final[-1]

    def _pointer(self, keys: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.v(torch.tanh(keys + self.w_decoder(state)[:, None, :])).squeeze(-1)


class DLCMRanker(NeuralListRanker):
    """DLCM: a GRU over the list, per-item scores, attention rank loss."""

    name = "dlcm"

    def build_model(self, input_dim: int, ids: IdVocabulary) -> ListModel:
        return DLCMModel(input_dim, self.hidden, self.dropout)


class _TransformerRanker(NeuralListRanker):
    """The shared settings of SetRank and PRM (attention heads and layers)."""

    def __init__(self, heads: int = 4, layers: int = 2, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.params.update(heads=heads, layers=layers)
        self.heads, self.layers = heads, layers


class SetRankRanker(_TransformerRanker):
    """SetRank: multi-head self-attention over the candidate set, no positions (permutation-invariant)."""

    name = "setrank"

    def build_model(self, input_dim: int, ids: IdVocabulary) -> ListModel:
        return TransformerListModel(
            input_dim, self.hidden, self.heads, self.layers, self.dropout, None, "attention_rank"
        )


class PRMRanker(_TransformerRanker):
    """PRM: a transformer over the list with learned embeddings of the ranking-stage position."""

    name = "prm"
    max_positions = 128

    def build_model(self, input_dim: int, ids: IdVocabulary) -> ListModel:
        return TransformerListModel(
            input_dim, self.hidden, self.heads, self.layers, self.dropout, self.max_positions, "labels"
        )


class Seq2SlateRanker(NeuralListRanker):
    """Seq2Slate: a pointer network decoding the list item by item (supervised, teacher forcing)."""

    name = "seq2slate"

    def build_model(self, input_dim: int, ids: IdVocabulary) -> ListModel:
        return PointerNetwork(input_dim, self.hidden, self.dropout)
