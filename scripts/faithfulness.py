"""Are a ranker's explanations faithful? Mask each candidate's highest- and lowest-attributed field.

    .venv/bin/python scripts/faithfulness.py --checkpoint DIR --data VALID.jsonl [--requests N] --out FILE.json

DIR is an llm4pr checkpoint (or run folder) or a saved baseline (`llm4pr fit-baseline`). For each
attribution the ranker serves (LLM4PR: `qia_attention`; LambdaMART: `lightgbm_contributions`) and,
unless `--no-occlusion`, for occlusion (LLM4PR), every candidate's top and bottom item field is set
to missing in turn and the candidate rescored (first_token). The report gives per method the mean
absolute score change of each and the share of candidates where the top field moved the score more
(`llm4pr.rankers.faithfulness`). Labelled validation data, so that the requests are the ones
the model is judged on; the labels themselves are not read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from llm4pr.data.jsonl import read_requests, write_json
from llm4pr.inference.config import InferenceConfig
from llm4pr.loading import load_ranker
from llm4pr.provenance import git_commit, provenance
from llm4pr.rankers.faithfulness import FAITHFULNESS_MODE, faithfulness


def run(checkpoint: Path, data: Path, out: Path, requests: int | None = None, occlusion: bool = True, batch_size: int = 8) -> dict[str, Any]:
    """Load the ranker, check the first `requests` requests of `data`, write the report to `out`."""
    commit, started = git_commit(), time.perf_counter()
    ranker = load_ranker(checkpoint, InferenceConfig(mode=FAITHFULNESS_MODE, batch_size=batch_size))
    loaded = read_requests(data, ranker.schema)
    chosen = loaded[:requests] if requests is not None else loaded
    methods = faithfulness(ranker, chosen, occlusion=occlusion)
    report = {
        "checkpoint": str(checkpoint), "data": str(data), "requests": len(chosen), "ranker": ranker.name, "occlusion": occlusion,
        "methods": methods, "wall_s": round(time.perf_counter() - started, 1), "provenance": provenance(commit),
    }
    write_json(out, report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="an llm4pr checkpoint or run folder, or a saved baseline")
    parser.add_argument("--data", required=True, type=Path, help="labelled requests (JSON lines), e.g. valid.jsonl")
    parser.add_argument("--requests", type=int, help="check only the first N requests")
    parser.add_argument("--out", required=True, type=Path, help="the report (JSON)")
    parser.add_argument("--no-occlusion", action="store_true", help="skip the occlusion attribution (one extra pass per field)")
    parser.add_argument("--batch-size", type=int, default=8, help="requests per model call")
    args = parser.parse_args()
    report = run(args.checkpoint, args.data, args.out, args.requests, not args.no_occlusion, args.batch_size)
    for method, entry in report["methods"].items():
        print(f"{method}: {entry}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
