"""YAML config files read into pydantic models, with errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from llm4pr.data.errors import DataError, format_validation_error

M = TypeVar("M", bound=BaseModel)


def load_yaml_model(model: type[M], path: str | Path, what: str) -> M:
    """Read `path` into `model`; a missing file, bad YAML or a bad field is a DataError."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError as exc:
        raise DataError(f"{path}: {what} not found") from exc
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: invalid YAML: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise DataError(f"{path}: invalid {what}: {format_validation_error(exc)}") from exc
