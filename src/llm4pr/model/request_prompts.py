"""One path from a request to a prompt, for training and inference alike.

Training examples (main and auxiliary task) and the ranker must show a request to the model in
exactly the same way, or the model is served prompts it was not trained on: the user's most recent
`max_history` history items, the candidates at the given positions in the given order, their
first-stage score estimated where a request carries none (`first_stage_bm25`: rerank calls), and
for all-text prompts (PTPR, `prompt_style="text"`) every entity described in words. This module is
the only code that decides what is shown; `prompts.PromptBuilder` lays it out. A main-task
training example is therefore the inference prompt of the same request and order, with its answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from llm4pr.data.requests import PostRankRequest
from llm4pr.data.rerank import check_first_stage_feature, with_first_stage_estimate
from llm4pr.data.schema import FeatureSchema
from llm4pr.model.llm4pr import LLM4PRModel, PromptInputs
from llm4pr.model.prompts import EntityTexts, Prompt, PromptBuilder, entity_texts


@dataclass(frozen=True)
class RequestPrompter:
    """Turns a request and a candidate order into (prompt, the entities behind its soft tokens)."""

    builder: PromptBuilder
    schema: FeatureSchema
    max_history: int
    prompt_style: str = "soft"  # `ModelConfig.prompt_style`: "soft" tokens or "text" (PTPR)
    first_stage_bm25: str | None = None  # `ModelConfig.first_stage_bm25`
    _estimate_from: str | None = field(init=False, default=None)  # the text feature it is computed over

    def __post_init__(self) -> None:
        if self.first_stage_bm25 is not None:  # resolved (and checked) once, not on every prompt
            object.__setattr__(self, "_estimate_from", check_first_stage_feature(self.schema, self.first_stage_bm25))

    @classmethod
    def for_model(cls, model: LLM4PRModel, builder: PromptBuilder) -> RequestPrompter:
        """The prompts `model` was trained with (its config's history length, prompt style and
        first-stage estimate)."""
        config = model.config
        return cls(builder, model.schema, config.max_history, config.prompt_style, config.first_stage_bm25)

    def main_task(
        self, request: PostRankRequest, order: Sequence[int], target_order: Sequence[int] | None = None
    ) -> tuple[Prompt, PromptInputs]:
        """The main-task prompt showing the candidates at positions `order` of the request, in that
        order; `target_order` (positions in the shown list, best first) is a training answer."""
        inputs, texts = self._shown(request, order)
        prompt = self.builder.main_task(request.query, len(inputs.history), len(inputs.candidates), target_order, texts)
        return prompt, inputs

    def auxiliary_task(
        self, request: PostRankRequest, order: Sequence[int], list_one: Sequence[int], list_two: Sequence[int], better: int
    ) -> tuple[Prompt, PromptInputs]:
        """The auxiliary-task prompt over the same shown entities: which of two orders of the shown
        list (positions in it) is better; `better` (0 or 1) is the answer."""
        inputs, texts = self._shown(request, order)
        prompt = self.builder.auxiliary_task(request.query, len(inputs.history), len(inputs.candidates), list_one, list_two, better, texts)
        return prompt, inputs

    def _shown(self, request: PostRankRequest, order: Sequence[int]) -> tuple[PromptInputs, EntityTexts | None]:
        if self.first_stage_bm25 is not None and self._estimate_from is not None:  # over all the request's candidates
            request = with_first_stage_estimate(request, self.first_stage_bm25, self._estimate_from)
        history = list(request.history[-self.max_history :]) if self.max_history else []
        candidates = [request.candidates[position] for position in order]
        inputs = PromptInputs(query=request.query, user=request.user, history=history, candidates=candidates)
        texts = entity_texts(self.schema, request.user, history, candidates) if self.prompt_style == "text" else None
        return inputs, texts
