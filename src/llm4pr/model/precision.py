"""Which float type the frozen backbone is stored and run in, chosen per machine.

Mixed precision, the way this project does it: the frozen backbone's weights are stored once in
bfloat16 where the hardware multiplies bfloat16 fast (a GPU; a CPU with AMX or AVX512-BF16
units), so no weight is cast per call; everything that trains (LoRA matrices, QIA, field
encoders, the direct paths) and the optimizer's state stay in float32, and the losses are
computed in float32. On a CPU without bfloat16 units a bfloat16 product is emulated and about ten
times slower than float32 (docs/decisions.md), so "auto" picks float32 there.
"""

from __future__ import annotations

from typing import Literal

import torch

from llm4pr.provenance import bf16_flags, cpuinfo

ConcreteDtype = Literal["bfloat16", "float32"]


def cpu_bf16_flags() -> frozenset[str]:
    """The bfloat16 flags this CPU reports (empty off Linux or on CPUs without them)."""
    return bf16_flags(cpuinfo())


def resolve_dtype(dtype: str, device: str | torch.device = "cpu") -> ConcreteDtype:
    """"auto" -> "bfloat16" on a CUDA device that supports it or a CPU with bfloat16 units, else
    "float32"; "bfloat16" and "float32" are returned as given."""
    if dtype in ("bfloat16", "float32"):
        return dtype  # type: ignore[return-value]
    if dtype != "auto":
        raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32', got {dtype!r}")
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and cpu_bf16_flags():
        return "bfloat16"
    return "float32"


def attention_implementation(dtype: ConcreteDtype, device: str | torch.device = "cpu", prompt_style: str = "soft") -> str:
    """The backbone's attention kernel: "eager" for bfloat16 soft prompts on a CPU, "sdpa" elsewhere.

    Why: PyTorch's CPU flash attention runs bfloat16 about three times slower than float32
    (measured on the default backbone, docs/decisions.md), while the plain matrix-product
    attention gets the bfloat16 speed-up; at soft-prompt lengths (tens to a few hundred tokens)
    the eager form's [T, T] scores are small. All-text prompts (PTPR, the zero-shot LLM) run to
    a thousand tokens and more, and eager attention keeps every layer's [T, T] probabilities for
    the backward pass: a PTPR run on Semanlink (~1,100 tokens, batch 8) was killed at 24 GB.
    Flash attention's memory grows with T, not T^2, so text prompts take it."""
    cpu_bf16 = dtype == "bfloat16" and torch.device(device).type == "cpu"
    return "eager" if cpu_bf16 and prompt_style == "soft" else "sdpa"
