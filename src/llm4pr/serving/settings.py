"""Serving settings: the limits and timings of the HTTP service, validated once at start-up.

Every limit exists so that one client cannot make the server do unbounded work: bodies are
capped before they are parsed, candidate lists and strings before they are validated, and the
queue before a request reaches the model.
"""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field

from llm4pr.rankers.base import ServedMode

DEFAULT_TOKEN_ENV = "LLM4PR_API_TOKEN"


class ServingSettings(BaseModel):
    """Limits, batching and deadlines of the post-ranking service (`serve` and `create_app`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: ServedMode = Field(default="generate", description="inference mode when a request names none (a baseline has one ranking for every mode)")
    model_name: str = Field(default="llm4pr", min_length=1, description="the name /v1/rerank reports as `model`")
    max_batch_size: int = Field(default=8, ge=1, le=256, description="requests ranked together in one model call")
    max_wait_ms: float = Field(default=5.0, ge=0, le=1000, description="how long the first queued request waits for others")
    deadline_ms: float = Field(
        default=5000.0, ge=0, description="per request, from arrival: past it the ranking-stage order is returned"
    )
    max_queue_size: int = Field(default=1024, ge=1, description="queued requests; beyond it new ones fall back at once")
    max_requests_per_body: int = Field(default=64, ge=1, description="requests in one /v1/post-rank body")
    max_candidates: int = Field(
        default=1000,
        ge=1,
        description="candidates per /v1/post-rank request, documents per rerank call (Cohere's limit); beyond it a 413. "
        "Lists longer than the model's window cost one model pass per window step",
    )
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1, description="request body size, checked before parsing")
    max_discard_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="an over-limit body up to this size is read and dropped before the 413, so that a client still sending gets it",
    )
    max_string_chars: int = Field(default=10_000, ge=1, description="length of any string in a body")
    token_env: str = Field(
        default=DEFAULT_TOKEN_ENV, min_length=1, description="env var holding the bearer token; unset or empty: no auth"
    )
    drain_timeout_s: float = Field(default=30.0, gt=0, description="on shutdown, how long queued requests may still run")


def is_loopback_host(host: str) -> bool:
    """True for 'localhost' and loopback addresses: the only hosts served or load-tested by default."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
