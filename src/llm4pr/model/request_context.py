"""What an item's soft token cannot know from the item alone: its place in the request.

QIA encodes each entity by itself. Three signals depend on the request around it:

- request-relative numbers (`relative_numeric`): each numerical feature z-scored among the items
  of the same slot group (the request's candidates, or its history), so that "the best-rated of
  these five" is written into each candidate's token instead of being left for the LLM to work out
  by comparing tokens;
- the user's own labels of history items (`history_labels`): how much the user liked each past
  item, relative to the user's other past items (their label minus the history's mean label), the
  taste signal a sequential recommender reads. A candidate's label is the training target and is
  never read: candidate slots get the missing flag;
- the query's similarity to each of the item's text features (`query_similarity`): the cosine
  between their frozen text embeddings (what a bi-encoder ranks by), as it is and z-scored among
  the request's candidates, with a missing flag. QIA's attention decides *which* field to read
  for a query, but its output is a mix of field values in which "how well does this abstract
  match the query" is not a linear direction; text re-ranking hinges on that match.

All are concatenated and projected into the LLM's hidden size by one linear map, initialised to
zero (the model starts as plain LLM4PR) and added to the slot's soft token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from llm4pr.data.requests import Item

EPSILON = 1e-6
# ([n, t] cosines of each slot's query with its t text features, [n, t] presence), or None
Similarity = tuple[torch.Tensor, torch.Tensor] | None
RELATIVE_CLIP = 3.0


class RequestContext(nn.Module):
    def __init__(
        self,
        n_numeric: int,
        output_dim: int,
        relative_numeric: bool,
        history_labels: bool,
        n_text: int = 0,
        query_similarity: bool = False,
    ) -> None:
        super().__init__()
        self.relative_numeric = relative_numeric and n_numeric > 0
        self.history_labels = history_labels
        self.query_similarity = query_similarity and n_text > 0
        self.input_dim = (
            (n_numeric if self.relative_numeric else 0)
            + (2 if history_labels else 0)
            + (3 * n_text if self.query_similarity else 0)
        )
        if not self.input_dim:
            raise ValueError(
                "RequestContext needs relative_numeric (with numerical features), history_labels, "
                "or query_similarity (with text features)"
            )
        self.project = nn.Linear(self.input_dim, output_dim)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def features(self, items: Sequence[Item], groups: Sequence[tuple[int, str]], numeric: torch.Tensor | None, similarity: Similarity = None) -> torch.Tensor:
        """[n, input_dim] for n item slots; `groups[i]` is (prompt, source) of slot i, `numeric` the
        item encoder's [n, 2k] (z-score, missing flag) pairs, `similarity` the [n, t] cosines
        between each slot's query and its t text features (0 where missing) with their [n, t]
        presence (0: missing)."""
        group_index = torch.tensor(_group_ids(groups), device=self.project.weight.device)
        parts = []
        if self.relative_numeric:
            if numeric is None:
                raise ValueError("relative_numeric needs the items' numerical features")
            values, present = numeric[:, 0::2], 1.0 - numeric[:, 1::2]
            parts.append(group_zscore(values, present, group_index).clamp(-RELATIVE_CLIP, RELATIVE_CLIP))
        if self.history_labels:
            history = [item.label if source == "history" else None for item, (_, source) in zip(items, groups, strict=True)]
            centred, known = history_label_deviation(history, groups, group_index.device)
            parts.append(torch.stack([centred, 1.0 - known], dim=-1))
        if self.query_similarity:
            if similarity is None:
                raise ValueError("query_similarity needs the cosines of the query with the items' text features")
            cosine, present = similarity
            relative = group_zscore(cosine, present, group_index).clamp(-RELATIVE_CLIP, RELATIVE_CLIP)
            parts.extend((cosine, relative, 1.0 - present))  # a missing text's cosine is 0 already
        return torch.cat(parts, dim=-1)

    def forward(self, items: Sequence[Item], groups: Sequence[tuple[int, str]], numeric: torch.Tensor | None, similarity: Similarity = None) -> torch.Tensor:
        return self.project(self.features(items, groups, numeric, similarity))


def history_label_deviation(
    labels: Sequence[float | None], groups: Sequence[tuple[int, str]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """([n] each slot's label minus the mean label of its group, [n] 1 where the slot has a label).

    `labels[i]` is the user's label of slot i's history item, None for every other slot (candidates'
    labels are targets and never passed here); slots without a label get 0."""
    group_index = torch.tensor(_group_ids(groups), device=device)
    known = torch.tensor([label is not None for label in labels], dtype=torch.float32, device=device)
    values = torch.tensor([float(label) if label is not None else 0.0 for label in labels], device=device)
    centred = values - group_mean(values.unsqueeze(-1), known.unsqueeze(-1), group_index).squeeze(-1)
    return centred * known, known


def _group_ids(groups: Sequence[tuple[int, str]]) -> list[int]:
    index: dict[tuple[int, str], int] = {}
    return [index.setdefault(group, len(index)) for group in groups]


def group_mean(values: torch.Tensor, present: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per row, the mean of the present values of its group, column by column: [n, k] -> [n, k]."""
    n_groups = int(group.max()) + 1 if group.numel() else 0
    totals = values.new_zeros(n_groups, values.shape[1]).index_add(0, group, values * present)
    counts = values.new_zeros(n_groups, values.shape[1]).index_add(0, group, present)
    return (totals / counts.clamp(min=1.0))[group]


def group_zscore(values: torch.Tensor, present: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Each present value z-scored among the present values of its group; 0 where missing and
    where the group's values are all equal."""
    mean = group_mean(values, present, group)
    deviation = (values - mean) * present
    variance = group_mean(deviation.pow(2), present, group)
    return deviation / (variance.sqrt() + EPSILON) * (variance > EPSILON)
