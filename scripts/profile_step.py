"""Profile one training step of each stage on the default backbone: where the time goes, op by op.

    .venv/bin/python scripts/profile_step.py --data data/ml100k --out benchmarks/results/profile/NAME.json

Builds the default model (`ModelConfig()`, or `--set`-style JSON overrides of it), takes batches of
real training requests, runs warm-up steps, then one profiled forward + backward per stage
(adaptation; post-rank with LoRA) and prints torch.profiler's table of the top ops by self CPU
time. The JSON file holds the tables, the step times and the provenance record (CPU model,
commit, library versions, threads), so that before/after profiles can be compared on one machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from llm4pr.provenance import git_commit, provenance
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.encoders import FeatureStats
from llm4pr.model.factory import add_lora, build_model
from llm4pr.model.config import ModelConfig
from llm4pr.model.prompts import PromptBuilder
from llm4pr.training.examples import ExampleFactory
from llm4pr.training.trainer import batch_loss


def top_ops(prof: Any, limit: int) -> list[dict[str, Any]]:
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {"op": e.key, "self_ms": round(e.self_cpu_time_total / 1000, 1), "self_share": round(e.self_cpu_time_total / total, 4), "calls": e.count}
        for e in events[:limit]
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/ml100k"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="unprofiled steps per stage, timed")
    parser.add_argument("--model", default="{}", help="JSON overrides of ModelConfig, e.g. '{\"candidate_prior\": true}'")
    parser.add_argument("--rows", type=int, default=15, help="ops per table")
    parser.add_argument("--out", type=Path, help="write the tables and timings here (JSON)")
    args = parser.parse_args()
    commit = git_commit()
    torch.manual_seed(0)
    schema = FeatureSchema.load(args.data / "schema.json")
    requests = read_requests(args.data / "train.jsonl", schema)[:400]
    config = ModelConfig.model_validate(json.loads(args.model))
    model, tokenizer = build_model(config, schema, FeatureStats.fit(schema, requests))
    builder = PromptBuilder(tokenizer, config.identifiers)
    factory = ExampleFactory(builder, schema, config.max_history, shuffle_candidates=True)
    rng = random.Random(0)
    record: dict[str, Any] = {"command": "scripts/profile_step.py", "args": {k: str(v) for k, v in vars(args).items()}, "stages": {}}
    for stage in ("adaptation", "post_rank"):
        if stage == "post_rank":
            add_lora(model, config.lora)
        model.train()
        make = (lambda r: factory.adaptation(r, 0)) if stage == "adaptation" else (lambda r: factory.main(r, rng))
        batches = [[make(r) for r in rng.sample(requests, args.batch_size)] for _ in range(args.warmup + 1)]
        times = []
        for examples in batches[:-1]:
            started = time.perf_counter()
            batch_loss(model, builder, examples, 1.0).backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - started)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            batch_loss(model, builder, batches[-1], 1.0).backward()
            profiled = time.perf_counter() - started
        model.zero_grad(set_to_none=True)
        tokens = sum(len(e.prompt.input_ids) for e in batches[-1])
        record["stages"][stage] = {
            "warmup_s": [round(t, 3) for t in times],
            "median_warmup_s": round(statistics.median(times[1:] or times), 3),
            "profiled_step_s": round(profiled, 3),
            "tokens": tokens,
            "top_ops": top_ops(prof, args.rows),
        }
        print(f"== {stage}: {profiled:.2f} s profiled step ({tokens} tokens, batch {args.batch_size}, {torch.get_num_threads()} threads)")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    record["provenance"] = provenance(commit)
    if args.out:
        write_json(args.out, record)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
