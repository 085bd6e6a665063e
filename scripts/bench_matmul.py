"""This CPU's matrix-product rate in float32 and bfloat16, at the shapes the default backbone runs.

    .venv/bin/python scripts/bench_matmul.py --out benchmarks/results/speed/matmul-NAME.json

What a speed target can ask of a CPU: a training step and a `first_token` request are mostly the
decoder's matrix products, so their floor is the FLOPs over the rate measured here. Shapes:
[tokens x 576] @ [576 x N] for SmolLM2-135M's projections (N = 576 for q/o, 192 for k/v, 1536
for the MLP), at a training batch's tokens (480) and a batch-1 request's (80). Each product is
timed `--repeats` times after a warm-up; the median gives GFLOP/s. Prints a table and writes it
with the CPU's bfloat16 flags and the provenance record.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from llm4pr.data.jsonl import write_json
from llm4pr.model.precision import cpu_bf16_flags
from llm4pr.provenance import git_commit, provenance

HIDDEN = 576
OUTPUTS = (192, 576, 1536)  # k/v, q/o, MLP projections of SmolLM2-135M
TOKENS = (80, 480, 4096)  # a batch-1 request, a batch-8 training step, a large product (the peak)


def gflops(tokens: int, outputs: int, dtype: torch.dtype, repeats: int) -> float:
    x = torch.randn(tokens, HIDDEN, dtype=dtype)
    w = torch.randn(HIDDEN, outputs, dtype=dtype)
    for _ in range(3):
        x @ w
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        x @ w
        times.append(time.perf_counter() - started)
    return 2 * tokens * HIDDEN * outputs / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args()
    commit = git_commit()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    print(f"{'tokens':>6} {'N':>5} {'float32':>9} {'bfloat16':>9} {'ratio':>6}  (GFLOP/s, {torch.get_num_threads()} threads)")
    for tokens in TOKENS:
        for outputs in OUTPUTS:
            fp32 = gflops(tokens, outputs, torch.float32, args.repeats)
            bf16 = gflops(tokens, outputs, torch.bfloat16, args.repeats)
            rows.append({"tokens": tokens, "outputs": outputs, "float32_gflops": round(fp32, 1), "bfloat16_gflops": round(bf16, 1)})
            print(f"{tokens:>6} {outputs:>5} {fp32:>9.1f} {bf16:>9.1f} {bf16 / fp32:>6.2f}")
    record = {
        "hidden": HIDDEN,
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_flags": sorted(cpu_bf16_flags()),
        "products": rows,
        "wall_s": round(time.perf_counter() - started, 1),
        "provenance": provenance(commit),
    }
    if args.out:
        write_json(args.out, record)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
