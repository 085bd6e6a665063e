"""What a rerank call is, in the terms of the data contract: the one definition that serving
(`/v1/rerank`, `/v2/rerank`), training (`post_rank.rerank_ratio`) and validation share.

A rerank call carries a query and document texts, nothing else: each document becomes a
candidate whose only feature is the schema's first item text feature, and the searcher is an
anonymous user without features or history. A text re-ranking set prepared with more (a
first-stage score, a title) trains a model that leans on them; shown bare documents, it ranks
worse than the first stage (docs/decisions.md). Training on a share of requests in this form,
and validating on it, is what makes one checkpoint answer both; a model may also estimate the
missing first-stage score from the call itself (`with_first_stage_estimate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llm4pr.data.bm25 import BM25
from llm4pr.data.requests import Item, PostRankRequest, User
from llm4pr.data.schema import FeatureKind, FeatureSchema

ANONYMOUS_USER = "anonymous"  # the searcher of a text re-ranking request: known by the query alone


class RerankUnsupported(ValueError):
    """A schema whose checkpoint cannot rank bare text documents; the message says why."""


def first_item_text_feature(schema: FeatureSchema) -> str | None:
    """The item feature a document's text goes in: the schema's first item `text` feature."""
    return next((spec.name for spec in schema.for_owner("item") if spec.kind is FeatureKind.text), None)


def check_first_stage_feature(schema: FeatureSchema, feature: str) -> str:
    """The item text feature to compute `feature`'s estimate from (`model.first_stage_bm25`). Raises
    ValueError unless `feature` is a numerical item feature and the schema has an item text feature."""
    spec = schema.spec("item", feature)
    if spec is None or spec.kind is not FeatureKind.numerical:
        numerical = [s.name for s in schema.for_owner("item") if s.kind is FeatureKind.numerical]
        raise ValueError(f"model.first_stage_bm25: {feature!r} is not a numerical item feature of the schema (those: {', '.join(numerical) or 'none'})")
    text_feature = first_item_text_feature(schema)
    if text_feature is None:
        raise ValueError("model.first_stage_bm25: the schema has no item text feature to compute BM25 over")
    return text_feature


def with_first_stage_estimate(request: PostRankRequest, score_feature: str, text_feature: str) -> PostRankRequest:
    """`request` with every candidate's `score_feature` set to the BM25 score of the query over the
    candidates' `text_feature` (the request's own documents as the corpus), when no candidate
    carries the feature: a rerank call sends no first-stage score, and a model trained with one
    leans on it. A request in which any candidate has the score is returned unchanged."""
    if any(item.features.get(score_feature) is not None for item in request.candidates):
        return request
    texts = [item.features.get(text_feature) for item in request.candidates]
    scores = BM25([text if isinstance(text, str) else "" for text in texts]).scores(request.query)
    candidates = [
        item.model_copy(update={"features": {**item.features, score_feature: score}}) for item, score in zip(request.candidates, scores, strict=True)
    ]
    return request.model_copy(update={"candidates": candidates})


def rerank_text_feature(schema: FeatureSchema) -> str:
    """The item feature that carries a rerank call's document text: the schema's first item `text`
    feature. Raises RerankUnsupported for a schema that cannot take rerank calls.

    A schema with user features was trained on requests that describe the user (MovieLens: age,
    gender, ...); its order for a featureless user is not a relevance ranking, so such a
    checkpoint refuses rerank calls instead of answering nonsense. Other item features (e.g. a
    first-stage score) are simply absent.
    """
    feature = first_item_text_feature(schema)
    if feature is None:
        raise RerankUnsupported("needs an item feature of kind 'text' for the documents; this checkpoint's schema has none: use /v1/post-rank")
    user_features = [spec.name for spec in schema.for_owner("user")]
    if user_features:
        raise RerankUnsupported(
            f"cannot rank bare text documents with this checkpoint: its schema has user features ({', '.join(user_features)}), "
            "so it ranks for a described user and a rerank call has none; use /v1/post-rank with the user's features"
        )
    return feature


def rerank_request(
    request_id: str, query: str, documents: Sequence[str], text_feature: str, features: Sequence[dict[str, Any]] | None = None
) -> PostRankRequest:
    """Documents as a rerank call sends them: candidates numbered by position, each with its text
    and, where the call gives them (v1 document objects), other item features."""
    extra = features if features is not None else [{} for _ in documents]
    candidates = [Item(id=str(index), features={**more, text_feature: text}) for index, (text, more) in enumerate(zip(documents, extra, strict=True))]
    return PostRankRequest(request_id=request_id, query=query, user=User(id=ANONYMOUS_USER), candidates=candidates)


def as_rerank_call(request: PostRankRequest, text_feature: str) -> PostRankRequest:
    """A labelled request as a rerank call would show it: the same query and candidates (ids and
    labels kept), each candidate with `text_feature` only, an anonymous user, no history."""
    candidates = [
        Item(id=item.id, features={text_feature: item.features.get(text_feature)}, label=item.label) for item in request.candidates
    ]
    return PostRankRequest(request_id=request.request_id, query=request.query, user=User(id=ANONYMOUS_USER), candidates=candidates)
