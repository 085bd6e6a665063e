"""The benchmark's results: row summaries over seeds, request-by-request paired comparisons, and
the Markdown table and plot written next to results.json. Reads row results, trains nothing."""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from llm4pr.benchmarks.config import RowConfig
from llm4pr.evaluation.significance import CONFIDENCE, RESAMPLES, paired_bootstrap


def summarise_row(
    protocol: str, row: RowConfig, seeds: list[dict[str, Any]], metrics: tuple[str, ...], fewer_seeds: bool
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "row": row.name,
        "protocol": protocol,
        "signals": row.signals,
        "kind": "baseline" if row.baseline else "llm",
        "seeds": [s["seed"] for s in seeds],
        "runs": sum("same_as_seed" not in s for s in seeds),  # < len(seeds) for rows that train nothing
        "fewer_seeds": fewer_seeds,  # a costly row run on some of the benchmark's seeds
        "per_seed": {str(s["seed"]): s["metrics"] for s in seeds},
        "mean": {},
        "std": {},
        "train_s_mean": round(statistics.fmean(s["train_s"] for s in seeds), 1),
        "wall_s_total": round(sum(s.get("wall_s", 0.0) for s in seeds), 1),
        "wall_s_unrecorded": sum("wall_s" not in s for s in seeds),  # row files written before wall_s existed
    }
    for metric in metrics:
        values = [s["metrics"][metric] for s in seeds if s["metrics"].get(metric) is not None]
        summary["mean"][metric] = round(statistics.fmean(values), 4) if values else None
        summary["std"][metric] = round(statistics.stdev(values), 4) if len(values) > 1 else 0.0
    for key in ("mean_input_tokens", "latency_p50_ms"):
        values = [s[key] for s in seeds if key in s]
        if values:
            summary[key] = round(statistics.fmean(values), 2)
    return summary


def restricted_to(seed: dict[str, Any], positions: list[int], digest: str, metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """A row file's result on a subset of its test requests (`positions` in the test file's order;
    `digest` names the subset): its per-request values there, and their means as its metrics.
    None when the file kept no per-request values."""
    kept = seed.get("per_request")
    if kept is None or any(metric not in kept for metric in metrics):
        return None
    subset = {metric: [kept[metric][i] for i in positions] for metric in metrics}
    means = {metric: (round(statistics.fmean(v), 4) if (v := [x for x in values if x is not None]) else None) for metric, values in subset.items()}
    return {**seed, "metrics": means, "per_request": {"requests": digest, **subset}}


def _seed_mean_per_request(seeds: list[dict[str, Any]], metrics: tuple[str, ...]) -> dict[str, Any] | None:
    """A row's per-request values averaged over its seeds; None when a seed's file has none (written
    before they were kept) or the seeds saw different requests."""
    kept = [seed.get("per_request") for seed in seeds]
    if any(k is None or any(m not in k for m in metrics) for k in kept) or len({k["requests"] for k in kept}) != 1:  # type: ignore[index]
        return None
    means: dict[str, Any] = {"requests": kept[0]["requests"]}  # type: ignore[index]
    for metric in metrics:
        columns = zip(*(k[metric] for k in kept))  # type: ignore[index]
        means[metric] = [None if None in values else statistics.fmean(values) for values in columns]
    return means


def paired_comparisons(
    summarised: list[tuple[dict[str, Any], list[dict[str, Any]]]], metrics: tuple[str, ...], named: list[str]
) -> list[dict[str, Any]]:
    """Every row with per-request values paired with the best baseline that has them (by the first
    metric's mean), then with each `named` row that has them."""
    scored = [(summary, values) for summary, seeds in summarised if (values := _seed_mean_per_request(seeds, metrics))]
    baselines = [(summary, values) for summary, values in scored if summary["kind"] == "baseline"]
    references = [max(baselines, key=lambda pair: _or_lowest(pair[0]["mean"][metrics[0]]))] if baselines else []
    for name in named:
        match = next((pair for pair in scored if pair[0]["row"] == name), None)
        if match is not None and all(match[0] is not reference[0] for reference in references):
            references.append(match)
    return [
        _paired_with(reference, scored, metrics, best_baseline=bool(baselines) and index == 0)
        for index, reference in enumerate(references)
    ]


def _paired_with(
    reference: tuple[dict[str, Any], dict[str, Any]], scored: list[tuple[dict[str, Any], dict[str, Any]]], metrics: tuple[str, ...], best_baseline: bool
) -> dict[str, Any]:
    """Each other row minus `reference`, request by request: the mean difference and its interval."""
    summary_of_reference, reference_values = reference
    compared = []
    for summary, values in scored:
        if summary is summary_of_reference or values["requests"] != reference_values["requests"]:
            continue
        compared.append({"row": summary["row"], **{m: paired_bootstrap(values[m], reference_values[m]).as_dict() for m in metrics}})
    return {
        "reference": summary_of_reference["row"],
        "best_baseline": best_baseline,
        "metrics": list(metrics),
        "resamples": RESAMPLES,
        "confidence": CONFIDENCE,
        "rows": compared,
    }


def _or_lowest(value: float | None) -> float:
    return -math.inf if value is None else value


def results_markdown(results: dict[str, Any]) -> str:
    metrics = _tabled(results["rows"])
    lines = []
    if results.get("pending"):
        runs = sum(len(r["seeds"]) for r in results["rows"])
        lines += [f"**Incomplete:** {runs} runs done, {len(results['pending'])} pending (listed in results.json).", ""]
    for protocol in dict.fromkeys(r["protocol"] for r in results["rows"]):
        lines += [f"### Candidate order: {protocol}", ""]
        lines.append("| row | signals | " + " | ".join(metrics) + " | input tokens | p50 ms | train s | seeds |")
        lines.append("|---|---|" + "---|" * len(metrics) + "---|---|---|---|")
        for row in (r for r in results["rows"] if r["protocol"] == protocol):
            cells = [
                f"{row['mean'][m]:.4f} ± {row['std'][m]:.4f}" if row["mean"][m] is not None else "n/a" for m in metrics
            ]
            tokens = f"{row['mean_input_tokens']:.0f}" if "mean_input_tokens" in row else ""
            latency = f"{row['latency_p50_ms']:.0f}" if "latency_p50_ms" in row else ""
            lines.append(
                f"| {row['row']} | {'yes' if row['signals'] else 'no'} | " + " | ".join(cells)
                + f" | {tokens} | {latency} | {row['train_s_mean']:.0f} | {_seeds_cell(row)} |"
            )
        lines.append("")
        for comparison in results.get("paired", {}).get(protocol, []):
            lines += _paired_table(comparison)
    lines += [
        "Mean ± sample standard deviation (n - 1) over the seeds. A deterministic row (the heuristics,"
        " LightGBM's LambdaMART without bagging) gives the same model for every seed: its std is 0.",
        "",
    ]
    if any(_one_run_for_all_seeds(row) for row in results["rows"]):
        lines += ["\\* trains nothing, so one run serves every seed (its ranking does not depend on the seed).", ""]
    if any(row.get("fewer_seeds") for row in results["rows"]):
        seeds = results["config"]["seeds"]
        lines += [f"† runs fewer seeds than the benchmark's {len(seeds)} (the row's `seeds` in the config): a costly row.", ""]
    lines += [_cost_line(results["rows"]), ""]
    for name, subset in results.get("subsets", {}).items():
        lines += _subset_section(name, subset)
    return "\n".join(lines)


def _subset_section(name: str, subset: dict[str, Any]) -> list[str]:
    """One subset's table (its metrics per row, mean ± std over seeds) and its paired comparisons."""
    lines = [f"## Subset: {name}", "", f"{subset['description']}: {subset['requests']} test requests.", ""]
    metrics = _tabled(subset["rows"])
    for protocol in dict.fromkeys(r["protocol"] for r in subset["rows"]):
        lines += [f"### Candidate order: {protocol}", "", "| row | " + " | ".join(metrics) + " | seeds |", "|---|" + "---|" * len(metrics) + "---|"]
        for row in (r for r in subset["rows"] if r["protocol"] == protocol):
            cells = [f"{row['mean'][m]:.4f} ± {row['std'][m]:.4f}" if row["mean"][m] is not None else "n/a" for m in metrics]
            lines.append(f"| {row['row']} | " + " | ".join(cells) + f" | {_seeds_cell(row)} |")
        lines.append("")
        for comparison in subset["paired"].get(protocol, []):
            lines += _paired_table(comparison)
    return lines


def _paired_table(paired: dict[str, Any]) -> list[str]:
    """Rows against one reference row, request by request (nothing when no other row kept its values)."""
    if not paired["rows"]:
        return []
    metrics, n = paired["metrics"], paired["rows"][0][paired["metrics"][0]]["n"]
    reference = f"the best baseline, {paired['reference']}" if paired["best_baseline"] else paired["reference"]
    lines = [
        f"Paired with {reference}, request by request (each row's seeds averaged per"
        f" request): the mean difference and its {paired['confidence']:.0%} bootstrap interval over the {n} test"
        f" requests ({paired['resamples']} resamples). Rows whose files predate per-request values are not listed.",
        "",
        "| row | " + " | ".join(f"Δ {m}" for m in metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for row in paired["rows"]:
        cells = [f"{row[m]['mean']:+.4f} [{row[m]['low']:+.4f}, {row[m]['high']:+.4f}]" for m in metrics]
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _tabled(rows: list[dict[str, Any]]) -> list[str]:
    """The metric columns, as the summaries hold them (the config's `metrics_at`, metric by metric)."""
    return list(rows[0]["mean"]) if rows else []


def _cost_line(rows: list[dict[str, Any]]) -> str:
    """The benchmark's total cost, as its row files recorded it."""
    training = sum(row["train_s_mean"] * row.get("runs", len(row["seeds"])) for row in rows) / 3600
    wall = sum(row.get("wall_s_total", 0.0) for row in rows) / 3600
    unrecorded = sum(row.get("wall_s_unrecorded", len(row["seeds"])) for row in rows)
    runs = sum(len(row["seeds"]) for row in rows)
    return (
        f"Cost: {training:.1f} h of training summed over the runs (a row that shares another row's training run, as"
        f" `first_token` does, counts it again); {wall:.1f} h of wall time for the {runs - unrecorded} of {runs} runs"
        " that record it (fit, rank, latency probe). Each row file's provenance names its machine."
    )


def _one_run_for_all_seeds(row: dict[str, Any]) -> bool:
    return row.get("runs", len(row["seeds"])) < len(row["seeds"])


def _seeds_cell(row: dict[str, Any]) -> str:
    return f"{len(row['seeds'])}{'*' if _one_run_for_all_seeds(row) else ''}{'†' if row.get('fewer_seeds') else ''}"


def plot_results(results: dict[str, Any], path: Path) -> None:
    """The first tabled metric (NDCG at the first cutoff) per row (mean, with the spread over seeds),
    one panel per protocol, one shared axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(dict.fromkeys(r["protocol"] for r in results["rows"]))
    rows_per_panel = max(sum(r["protocol"] == p for r in results["rows"]) for p in protocols)
    fig, axes = plt.subplots(1, len(protocols), figsize=(7 * len(protocols), 0.45 * max(rows_per_panel, 4) + 1.8), squeeze=False, sharex=True)
    metric = _tabled(results["rows"])[0]
    scored = [r for r in results["rows"] if r["mean"][metric] is not None]
    means = [r["mean"][metric] for r in scored]
    for ax, protocol in zip(axes[0], protocols, strict=True):
        rows = [r for r in scored if r["protocol"] == protocol]
        ax.barh(
            [r["row"] + (" *" if r["signals"] else "") for r in rows],
            [r["mean"][metric] for r in rows],
            xerr=[r["std"][metric] for r in rows],
            color=["tab:orange" if r["kind"] == "llm" else "tab:blue" for r in rows],
        )
        ax.invert_yaxis()
        ax.set_xlabel(f"{metric.upper()} on the test split (mean over seeds)")
        ax.set_title(f"candidate order: {protocol}")
    if means:
        axes[0][0].set_xlim(max(min(means) - 0.02, 0.0), min(max(means) + 0.02, 1.0))
    fig.suptitle("* uses the ranking-stage signals; orange: LLM rows; bars: spread over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
