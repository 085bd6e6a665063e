"""YAML and JSON config files read into pydantic models, with errors that name the file and the field."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llm4pr.data.errors import DataError, format_validation_error

M = TypeVar("M", bound=BaseModel)


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """`base` with `overrides` merged in, nested dicts key by key (neither argument is changed)."""
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def parse_overrides(assignments: Sequence[str]) -> dict[str, Any]:
    """`["post_rank.steps=500", "model.lora.target_modules=[q_proj, v_proj]"]` -> a nested dict.

    Values are read as YAML (numbers, booleans, null, lists); a malformed assignment is a DataError
    that quotes it."""
    nested: dict[str, Any] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise DataError(f"--set {assignment!r}: expected KEY.PATH=VALUE, e.g. post_rank.steps=500")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataError(f"--set {assignment!r}: the value is not valid YAML: {exc}") from exc
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise DataError(f"--set {assignment!r}: {part!r} is set to a value elsewhere and cannot hold keys")
        node[parts[-1]] = value
    return nested


def load_yaml_model(model: type[M], path: str | Path, what: str, overrides: Sequence[str] = ()) -> M:
    """Read `path` into `model`, with `overrides` ("a.b=value", as `--set` takes them) applied on
    top; a missing file, bad YAML or a bad field is a DataError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise DataError(f"{path}: {what} not found") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML: {exc}") from exc
    raw = deep_merge(raw, parse_overrides(overrides))
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        given = f" (with --set {' '.join(overrides)})" if overrides else ""
        raise DataError(f"{path}{given}: invalid {what}: {format_validation_error(exc)}") from exc


def load_json_model(model: type[M], path: str | Path, what: str, missing: str | None = None) -> M:
    """Read the JSON file `path` into `model`; a missing file (`missing`: the message, default
    "{path}: {what} not found"), bad JSON (with its line) or a bad field is a DataError."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(missing or f"{path}: {what} not found") from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise DataError(f"{path}: invalid {what}: {format_validation_error(exc)}") from exc
