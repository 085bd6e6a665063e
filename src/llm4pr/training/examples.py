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

from llm4pr.data.requests import Item, PostRankRequest
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.metrics import ndcg_at_k
from llm4pr.model.llm4pr import PromptInputs
from llm4pr.model.prompts import EntityTexts, Prompt, PromptBuilder, adaptation_answer, entity_texts

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
    def __init__(
        self,
        builder: PromptBuilder,
        schema: FeatureSchema,
        max_history: int,
        shuffle_candidates: bool,
        prompt_style: str = "soft",
        random_ties: bool = False,
    ) -> None:
        self.builder = builder
        self.prompt_style = prompt_style
        self.schema = schema
        self.max_history = max_history
        self.shuffle_candidates = shuffle_candidates
        self.random_ties = random_ties

    def _shown(self, request: PostRankRequest, rng: random.Random) -> tuple[list[Item], list[float], list[Item]]:
        candidates = list(request.candidates[: self.builder.max_candidates])
        if self.shuffle_candidates:
            rng.shuffle(candidates)
        history = list(request.history[-self.max_history :]) if self.max_history else []
        return candidates, [float(c.label) for c in candidates], history  # type: ignore[arg-type]

    def _texts(self, request: PostRankRequest, history: list[Item], candidates: list[Item]) -> EntityTexts | None:
        if self.prompt_style == "soft":
            return None
        return entity_texts(self.schema, request.user, history, candidates)

    def main(self, request: PostRankRequest, rng: random.Random) -> Example:
        candidates, labels, history = self._shown(request, rng)
        texts = self._texts(request, history, candidates)
        prompt = self.builder.main_task(request.query, len(history), len(candidates), ideal_order(labels, rng if self.random_ties else None), texts)
        inputs = PromptInputs(query=request.query, user=request.user, history=history, candidates=candidates)
        return Example("main", prompt, inputs, candidate_labels=labels)

    def auxiliary(self, request: PostRankRequest, rng: random.Random) -> Example | None:
        candidates, labels, history = self._shown(request, rng)
        n = len(candidates)
        for _ in range(AUXILIARY_DRAWS):
            one, two = rng.sample(range(n), n), rng.sample(range(n), n)
            ndcg_one = ndcg_at_k([labels[i] for i in one], n) or 0.0
            ndcg_two = ndcg_at_k([labels[i] for i in two], n) or 0.0
            if ndcg_one != ndcg_two:
                better = 0 if ndcg_one > ndcg_two else 1
                texts = self._texts(request, history, candidates)
                prompt = self.builder.auxiliary_task(request.query, len(history), n, one, two, better, texts)
                inputs = PromptInputs(query=request.query, user=request.user, history=history, candidates=candidates)
                return Example("auxiliary", prompt, inputs)
        return None

    def adaptation(self, request: PostRankRequest, candidate: int) -> Example:
        item = request.candidates[candidate]
        prompt = self.builder.feature_adaptation(request.query, adaptation_answer(self.schema, request.user, item))
        return Example("adaptation", prompt, PromptInputs(query=request.query, user=request.user, item=item))
