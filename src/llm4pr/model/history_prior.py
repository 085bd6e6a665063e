"""The user's taste as a direct score path: how much each candidate resembles what the user liked.

The candidate prior (model/llm4pr.py) writes the item-level signal (an item's average rating)
straight into the identifier logits; what depends on the user, it leaves to the LLM's attention
over the history's soft tokens, which 2,000 training requests teach slowly. This path is the
personal counterpart, the target attention of sequential recommenders (DIN) in bilinear form:
a taste vector per prompt, the mean of its history items' keys weighted by how much the user
liked each (their label minus the history's mean label), scored against each candidate's query:

    score(c) = q(s_c) . (1/|H|) sum_h d_h k(s_h)

The key map starts at zero, so the model starts as without the path, while the query map's
random start gives the keys a gradient from the first step.
"""

from __future__ import annotations

import torch
from torch import nn


class HistoryPrior(nn.Module):
    def __init__(self, hidden: int, dim: int = 32) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, dim, bias=False)
        self.key = nn.Linear(hidden, dim, bias=False)
        nn.init.zeros_(self.key.weight)

    def forward(
        self, tokens: torch.Tensor, prompt: torch.Tensor, candidate: torch.Tensor, deviation: torch.Tensor, labelled: torch.Tensor, n_prompts: int
    ) -> torch.Tensor:
        """Scores [C] of the C slots where `candidate` is true, from every slot's token [S, H], its
        prompt [S], its history label deviation [S] and whether it has one [S] (0/1). A prompt
        without a labelled history scores 0."""
        keys = self.key(tokens) * (deviation * labelled).unsqueeze(-1)
        taste = keys.new_zeros(n_prompts, keys.shape[-1]).index_add(0, prompt, keys)
        counts = labelled.new_zeros(n_prompts).index_add(0, prompt, labelled).clamp(min=1.0)
        taste = taste / counts.unsqueeze(-1)
        return (self.query(tokens[candidate]) * taste[prompt[candidate]]).sum(-1)
