"""The bi-encoder's order: candidates sorted by the cosine between the query's and their text's
embeddings from the frozen text encoder (the one LLM4PR's soft tokens are built from).

It is what a dense first stage would return for the same candidates, so on text re-ranking it is
the reference a re-ranker must beat besides the first stage's own order: whatever LLM4PR adds
over it is not already in the text encoder. It learns nothing: `fit` only picks the text feature
(default: the schema's first item text feature, where a rerank call's document goes).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from llm4pr.baselines.base import NotFittedError, ScoringRanker
from llm4pr.baselines.features import shared_text_encoder
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureKind, FeatureSchema
from llm4pr.features.text_encoder import DEFAULT_TEXT_ENCODER, BaseTextEncoder

MISSING_TEXT_SCORE = -2.0  # below every cosine: a candidate without the text goes last


class BiEncoderRanker(ScoringRanker):
    """Score = cosine(query, candidate text); candidates without the text last, ties in input order."""

    name = "bi_encoder"

    def __init__(self, text_encoder: str | BaseTextEncoder = DEFAULT_TEXT_ENCODER, feature: str | None = None) -> None:
        self.params: dict[str, Any] = {"text_encoder": text_encoder, "feature": feature}
        self._encoder_choice = text_encoder
        self.feature = feature
        self._text_feature: str | None = None

    @cached_property
    def text_encoder(self) -> BaseTextEncoder:
        """Loaded on first use and shared with the other baselines of the process (one model in memory)."""
        choice = self._encoder_choice
        return shared_text_encoder(choice) if isinstance(choice, str) else choice

    def _fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None,
        seed: int,
    ) -> None:
        self._text_feature = self._pick_feature(schema)

    def _load_state(self, folder: Path, schema: FeatureSchema) -> None:
        self._text_feature = self._pick_feature(schema)

    def _pick_feature(self, schema: FeatureSchema) -> str:
        texts = [spec.name for spec in schema.for_owner("item") if spec.kind is FeatureKind.text]
        if not texts:
            raise ValueError(f"{self.name}: the schema has no item text feature to compare with the query")
        if self.feature is None:
            return texts[0]
        if self.feature not in texts:
            raise ValueError(f"{self.name}: no item text feature {self.feature!r} in the schema (its text features: {', '.join(texts)})")
        return self.feature

    def score(self, requests: Sequence[PostRankRequest]) -> list[np.ndarray]:
        if self._text_feature is None:
            raise NotFittedError(f"{self.name}: call fit before rank or score")
        texts = [[candidate.features.get(self._text_feature) for candidate in r.candidates] for r in requests]
        distinct = list(dict.fromkeys(text for row in texts for text in row if text))
        vector_of = dict(zip(distinct, self.text_encoder.encode(distinct).double().numpy(), strict=True))
        queries = self.text_encoder.encode([r.query for r in requests]).double().numpy()
        # unit vectors: the dot product is the cosine
        return [
            np.asarray([vector_of[text] @ query if text else MISSING_TEXT_SCORE for text in row])
            for row, query in zip(texts, queries, strict=True)
        ]
