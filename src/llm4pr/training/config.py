"""The training config (`configs/*.yaml`): model, the two stages, data budget, checkpoints.

A stage with `steps: 0` is skipped: `adaptation.steps: 0` is the paper's "w/o FA" ablation,
`post_rank.auxiliary_ratio: 0` its "w/o auxiliary task", `model.adapter: mlp` its "w/o QIA".
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llm4pr.data.config_files import load_yaml_model
from llm4pr.data.errors import DataError
from llm4pr.evaluation.metrics import Cutoffs
from llm4pr.model.config import ModelConfig


class StageConfig(BaseModel):
    """Optimisation of one stage: AdamW, linear warm-up, cosine decay to `min_learning_rate`."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=0, ge=0)
    batch_size: int = Field(default=8, gt=0)
    learning_rate: float = Field(default=1e-3, gt=0)
    min_learning_rate: float = Field(default=1e-6, ge=0)
    warmup_ratio: float = Field(default=0.1, ge=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)


class PostRankStageConfig(StageConfig):
    auxiliary_ratio: float = Field(default=0.25, ge=0, le=1, description="share of auxiliary-task examples")
    shuffle_candidates: bool = Field(default=True, description="show candidates in random order in training")
    random_ties: bool = Field(
        default=True, description="order tied candidates at random in the main-task answer (false: in shown order; docs/decisions.md)"
    )
    listwise_loss_weight: float = Field(default=1.0, ge=0, description="ListNet term on the first answer position")
    rerank_ratio: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="share of post-rank examples shown as a rerank call shows them (each candidate with the schema's "
        "first text feature only, an anonymous user; data/rerank.py): a checkpoint that serves /v1 and /v2 rerank "
        "must rank bare documents too (docs/decisions.md)",
    )
    rerank_given_order: bool = Field(
        default=False,
        description="show rerank-shaped examples in the order their candidates came in, not shuffled: a rerank call's "
        "documents arrive in the first stage's order, which a position prior (model.position_prior) can then learn",
    )
    prior_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="peak learning rate of the direct score paths (model.candidate_prior, model.position_prior, model.history_prior), on "
        "the stage's schedule; None: the stage's learning_rate. A bias needs far larger steps than LoRA (docs/decisions.md)",
    )
    position_learning_rate: float | None = Field(
        default=None,
        gt=0,
        description="peak learning rate of the position bias alone (model.position_prior); None: as prior_learning_rate. "
        "The bias has one weight per position and needs large steps; the candidate prior's read-out may overfit at them",
    )


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(default_factory=ModelConfig)
    adaptation: StageConfig = Field(default_factory=StageConfig)
    post_rank: PostRankStageConfig = Field(default_factory=PostRankStageConfig)
    seed: int = 0
    max_train_requests: int | None = Field(default=None, gt=0, description="subsample the training split")
    max_valid_requests: int | None = Field(default=300, gt=0, description="validation requests scored after training")
    checkpoint_every: int = Field(default=50, gt=0, description="steps between resumable snapshots")
    inference_batch_size: int = Field(default=16, gt=0)
    metrics_at: Cutoffs = Field(default_factory=lambda: [3, 5], description="cutoffs k of the validation report's NDCG@k, MRR@k and MAP@k")
    gradient_checkpointing: bool = Field(default=False, description="recompute the backbone's activations in the backward pass (less memory, slower)")

    @model_validator(mode="after")
    def _text_prompts_need_no_adaptation(self) -> "TrainConfig":
        if self.model.prompt_style == "text" and self.adaptation.steps:
            raise ValueError("model.prompt_style 'text' (PTPR) has no soft tokens to adapt: set adaptation.steps to 0")
        return self

    @property
    def trains(self) -> bool:
        """False when both stages are skipped (the zero-shot LLM): the run is the same for any seed."""
        return bool(self.adaptation.steps or self.post_rank.steps)

    def check_processes(self, num_processes: int) -> None:
        """Each stage's batch is the global batch: it must split evenly over the training processes.

        Checked before `accelerate launch` starts them (a second of waiting, not twenty) and again
        by each process, for runs launched by hand.
        """
        for stage, stage_config in (("adaptation", self.adaptation), ("post_rank", self.post_rank)):
            if stage_config.batch_size % num_processes:
                raise DataError(
                    f"{stage}.batch_size {stage_config.batch_size} (the global batch) must be a multiple of the "
                    f"{num_processes} training processes"
                )

    def digest(self, *extra: object) -> str:
        """A short hash of what this config trains (and of `extra`, e.g. a row's data variant).

        Only settings that differ from their defaults are hashed, so adding a new option with a
        default that keeps today's behaviour does not orphan existing run folders.
        """
        settings = self.model_dump(mode="json", exclude_defaults=True)
        return hashlib.sha256(json.dumps([settings, *extra], sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def load(cls, path: str | Path, overrides: Sequence[str] = ()) -> "TrainConfig":
        """The YAML file, with `--set KEY.PATH=VALUE` overrides applied and validated alike."""
        return load_yaml_model(cls, path, "training config", overrides)
