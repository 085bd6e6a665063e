"""Time training steps of both stages on the default backbone, and report peak memory.

    .venv/bin/python scripts/bench_train_step.py --data data/ml100k --out /tmp/step.json
    .venv/bin/python scripts/bench_train_step.py --model '{"dtype": "float32"}'
    .venv/bin/python scripts/bench_train_step.py --data data/semanlink --model '{"prompt_style": "text", ...}' \
        --stages post_rank --auxiliary-ratio 0.25

Builds the model from `ModelConfig` (defaults, or JSON overrides of it), takes fixed batches of
real training requests (the same for every run with the same seed), and times `--warmup` + `--steps`
forward-backward passes of feature adaptation, then of the post-rank task with LoRA (main-task
examples, and with `--auxiliary-ratio` that share of auxiliary ones, as training mixes them); in
length groups where the ref's trainer has them (`length_groups`); prints the
median seconds per step and the process's peak resident memory. `scripts/compare_train_step.sh`
runs it on the code of two git refs, back to back. It runs on code from before `ModelConfig`
moved to `llm4pr.model.config`, so that older refs can be measured too.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch

import llm4pr
from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.encoders import FeatureStats
from llm4pr.model.factory import add_lora, build_model
from llm4pr.model.prompts import PromptBuilder
from llm4pr.provenance import git_commit, provenance
from llm4pr.training.examples import ExampleFactory
from llm4pr.training.trainer import batch_loss

try:
    from llm4pr.training.trainer import LossTotals, length_groups
except ImportError:  # refs before length groups: the batch is one padded group
    LossTotals = None  # type: ignore[assignment,misc]

try:
    from llm4pr.model.config import ModelConfig
except ImportError:  # refs before 1ec8abf
    from llm4pr.model.llm4pr import ModelConfig  # type: ignore[attr-defined,no-redef]


def cpu_bf16_flags() -> frozenset[str]:
    try:
        from llm4pr.model.precision import cpu_bf16_flags as flags
    except ImportError:  # refs before mixed precision
        return frozenset()
    return flags()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("data/ml100k"))
    parser.add_argument("--steps", type=int, default=6, help="timed steps per stage")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per stage first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model", default="{}", help="JSON overrides of ModelConfig, e.g. '{\"dtype\": \"float32\"}'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stages", nargs="+", choices=["adaptation", "post_rank"], default=["adaptation", "post_rank"])
    parser.add_argument("--auxiliary-ratio", type=float, default=0.0, help="share of post-rank examples that are auxiliary-task ones")
    parser.add_argument("--out", type=Path, help="write the figures here (JSON)")
    args = parser.parse_args()
    commit = git_commit(Path(llm4pr.__file__).parents[2])  # the tree whose code runs
    started = time.perf_counter()
    torch.manual_seed(args.seed)
    schema = FeatureSchema.load(args.data / "schema.json")
    requests = read_requests(args.data / "train.jsonl", schema)[:400]
    config = ModelConfig.model_validate(json.loads(args.model))
    model, tokenizer = build_model(config, schema, FeatureStats.fit(schema, requests))
    backbone_dtype = str(next(model.backbone.parameters()).dtype).removeprefix("torch.")
    attention = getattr(model.backbone.config, "_attn_implementation", None)
    builder = PromptBuilder(tokenizer, config.identifiers)
    factory = ExampleFactory(builder, schema, config.max_history, shuffle_candidates=True, prompt_style=config.prompt_style)
    rng = random.Random(args.seed)
    record: dict[str, Any] = {
        "code": str(Path(llm4pr.__file__).parent),
        "model_overrides": json.loads(args.model),
        "cpu_bf16_flags": sorted(cpu_bf16_flags()),
        "backbone_dtype": backbone_dtype,
        "attention": attention,
        "batch_size": args.batch_size,
        "auxiliary_ratio": args.auxiliary_ratio,
        "torch_threads": torch.get_num_threads(),
        "stages": {},
    }
    def post_rank_example(request: Any) -> Any:
        auxiliary = factory.auxiliary(request, rng) if rng.random() < args.auxiliary_ratio else None
        return auxiliary or factory.main(request, rng)

    for stage in args.stages:
        if stage == "post_rank":
            add_lora(model, config.lora)
        model.train()
        make = (lambda r: factory.adaptation(r, 0)) if stage == "adaptation" else post_rank_example
        batches = [[make(r) for r in rng.sample(requests, args.batch_size)] for _ in range(args.warmup + args.steps)]
        times = []
        for examples in batches:
            step_started = time.perf_counter()
            if LossTotals is None:
                batch_loss(model, builder, examples, 1.0).backward()
            else:
                totals = LossTotals.of(examples)  # the whole batch's, as the trainer averages every group's loss
                for group in length_groups(examples):
                    batch_loss(model, builder, group, 1.0, totals).backward()
            model.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - step_started)
        timed = times[args.warmup :]
        tokens = statistics.mean(sum(len(e.prompt.input_ids) for e in b) for b in batches)
        padded = statistics.mean(len(b) * max(len(e.prompt.input_ids) for e in b) for b in batches)
        record["stages"][stage] = {
            "median_s": round(statistics.median(timed), 3),
            "min_s": round(min(timed), 3),
            "steps_s": [round(t, 3) for t in timed],
            "mean_tokens_per_step": round(tokens, 1),
            "mean_tokens_padded_as_one_batch": round(padded, 1),
        }
        print(f"{stage:<10} {statistics.median(timed):.3f} s/step median (min {min(timed):.3f}; batch {args.batch_size}, "
              f"{tokens:.0f} tokens, backbone {backbone_dtype}, {attention} attention, {torch.get_num_threads()} threads)", flush=True)
    record["peak_rss_mb"] = round(peak_rss_mb())
    record["wall_s"] = round(time.perf_counter() - started, 1)
    record["provenance"] = provenance(commit)
    print(f"peak resident memory {record['peak_rss_mb']} MB")
    if args.out:
        write_json(args.out, record)
        print(f"written: {args.out}")


if __name__ == "__main__":
    main()
