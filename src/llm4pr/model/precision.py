"""Which float type the frozen backbone is stored and run in, chosen per machine.

Mixed precision, the way this project does it: the frozen backbone's weights are stored once in
bfloat16 where the hardware multiplies bfloat16 fast (a GPU; a CPU with AMX or AVX512-BF16
units), so no weight is cast per call; everything that trains (LoRA matrices, QIA, field
encoders, the direct paths) and the optimizer's state stay in float32, and the losses are
computed in float32.

How "auto" decides on a CPU, by measurement rather than by flags (docs/decisions.md, "Mixed
precision"): the flags say which instructions exist, not how fast PyTorch's kernels run on them.
AMD Zen 4 (AVX512-BF16) multiplies bfloat16 about twice as fast as float32; an Intel Xeon that
lists avx512_bf16 without AMX ran bfloat16 products at 0.55-0.7x float32. So:

- no bfloat16 flag (avx512_bf16, amx_bf16): float32, unmeasured (bfloat16 is emulated there,
  about ten times slower);
- otherwise a probe (`probe_bf16_speedup`, a fraction of a second) times the default backbone's
  projection shapes, forward and backward, in both types; bfloat16 only if it is at least
  `MIN_BF16_SPEEDUP` times faster. The record is cached per machine (CPU model, flags, torch
  version, threads: `provenance.machine_key`), logged, and named in every result file's
  provenance and every checkpoint's config;
- `LLM4PR_DTYPE_PROBE=0` turns the probe off: the flag rule decides (bfloat16 with a flag).
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from typing import Literal

import torch

from llm4pr.provenance import bf16_flags, cpuinfo, read_dtype_probe, write_dtype_probe

logger = logging.getLogger(__name__)

ConcreteDtype = Literal["bfloat16", "float32"]

PROBE_ENV = "LLM4PR_DTYPE_PROBE"
MIN_BF16_SPEEDUP = 1.2
# (tokens, in, out) of the default backbone's (SmolLM2-135M, hidden 576) projections at a
# training batch: attention (576 -> 576), MLP up (576 -> 1536) and down (1536 -> 576).
PROBE_SHAPES = ((256, 576, 576), (256, 576, 1536), (256, 1536, 576))


def cpu_bf16_flags() -> frozenset[str]:
    """The bfloat16 flags this CPU reports (empty off Linux or on CPUs without them)."""
    return bf16_flags(cpuinfo())


def resolve_dtype(dtype: str, device: str | torch.device = "cpu") -> ConcreteDtype:
    """"auto" -> "bfloat16" on a CUDA device that supports it, the measured choice on a CPU
    (`cpu_dtype`), "float32" elsewhere; "bfloat16" and "float32" are returned as given."""
    if dtype in ("bfloat16", "float32"):
        return dtype  # type: ignore[return-value]
    if dtype != "auto":
        raise ValueError(f"dtype must be 'auto', 'bfloat16' or 'float32', got {dtype!r}")
    device = torch.device(device)
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        return cpu_dtype()
    return "float32"


def cpu_dtype() -> ConcreteDtype:
    """The backbone's float type on this CPU: see the module's docstring for the rule."""
    flags = cpu_bf16_flags()
    if not flags:
        return "float32"
    if os.environ.get(PROBE_ENV, "1") == "0":
        logger.info("model.dtype auto: bfloat16 by the CPU's flags (%s; %s=0: not measured)", ", ".join(sorted(flags)), PROBE_ENV)
        return "bfloat16"
    record = read_dtype_probe()
    if record is None or record.get("dtype") not in ("bfloat16", "float32"):
        speedup = probe_bf16_speedup()
        record = {
            "dtype": "bfloat16" if speedup >= MIN_BF16_SPEEDUP else "float32",
            "bf16_speedup": round(speedup, 3),
            "rule": f"bfloat16 if at least {MIN_BF16_SPEEDUP}x float32",
            "shapes": [list(shape) for shape in PROBE_SHAPES],
            "threads": torch.get_num_threads(),
            "measured": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        try:
            write_dtype_probe(record)
        except OSError as exc:  # a read-only cache costs a probe per process, nothing else
            logger.warning("model.dtype auto: cannot cache the probe (%s)", exc)
        logger.info("model.dtype auto: measured bfloat16 at %.2fx float32 here: %s", speedup, record["dtype"])
    return record["dtype"]


def probe_bf16_speedup(repeats: int = 5) -> float:
    """float32 time / bfloat16 time of `PROBE_SHAPES`' products, forward and the backward to the
    input (the frozen backbone's share of a training step), best of `repeats` after a warm-up."""
    seconds = {}
    for dtype in (torch.float32, torch.bfloat16):
        generator = torch.Generator().manual_seed(0)
        pairs = [
            (torch.randn(tokens, width, generator=generator).to(dtype).requires_grad_(),
             torch.randn(width, out, generator=generator).to(dtype) / width**0.5)
            for tokens, width, out in PROBE_SHAPES
        ]  # fmt: skip

        def step() -> None:
            for inputs, weight in pairs:
                (inputs @ weight).sum().backward()

        step()  # warm-up: kernel selection, allocations
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            best = min(best, time.perf_counter() - started)
        seconds[dtype] = best
    return seconds[torch.float32] / seconds[torch.bfloat16]


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
