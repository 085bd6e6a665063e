"""This CPU's matrix-product rate in float32 and bfloat16, at the shapes the default backbone runs.

    .venv/bin/python scripts/bench_matmul.py --out benchmarks/results/speed/matmul-NAME.json

What a speed target can ask of a CPU: a training step and a `first_token` request are mostly the
decoder's matrix products, so their floor is the FLOPs over the rate measured here. Shapes:
[tokens x 576] @ [576 x N] for SmolLM2-135M's projections (N = 576 for q/o, 192 for k/v, 1536
for the MLP), at a training batch's tokens (480) and a batch-1 request's (80). Each product is
timed `--repeats` times after a warm-up; the median gives GFLOP/s. Then `model.dtype: auto`'s
own probe (`precision.probe_bf16_speedup`, what decides bfloat16 or float32 on this CPU) runs
`--probes` times: its speed-ups, their spread and the choice the rule makes of their median show
whether one probe decides reliably here. Prints a table and writes it with the CPU's bfloat16
flags and the provenance record.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from llm4pr.data.jsonl import write_json
from llm4pr.model.precision import MIN_BF16_SPEEDUP, cpu_bf16_flags, probe_bf16_speedup
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
    parser.add_argument("--probes", type=int, default=10, help="runs of the dtype probe")
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
    probe_times, speedups = [], []
    for _ in range(args.probes):
        probe_started = time.perf_counter()
        speedups.append(round(probe_bf16_speedup(), 3))
        probe_times.append(round(time.perf_counter() - probe_started, 3))
    median = statistics.median(speedups)
    choice = "bfloat16" if median >= MIN_BF16_SPEEDUP else "float32"
    print(f"dtype probe: bfloat16 at {min(speedups):.2f}-{max(speedups):.2f}x float32 (median {median:.2f}) -> {choice};"
          f" {statistics.median(probe_times):.2f} s a probe")
    record = {
        "hidden": HIDDEN,
        "torch_threads": torch.get_num_threads(),
        "cpu_bf16_flags": sorted(cpu_bf16_flags()),
        "products": rows,
        "dtype_probe": {"speedups": speedups, "median": median, "choice": choice, "rule": f"bfloat16 if >= {MIN_BF16_SPEEDUP}x",
                        "seconds": probe_times},
        "wall_s": round(time.perf_counter() - started, 1),
        "provenance": provenance(commit),
    }
    if args.out:
        write_json(args.out, record)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
