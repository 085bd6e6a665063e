"""Time one training step of each stage on the default backbone: all-position logits vs only the
answer positions (`logits_to_keep`). Prints seconds per step; run on a quiet machine.

    .venv/bin/python scripts/bench_train_step.py --data data/ml100k --steps 5
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch

from llm4pr.data.jsonl import read_requests
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.encoders import FeatureStats
from llm4pr.model.factory import add_lora, build_model
from llm4pr.model.config import ModelConfig
from llm4pr.model.prompts import PromptBuilder, collate
from llm4pr.training.examples import ExampleFactory
from llm4pr.training.losses import listwise_first_token_loss, next_token_loss
from llm4pr.training.trainer import batch_loss


def full_logits_loss(model, builder, examples, listwise_weight):  # type: ignore[no-untyped-def]
    batch = collate([e.prompt for e in examples], builder.tokenizer.pad_token_id)
    logits = model(batch, [e.inputs for e in examples]).logits
    listwise = listwise_first_token_loss(logits, batch.answer_start, builder.identifier_ids, [e.candidate_labels for e in examples])
    return next_token_loss(logits, batch.labels) + (listwise_weight * listwise if listwise is not None else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=Path("data/ml100k"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    schema = FeatureSchema.load(args.data / "schema.json")
    requests = read_requests(args.data / "train.jsonl", schema)[:400]
    config = ModelConfig()
    model, tokenizer = build_model(config, schema, FeatureStats.fit(schema, requests))
    builder = PromptBuilder(tokenizer, config.identifiers)
    factory = ExampleFactory(builder, schema, config.max_history, shuffle_candidates=True)
    rng = random.Random(0)
    batches = {
        "adaptation": [[factory.adaptation(r, 0) for r in rng.sample(requests, args.batch_size)] for _ in range(args.steps + 1)],
        "post_rank": [[factory.main(r, rng) for r in rng.sample(requests, args.batch_size)] for _ in range(args.steps + 1)],
    }
    for stage in ("adaptation", "post_rank"):
        if stage == "post_rank":
            add_lora(model, config.lora)
        model.train()
        for name, loss_fn in (("all positions", full_logits_loss), ("answer positions", batch_loss)):
            times = []
            for step, examples in enumerate(batches[stage]):
                started = time.perf_counter()
                loss_fn(model, builder, examples, 1.0).backward()
                model.zero_grad(set_to_none=True)
                if step:  # the first step warms up
                    times.append(time.perf_counter() - started)
            print(f"{stage:<10} {name:<17} {statistics.median(times):.2f} s/step (batch {args.batch_size}, torch threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
