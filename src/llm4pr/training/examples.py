"""Training examples for the three tasks, built from labelled requests.

- Feature adaptation: one (user, candidate item) pair; the answer describes both with the
  schema's templates and states the label ("Rating: 4").
- Main task: the answer is the candidates' identifiers sorted by label, descending; ties keep
  the order in which the candidates are shown.
- Auxiliary task: two random orders "I" and "II"; the answer is the one with the higher NDCG
  (pairs with equal NDCG are redrawn, and the request is skipped if every draw ties).

`shuffle_candidates` shows the candidates in a random order (the target follows). Without it a
model learns to echo the ranking-stage order wherever labels tie, which on MovieLens (time order)
carries no signal; with it the model must read the soft tokens.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llm4pr.data.requests import Item, PostRankRequest
from llm4pr.data.schema import FeatureSchema
from llm4pr.evaluation.metrics import ndcg_at_k
from llm4pr.model.llm4pr import PromptInputs
from llm4pr.model.prompts import Prompt, PromptBuilder

AUXILIARY_DRAWS = 10


@dataclass
class Example:
    task: str  # "adaptation" | "main" | "auxiliary"
    prompt: Prompt
    inputs: PromptInputs
    candidate_labels: list[float] | None = None  # main task: labels in shown order, for the listwise loss


def ideal_order(labels: list[float]) -> list[int]:
    """Positions sorted by label, descending; ties keep their order (a stable sort)."""
    return sorted(range(len(labels)), key=lambda i: -labels[i])


def describe(schema: FeatureSchema, owner: str, features: dict) -> str:
    """The schema's description of every present feature, in schema order."""
    parts = [spec.describe(features[spec.name]) for spec in schema.for_owner(owner) if features.get(spec.name) is not None]  # type: ignore[arg-type]
    return ", ".join(parts) if parts else "unknown"


class ExampleFactory:
    def __init__(
        self,
        builder: PromptBuilder,
        schema: FeatureSchema,
        max_history: int,
        shuffle_candidates: bool,
    ) -> None:
        self.builder = builder
        self.schema = schema
        self.max_history = max_history
        self.shuffle_candidates = shuffle_candidates

    def _shown(self, request: PostRankRequest, rng: random.Random) -> tuple[list[Item], list[float], list[Item]]:
        candidates = list(request.candidates[: self.builder.max_candidates])
        if self.shuffle_candidates:
            rng.shuffle(candidates)
        history = list(request.history[-self.max_history :]) if self.max_history else []
        return candidates, [float(c.label) for c in candidates], history  # type: ignore[arg-type]

    def main(self, request: PostRankRequest, rng: random.Random) -> Example:
        candidates, labels, history = self._shown(request, rng)
        prompt = self.builder.main_task(request.query, len(history), len(candidates), ideal_order(labels))
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
                prompt = self.builder.auxiliary_task(request.query, len(history), n, one, two, better)
                inputs = PromptInputs(query=request.query, user=request.user, history=history, candidates=candidates)
                return Example("auxiliary", prompt, inputs)
        return None

    def adaptation(self, request: PostRankRequest, candidate: int) -> Example:
        item = request.candidates[candidate]
        description = (
            f"The user: {describe(self.schema, 'user', request.user.features)}. "
            f"The item: {describe(self.schema, 'item', item.features)}. "
            f"Rating: {item.label:g}"
        )
        prompt = self.builder.feature_adaptation(request.query, description)
        return Example("adaptation", prompt, PromptInputs(query=request.query, user=request.user, item=item))
