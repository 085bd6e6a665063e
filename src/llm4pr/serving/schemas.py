"""The HTTP wire format: bodies in, validated requests out; ranking results in, responses out.

Bodies are parsed here rather than by FastAPI so that every rejection is a JSON error naming the
request id and the field, with the status the API promises: 413 for size limits (checked before
the costly validation), 422 for everything else that is not a valid request for the checkpoint's
feature schema. NaN and Infinity are parsed as numbers and then rejected by validation, so the
error names the field instead of a character offset. `label`s are accepted and ignored: an
evaluation file can be replayed against the server unchanged.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from llm4pr.data.errors import DataError, format_validation_error
from llm4pr.data.explanations import Explanation
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.serving.settings import ServingSettings

FallbackReason = Literal["deadline", "model_error", "unavailable"]
RelevanceSource = Literal["softmax", "position", "uniform"]
RerankBodyT = TypeVar("RerankBodyT", bound="_RerankBodyBase")
_WORD = re.compile(r"\S+")


class ApiError(Exception):
    """A client error: answered as `{"error": {"status", "message", "request_id"}}` with `status`."""

    def __init__(self, status: int, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.request_id = request_id


class ErrorDetail(BaseModel):
    status: int
    message: str = Field(description="what is wrong and where: request id, field path, reason")
    request_id: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


def error_body(status: int, message: str, request_id: str | None = None) -> dict[str, Any]:
    return ErrorResponse(error=ErrorDetail(status=status, message=message, request_id=request_id)).model_dump()


class PostRankResponse(BaseModel):
    """The post-ranked list of ONE request: always a permutation of all its candidate ids."""

    request_id: str
    ranking: list[str]
    scores: list[float] | None = Field(default=None, description="per ranked id (first_token mode, or a baseline's scores), best first")
    mode: str = Field(description="the inference mode; for a saved baseline its name (one ranking for every mode)")
    fallback: bool = Field(description="true: the ranking-stage order, because ranking failed or was late")
    fallback_reason: FallbackReason | None = None
    latency_ms: float = Field(description="server time from receipt of the HTTP request to this answer")
    explanations: Explanation | None = Field(default=None, description="with ?explain=true only: why this ranking (docs/serving.md)")


class RerankDocument(BaseModel):
    """A v1 document object: `text`, and optionally other item features of the served checkpoint
    (a first-stage score, a title...), passed to the model as those features (docs/serving.md)."""

    model_config = ConfigDict(extra="allow", strict=True)

    text: str

    @property
    def features(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class _RerankBodyBase(BaseModel):
    """What the Cohere v1 and v2 rerank requests share. `model` is accepted and ignored: the
    response names the model actually served."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str
    top_n: int | None = Field(default=None, gt=0, description="return the best n (all when absent)")

    def texts(self) -> list[str]:
        raise NotImplementedError

    def document_features(self) -> list[dict[str, Any]]:
        """Per document, the item features it carries besides its text (none for a string)."""
        return [{} for _ in self.texts()]


class RerankBody(_RerankBodyBase):
    """Cohere v1 (and Jina) rerank request: documents as strings or `{"text": ...}` objects."""

    model: str | None = None
    documents: list[str | RerankDocument] = Field(min_length=1)
    return_documents: bool = False

    def texts(self) -> list[str]:
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]

    def document_features(self) -> list[dict[str, Any]]:
        return [{} if isinstance(doc, str) else doc.features for doc in self.documents]


class RerankBodyV2(_RerankBodyBase):
    """Cohere v2 rerank request: `model` is required (as by Cohere), documents are strings."""

    model: str
    documents: list[str] = Field(min_length=1)
    max_tokens_per_doc: int | None = Field(
        default=None, gt=0, description="keep each document's first n whitespace-separated words (tokenizer-free)"
    )

    def texts(self) -> list[str]:
        if self.max_tokens_per_doc is None:
            return list(self.documents)
        return [_first_words(doc, self.max_tokens_per_doc) for doc in self.documents]


class RerankResultV2(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float = Field(
        description="in [0, 1], summing to 1 over the documents sent, non-increasing in the results' order: the model's "
        "probability that this one is the most relevant (one window), else derived from the position (meta.relevance)"
    )


class RerankResult(RerankResultV2):
    document: RerankDocument | None = None


class ApiVersion(BaseModel):
    version: str


class RerankMeta(BaseModel):
    """Cohere's `meta` (`api_version`, `warnings`) plus how this answer was made."""

    api_version: ApiVersion
    warnings: list[str] | None = Field(default=None, description="set when the scores are not the model's (a fallback)")
    mode: str
    relevance: RelevanceSource = Field(
        description="what relevance_score is: softmax (of the model's scores over all documents, one pass), "
        "position (from the final position: a list ranked over several windows), uniform (a fallback)"
    )
    fallback: bool
    fallback_reason: FallbackReason | None = None
    latency_ms: float


class RerankResponseV2(BaseModel):
    id: str
    results: list[RerankResultV2]
    meta: RerankMeta


class RerankResponse(RerankResponseV2):
    model: str
    results: list[RerankResult]  # type: ignore[assignment]


def parse_post_rank(payload: Any, schema: FeatureSchema, settings: ServingSettings) -> list[PostRankRequest]:
    """One request object or a non-empty list of them, each checked against the feature schema."""
    is_list = isinstance(payload, list)
    items = payload if is_list else [payload]
    if not items:
        raise ApiError(422, "body: expected a request object or a non-empty list of requests")
    if len(items) > settings.max_requests_per_body:
        raise ApiError(413, f"body: {len(items)} requests exceed the limit of {settings.max_requests_per_body} per body")
    requests = [_parse_request(item, f"requests.{i}" if is_list else "body", schema, settings) for i, item in enumerate(items)]
    seen: set[str] = set()
    for request in requests:
        if request.request_id in seen:
            raise ApiError(422, f"body: request_id '{request.request_id}' appears more than once", request.request_id)
        seen.add(request.request_id)
    return requests


def _parse_request(item: Any, where: str, schema: FeatureSchema, settings: ServingSettings) -> PostRankRequest:
    if not isinstance(item, dict):
        raise ApiError(422, f"{where}: expected a JSON object, got {_json_type(item)}")
    raw_id = item.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) and len(raw_id) <= settings.max_string_chars else None
    label = f"request '{request_id}' ({where})" if request_id else where
    candidates = item.get("candidates")
    if isinstance(candidates, list) and len(candidates) > settings.max_candidates:
        raise ApiError(
            413,
            f"{label}: candidates: {len(candidates)} exceed the limit of {settings.max_candidates} (the server's max_candidates)",
            request_id,
        )
    _check_values(item, label, settings.max_string_chars, request_id)
    try:
        return PostRankRequest.model_validate(item).check_features(schema)
    except ValidationError as exc:
        raise ApiError(422, f"{label}: {format_validation_error(exc)}", request_id) from exc
    except DataError as exc:
        raise ApiError(422, str(exc), request_id) from exc


def parse_rerank(payload: Any, body_type: type[RerankBodyT], settings: ServingSettings) -> RerankBodyT:
    """A rerank body of `body_type`; more documents than `max_candidates` are refused with 413
    before validation. Lists longer than the model's window are ranked with sliding windows."""
    if not isinstance(payload, dict):
        raise ApiError(422, f"body: expected a JSON object, got {_json_type(payload)}")
    documents = payload.get("documents")
    if isinstance(documents, list) and len(documents) > settings.max_candidates:
        raise ApiError(
            413, f"body: documents: {len(documents)} exceed the limit of {settings.max_candidates} (the server's max_candidates)"
        )
    _check_values(payload, "body", settings.max_string_chars, None)
    try:
        return body_type.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, f"body: {format_validation_error(exc)}") from exc


def post_rank_response(result: RankResult, mode: str, reason: FallbackReason | None, latency_ms: float) -> PostRankResponse:
    """The answer to one request ranked in `mode`; its `mode` is the one the ranker reports, when it
    reports one (a baseline names itself: it has one ranking for every mode)."""
    return PostRankResponse(
        request_id=result.request_id,
        ranking=result.ranking,
        scores=result.scores,
        mode=result.mode or mode,
        fallback=reason is not None,
        fallback_reason=reason,
        latency_ms=round(latency_ms, 3),
        explanations=result.explanations,
    )


def checked_document_features(body: _RerankBodyBase, schema: FeatureSchema, text_feature: str) -> list[dict[str, Any]]:
    """Per document, its item features besides the text, in the schema's canonical types; 422 for a
    key that is not an item feature of the checkpoint or a value of the wrong kind, naming the
    document and the key."""
    takes = [spec.name for spec in schema.for_owner("item") if spec.name != text_feature]
    checked: list[dict[str, Any]] = []
    for index, features in enumerate(body.document_features()):
        checked.append({})
        for name, value in features.items():
            spec = schema.spec("item", name)
            if spec is None or name == text_feature:
                raise ApiError(
                    422,
                    f"body: documents[{index}].{name}: not an item feature of the served checkpoint "
                    f"(a document object takes 'text' and: {', '.join(takes) or 'nothing else'})",
                )
            try:
                checked[-1][name] = None if value is None else spec.check_value(value)
            except ValueError as exc:
                raise ApiError(422, f"body: documents[{index}].{name}: {exc}") from exc
    return checked


def rerank_response(body: RerankBody, answer: PostRankResponse, model_name: str) -> RerankResponse:
    """The v1 answer: the best `top_n` documents, with their text when `return_documents`."""
    ranked, meta = _ranked_documents(answer, body.top_n, api_version="1")
    sent = [RerankDocument(text=doc) if isinstance(doc, str) else doc for doc in body.documents] if body.return_documents else None
    results = [RerankResult(index=index, relevance_score=score, document=sent[index] if sent else None) for index, score in ranked]
    return RerankResponse(id=answer.request_id, model=model_name, results=results, meta=meta)


def rerank_response_v2(body: RerankBodyV2, answer: PostRankResponse) -> RerankResponseV2:
    """The v2 answer: the best `top_n` documents as index and score."""
    ranked, meta = _ranked_documents(answer, body.top_n, api_version="2")
    results = [RerankResultV2(index=index, relevance_score=score) for index, score in ranked]
    return RerankResponseV2(id=answer.request_id, results=results, meta=meta)


def _ranked_documents(answer: PostRankResponse, top_n: int | None, api_version: str) -> tuple[list[tuple[int, float]], RerankMeta]:
    """(document index, relevance score) best first, cut to `top_n`, and the answer's meta.

    The score is the softmax of the ranker's scores over all documents sent, when it has scores
    that compare across all of them (a list within one model window, or a baseline). A list ranked
    over several sliding windows has none (each window's logits are relative to that window): its
    score is `position_scores`, derived from the final position alone. A fallback (deadline,
    model error, full queue) is not ranked: the documents keep the order sent, each scores 1/n
    (the uniform probability), and `meta.warnings` says so. Every case is non-increasing in the
    returned order and sums to 1 over the documents sent.
    """
    n = len(answer.ranking)
    warnings = None
    relevance: RelevanceSource
    if answer.fallback:
        scores, relevance = [1.0 / n] * n, "uniform"
        reason = answer.fallback_reason or "no ranking from the model"
        warnings = [f"fallback ({reason}): not ranked by the model; documents in the order sent, each relevance_score 1/{n}"]
    elif answer.scores is not None:
        scores, relevance = _softmax(answer.scores), "softmax"
    else:
        scores, relevance = position_scores(n), "position"
    ranked = [(int(candidate_id), score) for candidate_id, score in zip(answer.ranking, scores, strict=True)]
    meta = RerankMeta(
        api_version=ApiVersion(version=api_version),
        warnings=warnings,
        mode=answer.mode,
        relevance=relevance,
        fallback=answer.fallback,
        fallback_reason=answer.fallback_reason,
        latency_ms=answer.latency_ms,
    )
    return ranked[:top_n], meta


def position_scores(n: int) -> list[float]:
    """Relevance scores of ranks 1..n from the position alone: 2(n - r) / (n(n + 1)) for the
    0-based position r. Strictly decreasing, in (0, 1], summing to 1 like the softmax of a
    one-window list, so that both kinds of score read on the same scale."""
    return [2.0 * (n - r) / (n * (n + 1)) for r in range(n)]


def inline_json_schema(type_: Any) -> dict[str, Any]:
    """A JSON schema without `$ref`s, for an OpenAPI request body that FastAPI does not parse itself."""
    schema = TypeAdapter(type_).json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return resolve(schema)


def _check_values(payload: Any, label: str, max_chars: int, request_id: str | None) -> None:
    """Reject strings (values or keys) over `max_chars` and integers no float can hold, naming the path.

    Iterative, so any nesting depth is safe; runs before validation, which would otherwise spend
    time on huge strings or overflow converting a huge integer to a float.
    """
    stack: list[tuple[Any, str]] = [(payload, "")]
    while stack:
        node, path = stack.pop()
        where = path or "(top level)"
        if isinstance(node, str) and len(node) > max_chars:
            raise ApiError(422, f"{label}: {where}: string of {len(node)} characters exceeds the limit of {max_chars}", request_id)
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) > sys.float_info.max:
            raise ApiError(422, f"{label}: {where}: number too large", request_id)
        if isinstance(node, dict):
            for key, value in node.items():
                if len(key) > max_chars:
                    raise ApiError(422, f"{label}: {where}: a key of {len(key)} characters exceeds the limit of {max_chars}", request_id)
                stack.append((value, f"{path}.{key}" if path else key))
        elif isinstance(node, list):
            stack.extend((value, f"{path}.{index}") for index, value in enumerate(node))


def _first_words(text: str, n: int) -> str:
    """`text` cut after its n-th whitespace-separated word (unchanged when it has no more)."""
    for count, word in enumerate(_WORD.finditer(text), start=1):
        if count == n:
            return text[: word.end()]
    return text


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
