"""Any saved ranker back as a `Ranker`: what `llm4pr rank` and `llm4pr serve` load.

A ranker is saved in one of two forms: a folder with a manifest (`rankers.saved`; every
baseline, e.g. written by `llm4pr fit-baseline`) or an LLM4PR checkpoint, alone or in its
training run folder (written by `llm4pr train`). The inference settings (`InferenceConfig`:
device, quantization, mode, batch size, window, ...) apply to checkpoints only: a baseline has one
ranking, computed on the CPU. Several saved rankers load as one `ScoreEnsemble` (`load_rankers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llm4pr.baselines.registry import load_baseline
from llm4pr.data.errors import DataError
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.rankers.base import Ranker
from llm4pr.rankers.ensemble import ScoreEnsemble
from llm4pr.rankers.saved import MANIFEST_FILE, is_saved_ranker


def load_ranker(path: str | Path, config: InferenceConfig | None = None, *, progress: bool = False) -> Ranker:
    """The ranker saved in `path`; a checkpoint is loaded with `config` (`progress`: a bar per `rank` call)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: no such folder (expected a saved ranker or an llm4pr checkpoint)")
    if is_saved_ranker(path):
        return load_baseline(path)
    try:
        checkpoint = resolve_checkpoint(path)
    except DataError as exc:
        raise DataError(f"{exc}; nor is it a saved ranker (no {MANIFEST_FILE}, as `llm4pr fit-baseline` writes)") from None
    return LLM4PRRanker.from_pretrained(checkpoint, config, progress=progress)


def load_rankers(paths: Sequence[str | Path], config: InferenceConfig | None = None, *, progress: bool = False) -> Ranker:
    """One saved ranker, or several as a `ScoreEnsemble` (whose members rank in `first_token` mode,
    whatever `config` says: the ensemble averages scores)."""
    if len(paths) == 1:
        return load_ranker(paths[0], config, progress=progress)
    try:
        return ScoreEnsemble([load_ranker(path, config, progress=progress) for path in paths])
    except ValueError as exc:
        raise DataError(f"{', '.join(map(str, paths))}: {exc}") from None
