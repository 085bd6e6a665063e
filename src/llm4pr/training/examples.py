"""Training examples for the three tasks, built from labelled requests.

- Feature adaptation: one (user, candidate item) pair; the answer describes both with the
  schema's templates and states the label ("Rating: 4").
- Main task: the answer is the candidates' identifiers sorted by label, descending; ties keep
  the order in which the candidates are shown, or, with `random_ties`, a random order.
- Auxiliary task: two random orders "I" and "II"; the answer is the one with the higher NDCG
  (pairs with equal NDCG are redrawn, and the request is skipped if every draw ties).

With `prompt_style="text"` the main and auxiliary prompts describe the user and items in words
(the PTPR baseline) instead of soft tokens.

`shuffle_candidates` shows the candidates in a random order (the target follows). Without it a
model learns to echo the ranking-stage order wherever labels tie, which on MovieLens (time order)
carries no signal; with it the model must read the soft tokens. Even then a stable sort writes
tied candidates in identifier order (A before B), a shortcut that rewards "answer A, B, C" on
the many tied MovieLens ratings; `random_ties` removes it, so that only the labels explain the answer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.metrics import ndcg_at_k
from llm4pr.model.llm4pr import PromptInputs
from llm4pr.model.prompts import Prompt, PromptBuilder, adaptation_answer
from llm4pr.model.request_prompts import RequestPrompter

AUXILIARY_DRAWS = 10


@dataclass
class Example:
    task: str  # "adaptation" | "main" | "auxiliary"
    prompt: Prompt
    inputs: PromptInputs
    candidate_labels: list[float] | None = None  # main task: labels in shown order, for the listwise loss


def ideal_order(labels: list[float], rng: random.Random | None = None) -> list[int]:
    """Positions sorted by label, descending; ties keep their order (a stable sort), or are
    shuffled with `rng`."""
    tie_breaks = [rng.random() for _ in labels] if rng is not None else [0.0] * len(labels)
    return sorted(range(len(labels)), key=lambda i: (-labels[i], tie_breaks[i]))


class ExampleFactory:
    """Training examples of the three tasks; the main and auxiliary prompts come from the same
    `RequestPrompter` the ranker uses, so training shows requests exactly as inference does."""

    def __init__(
        self,
        builder: PromptBuilder,
        schema: FeatureSchema,
        max_history: int,
        shuffle_candidates: bool,
        prompt_style: str = "soft",
        random_ties: bool = False,
        first_stage_bm25: str | None = None,
    ) -> None:
        self.prompter = RequestPrompter(builder, schema, max_history, prompt_style, first_stage_bm25)
        self.shuffle_candidates = shuffle_candidates
        self.random_ties = random_ties

    def _shown(self, request: PostRankRequest, rng: random.Random, shuffle: bool | None = None) -> tuple[list[int], list[float]]:
        """The positions of the candidates shown (the first the identifiers can label, shuffled
        with `shuffle_candidates` unless `shuffle` says otherwise), and their labels in that order."""
        order = list(range(min(len(request.candidates), self.prompter.builder.max_candidates)))
        if self.shuffle_candidates if shuffle is None else shuffle:
            rng.shuffle(order)
        return order, [float(request.candidates[p].label) for p in order]  # type: ignore[arg-type]

    def main(self, request: PostRankRequest, rng: random.Random, shuffle: bool | None = None) -> Example:
        order, labels = self._shown(request, rng, shuffle)
        prompt, inputs = self.prompter.main_task(request, order, ideal_order(labels, rng if self.random_ties else None))
        return Example("main", prompt, inputs, candidate_labels=labels)

    def auxiliary(self, request: PostRankRequest, rng: random.Random, shuffle: bool | None = None) -> Example | None:
        order, labels = self._shown(request, rng, shuffle)
        n = len(order)
        for _ in range(AUXILIARY_DRAWS):
            one, two = rng.sample(range(n), n), rng.sample(range(n), n)
            ndcg_one = ndcg_at_k([labels[i] for i in one], n) or 0.0
            ndcg_two = ndcg_at_k([labels[i] for i in two], n) or 0.0
            if ndcg_one != ndcg_two:
                prompt, inputs = self.prompter.auxiliary_task(request, order, one, two, 0 if ndcg_one > ndcg_two else 1)
                return Example("auxiliary", prompt, inputs)
        return None

    def adaptation(self, request: PostRankRequest, candidate: int) -> Example:
        item = request.candidates[candidate]
        answer = adaptation_answer(self.prompter.schema, request.user, item)
        prompt = self.prompter.builder.feature_adaptation(request.query, answer)
        return Example("adaptation", prompt, PromptInputs(query=request.query, user=request.user, item=item))
