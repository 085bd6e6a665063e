"""Does a model's ranking add anything to the order it was given, or to another system's scores?

    .venv/bin/python scripts/combine_with_order.py --checkpoint RUN_DIR --data VALID.jsonl --out FILE.json
    .venv/bin/python scripts/combine_with_order.py --checkpoint RUN_DIR --data VALID.jsonl --reference MF_RUN.jsonl

ranks the requests with the checkpoint (`first_token`), or reads `--run`, a run file that
`llm4pr rank --checkpoint RUN_DIR --mode first_token` wrote from the same requests.

For each weight w, every candidate's score becomes z(score) + w * r, where z is the model's
score standardised within the request and r the reference: by default -log2(position + 2) of
the candidate's place in the given (ranking-stage) order; with `--reference`, the standardised
score of another scored run over the same requests (a baseline's, `llm4pr rank --checkpoint
SAVED_BASELINE`). w = 0 is the model alone, a large w the reference with the model breaking no
ties. If no w beats both ends, the model knows nothing the reference does not already say.
Validation data only: this is a diagnostic, not a tuned ranker.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm4pr.baselines.base import descending_order
from llm4pr.data.jsonl import read_requests, read_run, write_json
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.evaluation.evaluate import evaluate_run
from llm4pr.provenance import git_commit, provenance
from llm4pr.rankers.ensemble import standardised

WEIGHTS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 1e6)


def standardised_scores(request: PostRankRequest, result: RankResult, what: str) -> np.ndarray:
    """A run's scores of the request's candidates, in the request's order, standardised within it."""
    z = standardised(request, result)
    if z is None:
        raise ValueError(f"request '{request.request_id}': the {what} has no scores (rank with --mode first_token)")
    return z


def mix_with_order(
    requests: Sequence[PostRankRequest], run: Sequence[RankResult], weight: float, reference: Sequence[RankResult] | None = None
) -> list[RankResult]:
    """The run re-ranked by z(model score) + weight * r: r = -log2(given position + 2), or the
    reference run's standardised scores."""
    by_id = {result.request_id: result for result in run}
    reference_by_id = {result.request_id: result for result in reference or ()}
    mixed = []
    for request in requests:
        z = standardised_scores(request, by_id[request.request_id], "run")
        if reference is None:
            prior = np.array([-math.log2(position + 2) for position in range(len(z))])
        else:
            prior = standardised_scores(request, reference_by_id[request.request_id], "reference run")
        order = descending_order(z + weight * prior)
        mixed.append(RankResult(request_id=request.request_id, ranking=[request.candidate_ids[i] for i in order]))
    return mixed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="an llm4pr checkpoint or training run folder")
    parser.add_argument("--run", type=Path, help="its first_token run file over --data, if already made (else rank now)")
    parser.add_argument("--data", required=True, type=Path, help="the labelled requests, candidates in the given order")
    parser.add_argument("--reference", type=Path, help="a scored run over --data to mix with instead of the given order (e.g. a baseline's)")
    parser.add_argument("--k", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--out", type=Path, help="write the table here (JSON)")
    args = parser.parse_args()
    commit, started = git_commit(), time.perf_counter()
    requests = read_requests(args.data)
    if args.run is not None:
        run = read_run(args.run)
    else:
        from llm4pr.inference.config import InferenceConfig
        from llm4pr.inference.ranker import LLM4PRRanker

        ranker = LLM4PRRanker.from_pretrained(args.checkpoint, InferenceConfig(mode="first_token", batch_size=16), progress=True)
        run = ranker.rank(requests)
    reference = read_run(args.reference) if args.reference is not None else None
    rows: list[dict[str, Any]] = []
    for weight in WEIGHTS:
        metrics = evaluate_run(requests, mix_with_order(requests, run, weight, reference), ks=args.k)["metrics"]
        rows.append({"reference_weight" if reference else "order_weight": weight, **metrics})
        print(f"w={weight:g}: " + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
    if args.out is not None:
        report = {"checkpoint": str(args.checkpoint), "run": str(args.run) if args.run else None, "data": str(args.data),
                  "reference": str(args.reference) if args.reference else None, "rows": rows, "wall_s": round(time.perf_counter() - started, 1)}
        write_json(args.out, {**report, "provenance": provenance(commit)})
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
