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
import sys
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from llm4pr.data.errors import DataError, format_validation_error
from llm4pr.data.requests import Item, PostRankRequest, RankResult, User
from llm4pr.data.schema import FeatureKind, FeatureSchema
from llm4pr.serving.settings import ServingSettings

FallbackReason = Literal["deadline", "model_error", "unavailable"]
ANONYMOUS_USER = "anonymous"


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
    scores: list[float] | None = Field(default=None, description="per ranked id (first_token mode), best first")
    mode: str
    fallback: bool = Field(description="true: the ranking-stage order, because ranking failed or was late")
    fallback_reason: FallbackReason | None = None
    latency_ms: float = Field(description="server time from receipt of the HTTP request to this answer")


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    text: str


class RerankBody(BaseModel):
    """Cohere/Jina rerank request. `model` is accepted for client compatibility and ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    query: str
    documents: list[str | RerankDocument] = Field(min_length=1)
    top_n: int | None = Field(default=None, gt=0, description="return the best n (all when absent)")
    model: str | None = None
    return_documents: bool = False


class RerankResult(BaseModel):
    index: int = Field(description="position of the document in the request")
    relevance_score: float = Field(description="softmax of first_token scores, else 1/(1+rank); higher is better")
    document: RerankDocument | None = None


class RerankMeta(BaseModel):
    mode: str
    fallback: bool
    fallback_reason: FallbackReason | None = None
    latency_ms: float


class RerankResponse(BaseModel):
    id: str
    model: str
    results: list[RerankResult]
    meta: RerankMeta


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
            413, f"{label}: candidates: {len(candidates)} exceed the limit of {settings.max_candidates}", request_id
        )
    _check_values(item, label, settings.max_string_chars, request_id)
    try:
        return PostRankRequest.model_validate(item).check_features(schema)
    except ValidationError as exc:
        raise ApiError(422, f"{label}: {format_validation_error(exc)}", request_id) from exc
    except DataError as exc:
        raise ApiError(422, str(exc), request_id) from exc


def parse_rerank(payload: Any, settings: ServingSettings) -> RerankBody:
    if not isinstance(payload, dict):
        raise ApiError(422, f"body: expected a JSON object, got {_json_type(payload)}")
    documents = payload.get("documents")
    if isinstance(documents, list) and len(documents) > settings.max_candidates:
        raise ApiError(413, f"body: documents: {len(documents)} exceed the limit of {settings.max_candidates}")
    _check_values(payload, "body", settings.max_string_chars, None)
    try:
        return RerankBody.model_validate(payload)
    except ValidationError as exc:
        raise ApiError(422, f"body: {format_validation_error(exc)}") from exc


def rerank_text_feature(schema: FeatureSchema) -> str | None:
    """The item feature that carries a document's text: the schema's first item `text` feature."""
    return next((spec.name for spec in schema.for_owner("item") if spec.kind is FeatureKind.text), None)


def rerank_request(body: RerankBody, request_id: str, text_feature: str) -> PostRankRequest:
    """Documents become candidates (id = their index) with one text feature; the user is anonymous."""
    texts = [doc if isinstance(doc, str) else doc.text for doc in body.documents]
    return PostRankRequest(
        request_id=request_id,
        query=body.query,
        user=User(id=ANONYMOUS_USER),
        candidates=[Item(id=str(index), features={text_feature: text}) for index, text in enumerate(texts)],
    )


def post_rank_response(result: RankResult, mode: str, reason: FallbackReason | None, latency_ms: float) -> PostRankResponse:
    return PostRankResponse(
        request_id=result.request_id,
        ranking=result.ranking,
        scores=result.scores,
        mode=mode,
        fallback=reason is not None,
        fallback_reason=reason,
        latency_ms=round(latency_ms, 3),
    )


def rerank_response(body: RerankBody, answer: PostRankResponse, model_name: str) -> RerankResponse:
    """The best `top_n` documents, with relevance scores that decrease with rank."""
    scores = _softmax(answer.scores) if answer.scores is not None else [1.0 / (1 + rank) for rank in range(len(answer.ranking))]
    top = len(answer.ranking) if body.top_n is None else min(body.top_n, len(answer.ranking))
    results = []
    for candidate_id, score in list(zip(answer.ranking, scores, strict=True))[:top]:
        index = int(candidate_id)
        document = body.documents[index] if body.return_documents else None
        results.append(
            RerankResult(
                index=index,
                relevance_score=score,
                document=RerankDocument(text=document) if isinstance(document, str) else document,
            )
        )
    meta = RerankMeta(mode=answer.mode, fallback=answer.fallback, fallback_reason=answer.fallback_reason, latency_ms=answer.latency_ms)
    return RerankResponse(id=answer.request_id, model=model_name, results=results, meta=meta)


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


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
