"""Errors for bad input, worded for the person who has to fix the file or the request."""

from __future__ import annotations

from pydantic import ValidationError


class DataError(ValueError):
    """Input data is wrong; the message names where (file and line, request id, field) and why."""


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: `field.path: message` (pydantic's own wording, without its URLs)."""
    parts = []
    for err in exc.errors(include_url=False):
        location = ".".join(str(p) for p in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)
