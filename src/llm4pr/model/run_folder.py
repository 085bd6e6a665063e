"""The training run folder's layout: the one place that says where a run keeps its checkpoints.

A run folder holds `adaptation/` (the model after feature adaptation), `model/` (the final model,
what `rank`, `evaluate` and `serve` load) and `snapshot/` (the latest resumable state: weights,
optimizer, step), each a checkpoint folder (`model.checkpoint`), beside the training's own records
(`training.trainer`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from llm4pr.data.errors import DataError
from llm4pr.model.checkpoint import CONFIG_FILE

Stage = Literal["adaptation", "post_rank"]
STAGES: tuple[Stage, ...] = ("adaptation", "post_rank")
STAGE_DIRS: dict[Stage, str] = {"adaptation": "adaptation", "post_rank": "model"}
SNAPSHOT_DIR = "snapshot"


def is_checkpoint(path: str | Path) -> bool:
    """Whether `path` is a checkpoint folder (one holding the checkpoint's config)."""
    return (Path(path) / CONFIG_FILE).is_file()


def resolve_checkpoint(path: str | Path, stage_dir: str = STAGE_DIRS["post_rank"]) -> Path:
    """A checkpoint folder, or a training run folder holding the model in `stage_dir` (the final
    model in `model/`, the feature-adaptation model in `adaptation/`)."""
    path = Path(path)
    if is_checkpoint(path):
        return path
    if is_checkpoint(path / stage_dir):
        return path / stage_dir
    if (path / SNAPSHOT_DIR).is_dir():
        raise DataError(f"{path}: training has not finished (only a snapshot); resume it with `llm4pr train`")
    raise DataError(f"{path}: no llm4pr checkpoint here (expected {CONFIG_FILE} or {stage_dir}/{CONFIG_FILE})")
