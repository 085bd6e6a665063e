"""The model's settings: pydantic only, so configs load and validate without importing torch."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_IDENTIFIERS: tuple[str, ...] = tuple(string.ascii_uppercase)

# The backbone's float type as configured: "auto" is resolved per machine (model/precision.py).
Dtype = Literal["auto", "bfloat16", "float32"]


class LoraSettings(BaseModel):
    """LoRA on the backbone for learning to post-rank (paper: q,k projections, r=32, alpha=32)."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(default=32, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj"])


class ModelConfig(BaseModel):
    """Everything needed to rebuild the model; saved as JSON in every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    backbone: str = "smollm2-135m-instruct"
    dtype: Dtype = Field(
        default="auto",
        description="the frozen backbone's float type; auto: bfloat16 on a GPU or a CPU with AMX/AVX512-BF16 "
        "units, float32 elsewhere (model/precision.py). Trainable parts are float32 in every case",
    )
    text_encoder: str = "all-minilm-l6-v2"
    adapter: Literal["qia", "mlp"] = "qia"
    prompt_style: Literal["soft", "text"] = Field(default="soft", description="text: features in words (PTPR)")
    qia_hidden_dim: int = Field(default=512, gt=0)
    qia_heads: int = Field(default=1, gt=0)
    categorical_dim: int = Field(default=32, gt=0)
    embed_ids: bool = True
    bind_identifiers: bool = Field(
        default=True,
        description="add each candidate's identifier word embedding to its soft token (docs/decisions.md); "
        "false is the paper's plain layout (the 'w/o identifier binding' ablation)",
    )
    relative_numeric: bool = Field(
        default=True, description="add each item's numerical features z-scored among its request's candidates (model/request_context.py)"
    )
    history_labels: bool = Field(
        default=True, description="add the user's label of each history item, relative to the history's mean (model/request_context.py)"
    )
    query_similarity: bool = Field(
        default=False,
        description="add the cosine of the query with each item text feature (as is, z-scored among the request's "
        "candidates, missing flag): the match a bi-encoder ranks by, which QIA does not write as such "
        "(model/request_context.py, docs/decisions.md)",
    )
    first_stage_bm25: str | None = Field(
        default=None,
        description="a numerical item feature holding the first stage's score (e.g. first_stage_score): in a request "
        "where no candidate carries it (a /v1 or /v2 rerank call), it is set to the BM25 score of the query over "
        "the candidates' first text feature, the request's own documents as the corpus (data/rerank.py, docs/decisions.md)",
    )
    candidate_prior: bool = Field(
        default=True,
        description="add a linear read-out of each candidate's soft token to its identifier's logit at every "
        "answer position: a direct path from the features to the ranking (model/llm4pr.py, docs/decisions.md)",
    )
    history_prior: bool = Field(
        default=False,
        description="add each candidate's match with the user's liked history (a taste vector: history items' keys "
        "weighted by the user's label minus the history's mean, against the candidate's query) to its identifier's "
        "logit: a direct path for the personal signal (model/history_prior.py, docs/decisions.md)",
    )
    position_prior: bool = Field(
        default=False,
        description="add a learned bias per candidate position (A, B, ...) to its identifier's logit: a direct "
        "path for what a ranking stage's order says, for candidates given in that order (docs/decisions.md)",
    )
    backbone_layers: int | None = Field(
        default=None,
        gt=0,
        description="keep only the backbone's first N decoder layers (None: all): a step costs about N/total "
        "of the full one (docs/decisions.md)",
    )
    max_history: int = Field(default=10, ge=0)
    identifiers: list[str] = Field(default_factory=lambda: list(DEFAULT_IDENTIFIERS))
    lora: LoraSettings = Field(default_factory=LoraSettings)
