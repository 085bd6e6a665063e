"""Inference settings: how a checkpoint is loaded and how it ranks, as one validated object.

`llm4pr rank`, `evaluate`, `serve`, `bench-latency` and the Ray workers all build their
`LLM4PRRanker` from an `InferenceConfig`, so that a setting means the same everywhere and a bad
combination is refused (naming the setting) before any model is loaded. Only the window's upper
bound, the checkpoint's number of candidate identifiers, is checked by the ranker, which knows it.
"""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from llm4pr.model.config import Dtype
from llm4pr.rankers.base import Mode

Quantization = Literal["int8"]


class InferenceConfig(BaseModel):
    """The LLM ranker's settings; `device` and `quantize` say how `from_pretrained` loads the model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Field(default="generate", description="inference mode when a call names none (rankers.base)")
    batch_size: int = Field(default=8, ge=1, description="requests per model call")
    window: int = Field(default=20, ge=2, description="candidates ranked in one pass; longer lists go through sliding windows")
    stride: int = Field(default=10, ge=1, description="how far the sliding window moves; smaller than the window, so that windows overlap")
    shifts: int = Field(
        default=1, ge=1, description="first_token: average scores over this many cyclic shifts of the candidate order (as many passes)"
    )
    device: str = Field(default="cpu", min_length=1, description="where the model runs (a torch device)")
    quantize: Quantization | None = Field(default=None, description="int8: dynamic int8 decoder for CPU inference (inference/quantize.py)")
    dtype: Dtype | None = Field(
        default=None,
        description="the backbone's float type (model/precision.py); default: the checkpoint's model.dtype, "
        "float32 under --quantize int8",
    )

    @field_validator("dtype")
    @classmethod
    def _int8_quantizes_float32(cls, dtype: str | None, info: ValidationInfo) -> str | None:
        if dtype == "bfloat16" and info.data.get("quantize") == "int8":
            raise PydanticCustomError(
                "int8_needs_float32", "int8 quantization starts from float32 weights, got dtype '{dtype}'", {"dtype": dtype}
            )
        return dtype

    @field_validator("stride")
    @classmethod
    def _stride_below_window(cls, stride: int, info: ValidationInfo) -> int:
        window = info.data.get("window")  # absent when the window itself was invalid
        if window is not None and stride >= window:
            raise PydanticCustomError(
                "stride_not_below_window", "must be smaller than the window ({window}), got {stride}", {"window": window, "stride": stride}
            )
        return stride

    @field_validator("shifts")
    @classmethod
    def _shifts_need_first_token(cls, shifts: int, info: ValidationInfo) -> int:
        mode = info.data.get("mode")
        if shifts > 1 and mode is not None and mode != "first_token":
            raise PydanticCustomError(
                "shifts_need_first_token",
                "{shifts} shifts need mode 'first_token' (the only mode with scores to average), got mode '{mode}'",
                {"shifts": shifts, "mode": mode},
            )
        return shifts

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`, validated like a new config (pydantic's `model_copy` is not)."""
        return self.model_validate({**self.model_dump(), **changes})
