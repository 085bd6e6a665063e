"""The HTTP service: FastAPI routes over one ranker, reached only through the micro-batcher.

A valid request always gets a 200 with a permutation of ALL its candidates: the model's order,
or the ranking-stage order marked `fallback` when the model failed, the request's deadline
passed, or the queue was full. Invalid input gets a 4xx JSON error naming the request id and
the field; a 500 (also JSON, never a traceback) means a bug in this server.

The ranker is any `Ranker` with a feature schema: an LLM4PR checkpoint or a saved baseline. A
baseline has one ranking, so it answers every mode with it, and the answer's `mode` names the
baseline (e.g. `lambdamart`): the caller sees what ranked.

`/` is the playground (`llm4pr.serving.playground`): a static page over the same API, with the
sample requests of `GET /v1/examples`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from llm4pr import __version__
from llm4pr.data.requests import Item, PostRankRequest, RankResult, User
from llm4pr.data.rerank import RerankUnsupported, rerank_request, rerank_text_feature
from llm4pr.inference.config import InferenceConfig
from llm4pr.rankers.base import Mode, Ranker, ServedMode, fallback_result
from llm4pr.rankers.explanation import explain as explain_ranking
from llm4pr.serving.batcher import BatcherUnavailable, MicroBatcher
from llm4pr.serving.metrics import ServingMetrics
from llm4pr.serving.playground import CONTENT_SECURITY_POLICY, MAX_EXAMPLES, STATIC_DIR, load_examples
from llm4pr.serving.schemas import (
    ApiError,
    ErrorResponse,
    FallbackReason,
    PostRankResponse,
    RerankBody,
    RerankBodyT,
    RerankBodyV2,
    RerankResponse,
    RerankResponseV2,
    checked_document_features,
    error_body,
    inline_json_schema,
    parse_post_rank,
    parse_rerank,
    post_rank_response,
    rerank_response,
    rerank_response_v2,
)
from llm4pr.serving.settings import ServingSettings, is_loopback_host

logger = logging.getLogger(__name__)

WARM_UP_REQUEST = PostRankRequest(
    request_id="warm-up", query="warm-up", user=User(id="warm-up"), candidates=[Item(id="a"), Item(id="b")]
)
# the playground's sample requests: a JSON-lines file, or request objects
Examples = str | Path | Sequence[dict[str, Any]] | None


class Service:
    """The state behind the routes: the ranker, its batcher, metrics, readiness and the auth token."""

    def __init__(self, ranker: Ranker, settings: ServingSettings, examples: Examples = None) -> None:
        if ranker.schema is None:
            raise ValueError(f"the server validates requests against the ranker's feature schema; {ranker.name!r} has none")
        self.ranker = ranker
        self.settings = settings
        self.schema = ranker.schema
        # the playground's sample requests: a file is read (and checked) here, at start-up
        self.examples: list[dict[str, Any]] = (
            load_examples(examples, self.schema) if isinstance(examples, str | Path) else list(examples or [])[:MAX_EXAMPLES]
        )
        # the document text feature of rerank calls, or why this checkpoint refuses them
        self.rerank_support: str | RerankUnsupported
        try:
            self.rerank_support = rerank_text_feature(self.schema)
        except RerankUnsupported as refusal:
            self.rerank_support = refusal
        self.token = os.environ.get(settings.token_env) or None
        self.batcher: MicroBatcher | None = None
        self.metrics = ServingMetrics(queue_depth=lambda: self.batcher.pending() if self.batcher else 0)
        self.not_ready_reason: str | None = "warm-up request has not finished"

    @asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        """Start the worker and warm the model up in it; on shutdown, drain the queue."""
        settings = self.settings
        self.batcher = MicroBatcher(
            self._rank_batch, settings.max_batch_size, settings.max_wait_ms, settings.max_queue_size, explain=self._explain_batch
        )
        self.batcher.start()
        self.batcher.submit(WARM_UP_REQUEST, settings.mode).add_done_callback(lambda f: self._warmed_up(f.result()))
        try:
            yield
        finally:
            await asyncio.to_thread(self.batcher.close, settings.drain_timeout_s)

    def _warmed_up(self, result: RankResult) -> None:
        self.not_ready_reason = f"warm-up request fell back: {result.error}" if result.fallback else None
        if result.fallback:
            logger.error("the model failed its warm-up request: %s", result.error)

    def _rank_batch(self, requests: Sequence[PostRankRequest], mode: Mode) -> list[RankResult]:
        self.metrics.batch_size.observe(len(requests))
        return self.ranker.rank(requests, mode=mode)

    def _explain_batch(self, requests: Sequence[PostRankRequest], mode: Mode) -> list[RankResult]:
        self.metrics.batch_size.observe(len(requests))
        return explain_ranking(self.ranker, requests, mode=mode)

    async def rank(
        self, requests: Sequence[PostRankRequest], mode: Mode, started: float, explain: bool = False
    ) -> list[PostRankResponse]:
        """Rank through the batcher (`explain`: with explanations); whatever is not ready by the
        deadline gets the fallback order."""
        futures = [self._submit(request, mode, explain) for request in requests]
        waiting = [future for future in futures if future is not None]
        remaining = started + self.settings.deadline_ms / 1000.0 - time.perf_counter()
        try:
            if waiting and remaining > 0:
                await asyncio.wait(waiting, timeout=remaining)
        finally:  # late (or abandoned): a queued request is skipped, a running one's result dropped
            for pending in waiting:
                pending.cancel()
        answers = []
        for request, future in zip(requests, futures, strict=True):
            reason: FallbackReason | None
            if future is None:
                result, reason = fallback_result(request, "unavailable"), "unavailable"
            elif future.cancelled():
                result, reason = fallback_result(request, "deadline"), "deadline"
            else:
                result = future.result()
                reason = "model_error" if result.fallback else None
            self.metrics.observe_ranking(mode, reason)
            answers.append(post_rank_response(result, mode, reason, (time.perf_counter() - started) * 1000.0))
        return answers

    def _submit(self, request: PostRankRequest, mode: Mode, explain: bool = False) -> asyncio.Future[RankResult] | None:
        """The request's future result, or None when the batcher cannot take it (full, not running)."""
        if self.batcher is None:
            return None
        try:
            return asyncio.wrap_future(self.batcher.submit(request, mode, explain))
        except BatcherUnavailable:
            return None


def create_app(ranker: Ranker, settings: ServingSettings | None = None, examples: Examples = None) -> FastAPI:
    """The FastAPI app serving `ranker`; the batcher starts and stops with the app's lifespan.

    `examples`: the playground's sample requests, a JSON-lines file (read and checked against the
    ranker's schema now: a DataError names the bad lines) or request objects; at most 50."""
    service = Service(ranker, settings or ServingSettings(), examples)
    app = FastAPI(
        title="llm4pr post-ranking",
        version=__version__,
        description="Post-ranks a search or recommendation candidate list with LLM4PR (or a saved baseline). See docs/serving.md.",
        lifespan=service.lifespan,
    )
    app.state.service = service
    app.add_middleware(_MetricsMiddleware, metrics=service.metrics)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(_v1)
    app.include_router(_v2)
    app.include_router(_health)
    app.include_router(_playground)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def serve(
    checkpoint: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: ServingSettings | None = None,
    inference: InferenceConfig | None = None,
    log_level: str = "info",
    examples: str | Path | None = None,
) -> None:
    """Load a saved ranker (an LLM4PR checkpoint or run folder, or a saved baseline) and serve it
    with uvicorn until SIGINT/SIGTERM (then drain and exit). `examples`: a JSON-lines file of
    requests, the playground's samples (`GET /v1/examples`; the first 50, checked at start-up).

    A checkpoint is loaded with `inference` (device, quantization, window, stride, shifts); its
    mode and batch size are the service's (`settings.mode`, `settings.max_batch_size`), since the
    micro-batcher decides both. A baseline has one ranking and ignores `inference`."""
    import uvicorn

    from llm4pr.loading import load_ranker

    settings = settings or ServingSettings()
    inference = (inference or InferenceConfig()).replace(mode=settings.mode, batch_size=settings.max_batch_size)
    ranker = load_ranker(checkpoint, inference)
    if not is_loopback_host(host) and not os.environ.get(settings.token_env):
        logger.warning("serving on %s without authentication: set %s to require a bearer token", host, settings.token_env)
    uvicorn.run(
        create_app(ranker, settings, examples),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
    )


# --- routes -----------------------------------------------------------------------------------


def _service(request: Request) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


ServiceDep = Annotated[Service, Depends(_service)]
ModeQuery = Annotated[ServedMode | None, Query(description="inference mode; default from the server settings")]
ExplainQuery = Annotated[bool, Query(description="add per-candidate explanations (docs/serving.md, Explanations)")]
RerankMode = Literal["first_token"]
Endpoint = Callable[..., Coroutine[Any, Any, Any]]
RerankModeQuery = Annotated[
    RerankMode | None, Query(description="only first_token, the mode that scores each document (the default here)")
]


async def _authorize(request: Request, service: ServiceDep) -> None:
    """Bearer-token check (constant-time), active only when the token env var is set."""
    if service.token is None:
        return
    scheme, _, supplied = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), service.token.encode()):
        raise ApiError(401, "missing or invalid bearer token: send 'Authorization: Bearer <token>'")


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "malformed JSON",
        401: "missing or wrong bearer token",
        413: "body, request count or candidate count over the limit",
        422: "invalid request: the message names the request id and the field",
    }.items()
}


def _json_body(type_: Any) -> dict[str, Any]:
    schema = inline_json_schema(type_)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


_v1 = APIRouter(prefix="/v1", dependencies=[Depends(_authorize)], responses=_ERRORS)
_v2 = APIRouter(prefix="/v2", dependencies=[Depends(_authorize)], responses=_ERRORS)
_health = APIRouter()
_playground = APIRouter(include_in_schema=False)


@_v1.post(
    "/post-rank",
    response_model=PostRankResponse | list[PostRankResponse],
    response_model_exclude_none=True,
    openapi_extra=_json_body(PostRankRequest | list[PostRankRequest]),
    summary="post-rank one request or a list (data-contract format; labels are ignored)",
)
async def post_rank(request: Request, service: ServiceDep, mode: ModeQuery = None, explain: ExplainQuery = False) -> Any:
    started = time.perf_counter()
    payload = await _read_json(request, service.settings)
    requests = parse_post_rank(payload, service.schema, service.settings)
    answers = await service.rank(requests, mode or service.settings.mode, started, explain)
    return answers if isinstance(payload, list) else answers[0]


def _rerank_route(router: APIRouter, response: type[BaseModel], body: type[BaseModel], summary: str) -> Callable[[Endpoint], Endpoint]:
    return router.post(
        "/rerank", response_model=response, response_model_exclude_none=True, openapi_extra=_json_body(body), summary=summary
    )


@_rerank_route(_v1, RerankResponse, RerankBody, "Cohere v1 (and Jina) rerank: documents become candidates with the schema's text feature")
async def rerank(request: Request, service: ServiceDep, mode: RerankModeQuery = None) -> Any:
    body, answer = await _rerank(request, service, RerankBody, mode)
    return rerank_response(body, answer, service.settings.model_name)


@_rerank_route(_v2, RerankResponseV2, RerankBodyV2, "Cohere v2 rerank: the same, documents as strings, no `return_documents`")
async def rerank_v2(request: Request, service: ServiceDep, mode: RerankModeQuery = None) -> Any:
    body, answer = await _rerank(request, service, RerankBodyV2, mode)
    return rerank_response_v2(body, answer)


async def _rerank(
    request: Request, service: Service, body_type: type[RerankBodyT], mode: RerankMode | None
) -> tuple[RerankBodyT, PostRankResponse]:
    """Both rerank versions: refuse a checkpoint that cannot rank bare text, then rank the documents
    in first_token mode, the one mode that gives each document a score. Up to `max_candidates`
    documents: lists longer than the model's window go through the ranker's sliding windows, as
    on /v1/post-rank (their relevance scores then come from the final position: schemas)."""
    started = time.perf_counter()
    text_feature = service.rerank_support
    if isinstance(text_feature, RerankUnsupported):
        raise ApiError(422, f"{request.url.path} {text_feature}")
    payload = await _read_json(request, service.settings)
    body = parse_rerank(payload, body_type, service.settings)
    features = checked_document_features(body, service.schema, text_feature)
    ranking_request = rerank_request(f"rerank-{uuid.uuid4().hex}", body.query, body.texts(), text_feature, features)
    [answer] = await service.rank([ranking_request], mode or "first_token", started)
    return body, answer


@_v1.get("/examples", summary="the playground's sample requests (serve --examples FILE; at most 50)")
async def examples(service: ServiceDep) -> dict[str, Any]:
    return {"examples": service.examples, "limit": MAX_EXAMPLES}


@_playground.get("/")
async def playground() -> FileResponse:
    """The playground page; its scripts and styles come from /static (this server) only."""
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})


@_health.get("/healthz", summary="liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@_health.get("/readyz", summary="readiness: the model is loaded and answered a warm-up request")
async def readyz(service: ServiceDep) -> JSONResponse:
    if service.not_ready_reason is None:
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "not_ready", "reason": service.not_ready_reason}, status_code=503)


@_health.get("/metrics", summary="Prometheus metrics (text format)")
async def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=service.metrics.content_type)


async def _read_json(request: Request, settings: ServingSettings) -> Any:
    """The body parsed as JSON, refused with 413 as soon as it exceeds `max_body_bytes` (chunked too)."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        if int(declared) <= settings.max_discard_bytes:
            await _discard(request.stream(), settings.max_discard_bytes)
        raise ApiError(413, f"body: {declared} bytes exceed the limit of {limit} bytes")
    body = bytearray()
    chunks = request.stream()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            await _discard(chunks, settings.max_discard_bytes - len(body))
            raise ApiError(413, f"body: more than {limit} bytes (the limit)")
    if not body.strip():
        raise ApiError(400, "body: empty; expected JSON")
    try:
        return json.loads(body)
    except RecursionError as exc:
        raise ApiError(400, "body: malformed JSON: nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ApiError(400, f"body: malformed JSON: {exc}") from exc


async def _discard(chunks: AsyncIterator[bytes], budget: int) -> None:
    """Read and drop the rest of a refused body, up to `budget` bytes.

    A client still sending when the server answers and closes gets a connection reset instead of
    the answer (Python's urllib does); one that could finish sending reads the 413. Past the
    budget the server stops reading and the connection is closed.
    """
    read = 0
    try:
        async for chunk in chunks:
            read += len(chunk)
            if read > budget:
                return
    except ClientDisconnect:
        return


# --- errors and metrics ----------------------------------------------------------------------


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.status, exc.message, exc.request_id), status_code=exc.status, headers=headers)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors())
    return JSONResponse(error_body(422, problems), status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(error_body(exc.status_code, message), status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """A bug, not bad input: a JSON 500 without internals (uvicorn logs the traceback)."""
    return JSONResponse(error_body(500, "internal server error"), status_code=500)


class _MetricsMiddleware:
    """Counts every HTTP answer by route template and status, and times it (pure ASGI)."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception escaped to the server-error handler

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            endpoint = getattr(scope.get("route"), "path", "other")
            self.metrics.observe_http(endpoint, status, time.perf_counter() - started)
