"""`llm4pr evaluate-adaptation`: how much of the features the LLM reads back from the soft tokens.

The paper's check of feature adaptation (MovieLens-1M: categorical features recovered 100%,
numerical 99.89%, rating accuracy 48.70%): after adaptation the LLM is given a user's and an
item's soft tokens and asked for the adaptation answer; what it writes is compared, feature by
feature, with what the schema's templates write for the true values. A feature counts as
recovered when its phrase for the true value appears in the right part of the answer; numerical
features also report the error of the number the answer gives in the template's place.
"""

from __future__ import annotations

import random
import re
import statistics
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec
from llm4pr.inference.report import publish_report
from llm4pr.model.factory import load_model
from llm4pr.model.llm4pr import LLM4PRModel, PromptInputs
from llm4pr.model.prompts import PromptBuilder, adaptation_answer, collate, split_adaptation_answer
from llm4pr.model.run_folder import STAGE_DIRS, resolve_checkpoint
from llm4pr.provenance import git_commit

NUMBER = r"(-?\d+(?:\.\d+)?)"


def phrase_found(spec: FeatureSpec, value: Any, text: str) -> bool:
    """Whether the feature's phrase for `value` appears in `text` as a whole phrase (so that
    "rated 6 times" is not found in "rated 61 times")."""
    return re.search(rf"(?<![\w.]){re.escape(spec.describe(value))}(?![\w]|\.\d)", text) is not None


def number_read(spec: FeatureSpec, text: str) -> float | None:
    """The number `text` gives where the feature's template puts its value, if the template's words are there."""
    pattern = ""
    for literal, field, _, _ in string.Formatter().parse(spec.description):
        pattern += re.escape(literal)
        if field == "name":
            pattern += re.escape(spec.name)
        elif field == "value":
            pattern += NUMBER
    match = re.search(pattern, text)
    return float(match.group(1)) if match and match.groups() else None


def read_back(schema: FeatureSchema, request: PostRankRequest, candidate: int, answer: str) -> dict[str, Any]:
    """What one generated answer got right: per feature ("owner.name") its true phrase, whether it
    was recovered and, for numerical features, the absolute error; and the rating the answer predicts."""
    parts = split_adaptation_answer(answer)
    item = request.candidates[candidate]
    features: dict[str, dict[str, Any]] = {}
    for owner, values in (("user", request.user.features), ("item", item.features)):
        for spec in schema.for_owner(owner):
            value = values.get(spec.name)
            if value is None or spec.kind is FeatureKind.embedding:
                continue  # not written in the answer either (FeatureSchema.describe)
            result: dict[str, Any] = {"phrase": spec.describe(value), "recovered": phrase_found(spec, value, parts[owner])}
            if spec.kind is FeatureKind.numerical:
                read = number_read(spec, parts[owner])
                result["abs_error"] = None if read is None else abs(read - float(value))
            features[f"{owner}.{spec.name}"] = result
    rating = re.match(NUMBER, parts["rating"])
    return {"features": features, "rating": None if rating is None else float(rating.group(1)), "label": item.label}


def summarise(schema: FeatureSchema, readings: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Recovery per feature and per kind (pooled over items), and the rating's accuracy; each beside
    what always answering the most common true value would score (a guess that reads nothing)."""
    kinds = {f"{spec.owner}.{spec.name}": spec.kind.value for spec in schema.features}
    per_feature: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(name for r in readings for name in r["features"]):
        results = [r["features"][name] for r in readings if name in r["features"]]
        entry: dict[str, Any] = {
            "kind": kinds[name],
            "n": len(results),
            "recovered": _share(x["recovered"] for x in results),
            "most_common_share": _most_common_share([x["phrase"] for x in results]),
        }
        if kinds[name] == FeatureKind.numerical.value:
            errors = [x["abs_error"] for x in results if x["abs_error"] is not None]
            entry["number_given"] = len(errors) / len(results)
            entry["mean_abs_error"] = statistics.fmean(errors) if errors else None
        per_feature[name] = entry
    by_kind: dict[str, float] = {}
    for kind in dict.fromkeys(entry["kind"] for entry in per_feature.values()):
        flags = [x["recovered"] for r in readings for name, x in r["features"].items() if kinds[name] == kind]
        by_kind[kind] = _share(flags)
    labels = [r["label"] for r in readings]
    predicted = [(r["rating"], r["label"]) for r in readings if r["rating"] is not None]
    return {
        "n_items": len(readings),
        "by_kind": by_kind,
        "features": per_feature,
        "rating": {
            "accuracy": sum(p == y for p, y in predicted) / len(readings) if readings else 0.0,
            "given": len(predicted) / len(readings) if readings else 0.0,
            "mean_abs_error": statistics.fmean(abs(p - y) for p, y in predicted) if predicted else None,
            "most_common_rating_accuracy": _most_common_share(labels),
        },
    }


def _share(flags: Any) -> float:
    flags = list(flags)
    return sum(bool(f) for f in flags) / len(flags) if flags else 0.0


def _most_common_share(values: Sequence[Any]) -> float:
    return Counter(values).most_common(1)[0][1] / len(values) if values else 0.0


@torch.inference_mode()
def generate_answers(
    model: LLM4PRModel, builder: PromptBuilder, pairs: Sequence[tuple[PostRankRequest, int]], max_new_tokens: int, batch_size: int = 16
) -> list[str]:
    """Greedy adaptation answers for (request, candidate index) pairs, from the soft tokens alone."""
    tokenizer = builder.tokenizer
    answers: list[str] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        batch = collate([builder.feature_adaptation(request.query) for request, _ in chunk], tokenizer.pad_token_id)
        inputs = [PromptInputs(query=r.query, user=r.user, item=r.candidates[c]) for r, c in chunk]
        generated = model.causal_lm.generate(
            inputs_embeds=model.inputs_embeds(batch, inputs),
            attention_mask=batch.attention_mask.to(model.device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        answers += tokenizer.batch_decode(generated, skip_special_tokens=True)  # inputs_embeds alone: new tokens only
    return answers


def evaluate_adaptation(
    model: LLM4PRModel, builder: PromptBuilder, requests: Sequence[PostRankRequest], n_items: int, seed: int = 0, batch_size: int = 16
) -> dict[str, Any]:
    """Read back one random candidate (with its user) from each of the first `n_items` requests."""
    rng = random.Random(seed)
    pairs = [(request, rng.randrange(len(request.candidates))) for request in requests[:n_items]]
    for request, candidate in pairs:
        if request.candidates[candidate].label is None:
            raise DataError(f"request {request.request_id}: candidate {request.candidates[candidate].id} has no label")
    truths = [adaptation_answer(model.schema, request.user, request.candidates[c]) for request, c in pairs]
    longest = max((len(builder.tokenizer(" " + t)["input_ids"]) for t in truths), default=0)
    answers = generate_answers(model, builder, pairs, max_new_tokens=longest + 8, batch_size=batch_size)
    report = summarise(model.schema, [read_back(model.schema, r, c, a) for (r, c), a in zip(pairs, answers, strict=True)])
    report["examples"] = [{"expected": t, "generated": a.strip()} for t, a in zip(truths[:3], answers[:3], strict=True)]
    return report


def evaluate_adaptation_command(
    checkpoint: Path,
    data: Path,
    items: int = 200,
    seed: int = 0,
    batch_size: int = 16,
    device: str = "cpu",
    out: Path | None = None,
) -> dict[str, Any]:
    """`llm4pr evaluate-adaptation`: load the adaptation stage of `checkpoint` (a checkpoint or a run
    folder), read `items` items of `data` back, print the table and write the report to `out`."""
    commit = git_commit()
    if items < 1:
        raise DataError(f"--items must be at least 1, got {items}")
    resolved = resolve_checkpoint(checkpoint, stage_dir=STAGE_DIRS["adaptation"])
    model, tokenizer = load_model(resolved, device=device)
    requests = read_requests(data, model.schema)
    if not requests:
        raise DataError(f"{data}: no requests to read back")
    report = evaluate_adaptation(model, PromptBuilder(tokenizer, model.config.identifiers), requests, items, seed, batch_size)
    report["checkpoint"] = str(resolved)
    return publish_report(report, commit, format_adaptation_report, out)


def format_adaptation_report(report: dict[str, Any]) -> str:
    lines = [
        f"feature adaptation read-back, {report['n_items']} items",
        "",
        "| feature | kind | recovered | always the most common value | mean abs error |",
        "|---|---|---|---|---|",
    ]
    for name, entry in report["features"].items():
        error = entry.get("mean_abs_error")
        lines.append(
            f"| {name} | {entry['kind']} | {entry['recovered']:.1%} | {entry['most_common_share']:.1%} | {'' if error is None else f'{error:.3g}'} |"
        )
    rating = report["rating"]
    lines += [
        "",
        "by kind: " + ", ".join(f"{kind} {share:.1%}" for kind, share in report["by_kind"].items()),
        f"rating: accuracy {rating['accuracy']:.1%} (always the most common rating: {rating['most_common_rating_accuracy']:.1%}),"
        f" given in {rating['given']:.1%} of answers",
    ]
    return "\n".join(lines)
