"""An LLM row of the benchmark as a `FittableRanker`: `fit` is the trainer, `rank` its checkpoint.

The trainer reads its splits from a prepared data folder, not from requests in memory (it fits the
feature statistics on the whole training file, subsamples by seed, resumes from snapshots and
validates on the folder's validation split), so the ranker is built with the folder that the
requests given to `fit` come from and with the training config that carries the seed. Rows that
train the same way are given the same run folder: the first `fit` trains, the others reuse it.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from llm4pr.data.errors import DataError
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.ranker import LLM4PRRanker
from llm4pr.io import atomic_folder
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.rankers.base import Mode
from llm4pr.training.config import TrainConfig
from llm4pr.training.trainer import Trainer, training_seconds


class TrainableLLM4PR:
    """LLM4PR trained with `config` on `data_dir` into `run_dir`, then ranking with that run."""

    name = "llm4pr"

    def __init__(self, config: TrainConfig, data_dir: Path, run_dir: Path, progress: bool = True, batch_size: int = 16) -> None:
        self.config, self.data_dir, self.run_dir = config, data_dir, run_dir
        self.progress, self.batch_size = progress, batch_size
        self.llm: LLM4PRRanker | None = None
        self.train_seconds: float | None = None  # the run's own record, also when another row trained it

    @property
    def schema(self) -> FeatureSchema | None:
        return self.llm.schema if self.llm is not None else None

    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self:
        """Train (or resume, or reuse) the run; the trainer reads the same splits from `data_dir`."""
        if seed != self.config.seed:
            raise ValueError(f"fit(seed={seed}) but the training config's seed is {self.config.seed}")
        Trainer(self.config, self.data_dir, self.run_dir, progress=self.progress).run()
        self.llm = LLM4PRRanker.from_pretrained(self.run_dir, InferenceConfig(batch_size=self.batch_size))
        self.train_seconds = training_seconds(self.run_dir)
        return self

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        return self._fitted().rank(requests, mode=mode)

    def save(self, folder: str | Path) -> None:
        """Copy the trained checkpoint (LLM4PR's saved form) to `folder`, a new or empty one."""
        self._fitted()
        folder = Path(folder)
        if folder.exists() and any(folder.iterdir()):
            raise DataError(f"{folder}: exists and is not empty; save into a new folder")
        with atomic_folder(folder) as tmp:
            shutil.copytree(resolve_checkpoint(self.run_dir), tmp, dirs_exist_ok=True)

    def _fitted(self) -> LLM4PRRanker:
        if self.llm is None:
            raise RuntimeError(f"{self.name}: call fit before rank or save")
        return self.llm
