"""Training losses as small pure functions.

`next_token_loss` is the paper's objective for all three tasks. `listwise_first_token_loss` adds a
ListNet term on the first answer position, restricted to the candidates' identifier tokens: the
next-token loss gives a gradient to one identifier per step (and, on tied labels, teaches an
arbitrary tie order), whereas this term gives every candidate a gradient from its label, and
trains exactly the scores that `first_token` inference (FIRST) ranks by.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.nn import functional as F

from llm4pr.model.prompts import IGNORE_INDEX


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor, total: int | None = None) -> torch.Tensor:
    """Cross-entropy of every labelled token given the tokens before it. logits [B,T,V], labels [B,T].

    The mean over this batch's labelled tokens, or their sum divided by `total` (the labelled
    tokens of the global batch when each process holds only a part of it).
    """
    shifted_logits = logits[:, :-1].float()
    shifted_labels = labels[:, 1:].to(logits.device)
    losses = F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return losses / (total if total is not None else int((shifted_labels != IGNORE_INDEX).sum()))


def listnet_loss(scores: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """ListNet (Cao et al., 2007): cross-entropy between softmax(labels / T) and softmax(scores)."""
    target = torch.softmax(labels.float() / temperature, dim=-1)
    return -(target * torch.log_softmax(scores.float(), dim=-1)).sum(-1)


def listwise_first_token_loss(
    logits: torch.Tensor,
    answer_start: torch.Tensor,
    identifier_ids: Sequence[int],
    candidate_labels: Sequence[Sequence[float] | None],
    total: int | None = None,
) -> torch.Tensor | None:
    """ListNet loss on the identifiers' first-answer logits: the mean over the prompts that have
    labels, or their sum divided by `total` (as in `next_token_loss`)."""
    losses = []
    for row, labels in enumerate(candidate_labels):
        if labels is None:
            continue
        position = int(answer_start[row]) - 1  # the logits here predict the first answer token
        ids = torch.tensor(identifier_ids[: len(labels)], device=logits.device)
        scores = logits[row, position, ids]
        losses.append(listnet_loss(scores, torch.tensor(labels, device=logits.device)))
    if not losses:
        return None
    return torch.stack(losses).sum() / (total if total is not None else len(losses))
