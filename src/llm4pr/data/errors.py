"""Errors for bad input, worded for the person who has to fix the file or the request."""

from __future__ import annotations

from pydantic import ValidationError


class DataError(ValueError):
    """Input data is wrong; the message names where (file and line, request id, field) and why."""


def format_validation_error(exc: ValidationError, as_flags: bool = False) -> str:
    """One line per problem: `field.path: message` (pydantic's own wording, without its URLs);
    `as_flags`: fields named as the command-line flags that set them (`batch_size` -> `--batch-size`)."""
    parts = []
    for err in exc.errors(include_url=False):
        location = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if as_flags and err["loc"]:
            location = "--" + location.replace("_", "-")
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    return "; ".join(parts)
