"""Each ablation against the full model, in one table: what a part of LLM4PR is worth.

    .venv/bin/python scripts/ablation_table.py benchmarks/results/ml100k/results.json [--metric ndcg@3]

reads a benchmark's `results.json` (written by `llm4pr benchmark`) and prints a Markdown table:
one line per ablation row ("... w/o X", with its "(first_token)" twin), one column per protocol
and inference mode, each cell the ablation minus the full model of the same mode ("LLM4PR" or
"LLM4PR (first_token)", which the config must list in `paired_with`), with its 95% bootstrap
interval over requests. The paired tables of `results.md` hold the same figures, spread over one
table per reference; this gathers them so that a part's effect reads in one line.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FULL_MODEL = {"generate": "LLM4PR", "first_token": "LLM4PR (first_token)"}
TWIN_SUFFIX = " (first_token)"
ABLATION_PREFIX = "LLM4PR w/o "


def ablation_cells(results: dict[str, Any], metric: str) -> dict[tuple[str, str, str], str]:
    """(part, protocol, mode) -> "difference [low, high]" for every ablation paired with its full model."""
    cells: dict[tuple[str, str, str], str] = {}
    for protocol, tables in results["paired"].items():
        for table in tables:
            mode = next((m for m, name in FULL_MODEL.items() if name == table["reference"]), None)
            if mode is None:
                continue
            for row in table["rows"]:
                name = row["row"]
                if not name.startswith(ABLATION_PREFIX) or name.endswith(TWIN_SUFFIX) != (mode == "first_token"):
                    continue
                if metric not in row:
                    known = ", ".join(key for key in row if key != "row")
                    raise SystemExit(f"error: --metric {metric!r} is not paired in this results.json (paired: {known})")
                value = row[metric]
                part = name.removeprefix(ABLATION_PREFIX).removesuffix(TWIN_SUFFIX)
                cells[(part, protocol, mode)] = f"{value['mean']:+.4f} [{value['low']:+.4f}, {value['high']:+.4f}]"
    return cells


def seed_counts(results: dict[str, Any]) -> dict[tuple[str, str], int]:
    """(part, protocol) -> how many seeds the ablation's `generate` row has."""
    return {
        (row["row"].removeprefix(ABLATION_PREFIX), row["protocol"]): len(row["seeds"])
        for row in results["rows"]
        if row["row"].startswith(ABLATION_PREFIX) and not row["row"].endswith(TWIN_SUFFIX)
    }


def ablation_table(results: dict[str, Any], metric: str = "ndcg@3") -> str:
    cells = ablation_cells(results, metric)
    if not cells:
        raise SystemExit(f"error: no ablation row is paired with {' or '.join(FULL_MODEL.values())} in this results.json")
    protocols = list(results["paired"])
    seeds = seed_counts(results)
    columns = [(protocol, mode) for protocol in protocols for mode in FULL_MODEL if any(key[1:] == (protocol, mode) for key in cells)]
    lines = [
        "| without | " + " | ".join(f"{protocol}, `{mode}`" for protocol, mode in columns) + " | seeds |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for part in sorted({key[0] for key in cells}):
        counts = "/".join(str(seeds.get((part, protocol), 0)) for protocol in protocols)
        lines.append(f"| {part} | " + " | ".join(cells.get((part, protocol, mode), "-") for protocol, mode in columns) + f" | {counts} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="a benchmark's results.json")
    parser.add_argument("--metric", default="ndcg@3", help="a paired metric of the benchmark (default ndcg@3)")
    args = parser.parse_args(argv)
    print(ablation_table(json.loads(args.results.read_text()), args.metric))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
