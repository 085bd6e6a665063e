"""The `llm4pr` command line: prepare data, train, fit baselines, rank, evaluate, serve, demo.

Each subcommand is a thin layer over a library function: a small builder (`_add_rank`) declares
its flags, next to the handler (`_rank`) that calls the library. Bad input ends with one clear
`error: ...` line on stderr and exit status 2, never a traceback; heavy modules (torch,
transformers) are imported only by the subcommands that need them. The inference flags of `rank`,
`evaluate`, `serve` and `bench-latency` make one validated `InferenceConfig`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TypeAlias, get_args

from pydantic import ValidationError

from llm4pr.data.errors import DataError, format_validation_error
from llm4pr.inference.config import InferenceConfig, Quantization
from llm4pr.model.config import Dtype
from llm4pr.rankers.base import MODES, SERVED_MODES

EXIT_BAD_INPUT = 2
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
INFERENCE_DEFAULTS = InferenceConfig()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_library_progress_bars()
    try:
        return int(args.handler(args) or 0)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _quiet_library_progress_bars() -> None:
    """Keep the terminal for our own progress bars (transformers draws one per weight load) and
    drop a deprecation warning that peft triggers inside transformers on every LoRA load."""
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    try:
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    transformers_logging.disable_progress_bar()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llm4pr", description="LLM4PR post-ranking: data, training, ranking, evaluation.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data(commands)
    _add_evaluate(commands)
    _add_evaluate_adaptation(commands)
    _add_train(commands)
    _add_fit_baseline(commands)
    _add_rank(commands)
    _add_explain(commands)
    _add_serve(commands)
    _add_bench_latency(commands)
    _add_benchmark(commands)
    _add_study(commands)
    _add_demo(commands)
    return parser


# --- llm4pr data prepare DATASET ----------------------------------------------------------------


def _add_data(commands: Commands) -> None:
    data = commands.add_parser("data", help="prepare datasets in the request format")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    prepare = data_commands.add_parser("prepare", help="convert a dataset into train/valid/test requests")
    datasets = prepare.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    _add_prepare_movielens(datasets)
    _add_prepare_kuaisar(datasets)
    _add_prepare_beir(datasets)
    _add_prepare_letor(datasets)
    _add_prepare_semanlink(datasets)
    _add_collaborative(data_commands)


def _add_collaborative(data_commands: Commands) -> None:
    collaborative = data_commands.add_parser(
        "collaborative", help="add matrix-factorisation features (out-of-fold on training requests) to a prepared folder"
    )
    collaborative.add_argument("--data", required=True, type=Path, help="a prepared data folder (schema.json, train.jsonl, ...)")
    collaborative.add_argument("--out", required=True, type=Path, help="the new folder: the same requests with the features")
    collaborative.add_argument("--vectors", action="store_true", help="also the user and item factors as embedding features")
    collaborative.add_argument("--folds", type=int, default=5, help="folds over the training requests (default 5)")
    collaborative.add_argument("--seed", type=int, default=0, help="seed of the fold assignment and the fits")
    collaborative.add_argument("--factors", type=int, help="the model's factors, the vectors' size (default: the mf baseline's, 200)")
    collaborative.add_argument("--epochs", type=int, help="SGD epochs (default: the mf baseline's, 80)")
    collaborative.set_defaults(handler=_collaborative)


def _collaborative(args: argparse.Namespace) -> int:
    from llm4pr.baselines.collaborative_field import add_collaborative_field

    mf_params = {name: value for name, value in (("factors", args.factors), ("epochs", args.epochs)) if value is not None}
    report = add_collaborative_field(args.data, args.out, folds=args.folds, seed=args.seed, vectors=args.vectors, **mf_params)
    requests = ", ".join(f"{split} {n} requests" for split, n in report["requests"].items())
    print(f"wrote {args.out}: {requests}; features {', '.join(report['features'])} ({report['wall_s']} s)")
    return 0


def _add_prepare_movielens(datasets: Commands) -> None:
    movielens = datasets.add_parser("movielens", help="MovieLens 100K/1M (the paper's protocol)")
    movielens.add_argument("--source", required=True, help="'recbole' (ML-100K from the recbole wheel) or a folder")
    movielens.add_argument("--out", required=True, type=Path, help="output folder")
    movielens.add_argument("--seed", type=int, default=0, help="seed for pseudo-queries")
    movielens.add_argument("--history-length", type=int, default=10)
    movielens.add_argument("--segment-length", type=int, default=5)
    movielens.add_argument(
        "--prior-weight", type=float, default=0.0,
        help="shrink the as-of average ratings toward the global mean with this many pseudo-ratings (0: none)",
    )
    movielens.add_argument(
        "--cold-items", type=float, default=0.0, metavar="FRACTION",
        help="cold-start protocol: hold this fraction of items out of training, statistics and histories (e.g. 0.2)",
    )
    movielens.add_argument("--cold-seed", type=int, default=0, help="seed of the cold items' draw")
    movielens.set_defaults(handler=_prepare_movielens)


def _prepare_movielens(args: argparse.Namespace) -> int:
    from llm4pr.data.movielens import prepare_movielens

    report = prepare_movielens(
        args.source, args.out, seed=args.seed, history_length=args.history_length,
        segment_length=args.segment_length, prior_weight=args.prior_weight, cold_items=args.cold_items, cold_seed=args.cold_seed,
    )
    _print_prepare_report(args.out, report)
    print(f"{report['counts']['users']} users, {report['counts']['items']} items, {report['counts']['interactions']} interactions")
    return 0


def _add_prepare_kuaisar(datasets: Commands) -> None:
    kuaisar = datasets.add_parser("kuaisar", help="KuaiSAR search sessions (docs/datasets.md)")
    kuaisar.add_argument("--source", required=True, help="the release folder, or a URL of its zip")
    kuaisar.add_argument("--out", required=True, type=Path)
    kuaisar.add_argument("--label", choices=["clicks", "binary"], default="clicks")
    kuaisar.add_argument("--drop-unclicked", action="store_true", help="drop sessions without a click")
    kuaisar.add_argument("--test-days", type=float, default=1.0)
    kuaisar.add_argument("--valid-days", type=float, default=1.0)
    kuaisar.add_argument("--history-length", type=int, default=10)
    _add_converter_arguments(kuaisar)
    kuaisar.set_defaults(handler=_prepare_kuaisar)


def _prepare_kuaisar(args: argparse.Namespace) -> int:
    from llm4pr.data.kuaisar import prepare_kuaisar

    report = prepare_kuaisar(
        args.source, args.out, label=args.label, drop_unclicked=args.drop_unclicked, test_days=args.test_days,
        valid_days=args.valid_days, history_length=args.history_length, **_converter_options(args),
    )
    _print_prepare_report(args.out, report)
    return 0


def _add_prepare_beir(datasets: Commands) -> None:
    beir = datasets.add_parser("beir", help="a BEIR folder plus a first-stage TREC run (docs/datasets.md)")
    beir.add_argument("--source", required=True, help="folder with corpus.jsonl, queries.jsonl, qrels/")
    beir.add_argument("--run", required=True, type=Path, help="TREC run file of the first stage (e.g. BM25 top-100)")
    beir.add_argument("--out", required=True, type=Path)
    _add_converter_arguments(beir)
    beir.set_defaults(handler=_prepare_beir)


def _prepare_beir(args: argparse.Namespace) -> int:
    from llm4pr.data.beir import prepare_beir

    _print_prepare_report(args.out, prepare_beir(args.source, args.run, args.out, **_converter_options(args)))
    return 0


def _add_prepare_letor(datasets: Commands) -> None:
    letor = datasets.add_parser("letor", help="LETOR / svmlight feature files (docs/datasets.md)")
    letor.add_argument("--source", required=True, help="a file, a folder of train/vali/test files, or a URL")
    letor.add_argument("--out", required=True, type=Path)
    letor.add_argument("--split-ratio", type=float, nargs=3, default=(0.0, 0.0, 1.0), metavar=("TRAIN", "VALID", "TEST"))
    letor.add_argument("--seed", type=int, default=0)
    _add_converter_arguments(letor)
    letor.set_defaults(handler=_prepare_letor)


def _prepare_letor(args: argparse.Namespace) -> int:
    from llm4pr.data.letor import prepare_letor

    report = prepare_letor(args.source, args.out, split_ratio=tuple(args.split_ratio), seed=args.seed, **_converter_options(args))
    _print_prepare_report(args.out, report)
    return 0


def _add_prepare_semanlink(datasets: Commands) -> None:
    semanlink = datasets.add_parser("semanlink", help="Semanlink arXiv tags from the cherche 2.2.1 sdist, BM25 candidates (docs/datasets.md)")
    semanlink.add_argument("--source", required=True, help="the sdist's cherche/data/semanlink folder (arxiv.json, tags.json), or a folder above it")
    semanlink.add_argument("--out", required=True, type=Path)
    semanlink.add_argument("--depth", type=int, default=20, help="BM25 candidates per query (default: 20, the model's window)")
    semanlink.add_argument("--split-ratio", type=float, nargs=3, default=(0.5, 0.2, 0.3), metavar=("TRAIN", "VALID", "TEST"))
    semanlink.add_argument("--seed", type=int, default=0, help="seed of the query split's hash")
    semanlink.add_argument("--pseudo-queries", action="store_true",
                           help="also train on each paper's title as a query for its abstract (BM25 candidates; docs/datasets.md)")
    semanlink.set_defaults(handler=_prepare_semanlink)


def _prepare_semanlink(args: argparse.Namespace) -> int:
    from llm4pr.data.semanlink import prepare_semanlink

    report = prepare_semanlink(
        args.source, args.out, depth=args.depth, split_ratio=tuple(args.split_ratio), seed=args.seed, pseudo_queries=args.pseudo_queries
    )
    _print_prepare_report(args.out, report)
    counts, first_stage = report["counts"], report["counts"]["first_stage"]
    print(f"{counts['queries']} queries, {counts['documents']} documents, {counts['relevant_pairs']} relevant pairs, "
          f"{counts['queries_with_2plus_relevant']} queries with 2+ relevant")
    print(f"BM25 recall@{args.depth}: {first_stage[f'recall@{args.depth}']:.4f} "
          f"({first_stage['queries_with_a_relevant_candidate']} queries with a relevant candidate, "
          f"{first_stage['queries_without_candidates']} matching no paper)")
    if args.pseudo_queries:
        pseudo = counts["pseudo_queries"]
        print(f"pseudo-queries (titles) in train: {pseudo['requests']} ({pseudo['left_out']} papers left out, "
              f"the paper ranked first by BM25 for {pseudo['paper_ranked_first']})")
    return 0


def _add_converter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--max-candidates", type=int, help="keep the first N candidates of each request")
    parser.add_argument("--cache-dir", type=Path, help="where a --source URL is downloaded")
    parser.add_argument("--sha256", help="expected checksum of a downloaded --source")


def _converter_options(args: argparse.Namespace) -> dict:
    return {"max_candidates": args.max_candidates, "cache_dir": args.cache_dir, "sha256": args.sha256}


def _print_prepare_report(out: Path, report: dict) -> None:
    print(f"wrote {out}: " + ", ".join(f"{split} {n} requests" for split, n in report["counts"]["requests"].items()))
    for kind in ("skipped_rows", "warnings"):
        rows = report.get(kind, {})
        print(f"{kind.replace('_', ' ')}: {sum(rows.values())}" + "".join(f"\n  {n} x {reason}" for reason, n in rows.items()))


# --- llm4pr evaluate, evaluate-adaptation --------------------------------------------------------


def _add_evaluate(commands: Commands) -> None:
    evaluate = commands.add_parser("evaluate", help="score a run file or a checkpoint on labelled requests")
    evaluate.add_argument("--data", required=True, type=Path, help="labelled requests (JSON lines)")
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run file, or 'initial' for the ranking-stage order")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint or training run folder")
    evaluate.add_argument("--out", type=Path, help="write the report here (JSON)")
    evaluate.add_argument("--k", type=int, nargs="+", default=[3, 5], help="cut-offs (default: 3 5)")
    evaluate.add_argument("--gain", choices=["exponential", "linear"], default="exponential")
    evaluate.add_argument("--threshold", type=float, help="relevant = label >= threshold (default: the request's max label)")
    _add_inference_arguments(evaluate)
    evaluate.set_defaults(handler=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from llm4pr.inference.report import evaluate_command

    evaluate_command(args.data, run=args.run, checkpoint=args.checkpoint, config=_inference_config(args), out=args.out, ks=args.k,
                     gain=args.gain, threshold=args.threshold)
    return 0


def _add_evaluate_adaptation(commands: Commands) -> None:
    adaptation = commands.add_parser(
        "evaluate-adaptation", help="how much of the features the LLM reads back from the soft tokens (the paper's FA check)"
    )
    adaptation.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint, or a training run folder (uses its adaptation/)")
    adaptation.add_argument("--data", required=True, type=Path, help="labelled requests (JSON lines); one random candidate of each is read back")
    adaptation.add_argument("--items", type=int, default=200, help="how many requests (one item each) to read back")
    adaptation.add_argument("--seed", type=int, default=0, help="which candidate of each request")
    adaptation.add_argument("--batch-size", type=int, default=16)
    adaptation.add_argument("--device", default="cpu")
    adaptation.add_argument("--out", type=Path, help="write the report here (JSON)")
    adaptation.set_defaults(handler=_evaluate_adaptation)


def _evaluate_adaptation(args: argparse.Namespace) -> int:
    from llm4pr.inference.adaptation import evaluate_adaptation_command

    evaluate_adaptation_command(args.checkpoint, args.data, args.items, args.seed, args.batch_size, args.device, args.out)
    return 0


# --- llm4pr train, fit-baseline ------------------------------------------------------------------


def _add_train(commands: Commands) -> None:
    train = commands.add_parser("train", help="feature adaptation, then learning to post-rank (resumes --out)")
    train.add_argument("--config", required=True, type=Path, help="YAML training config (see configs/)")
    train.add_argument("--data", required=True, type=Path, help="folder with train.jsonl, valid.jsonl, schema.json")
    train.add_argument("--out", required=True, type=Path, help="run folder (created, or resumed if it exists)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="override a config value (repeatable), e.g. --set post_rank.steps=500")
    train.add_argument("--stage", choices=["all", "adaptation", "post_rank"], default="all")
    train.add_argument("--device", choices=["auto", "cpu"], default="auto",
                       help="auto: Accelerate picks (a GPU per process where there is one); cpu: CPU only")
    train.add_argument("--num-processes", type=int, default=1,
                       help="data-parallel processes on this machine (runs `accelerate launch`; see docs/scaling.md)")
    train.set_defaults(handler=_train)


def _train(args: argparse.Namespace) -> int:
    from llm4pr.model.run_folder import STAGES
    from llm4pr.training.config import TrainConfig

    config = TrainConfig.load(args.config, args.overrides)
    if args.num_processes > 1:
        config.check_processes(args.num_processes)
        return _launch_processes(args)
    from llm4pr.training.trainer import Trainer  # after the launch: the launcher needs no model code

    stages = STAGES if args.stage == "all" else (args.stage,)
    trainer = Trainer(config, args.data, args.out, device=args.device)
    report = trainer.run(stages)
    if not trainer.is_main:  # the other processes of `accelerate launch` stay quiet
        return 0
    if report:
        for mode in SERVED_MODES:
            metrics = ", ".join(f"{k} {v:.4f}" for k, v in report[mode]["metrics"].items())
            print(f"validation ({mode}): {metrics}")
    print(f"run folder: {args.out}")
    return 0


def _launch_processes(args: argparse.Namespace) -> int:
    """`llm4pr train --num-processes N`: the same command under `accelerate launch` on this machine."""
    import subprocess

    # --multi_gpu is Accelerate's torchrun launcher; with --device cpu its processes use gloo on the
    # CPU (Accelerate's --cpu flag alone starts a single process unless MPI is set up).
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "1",
              "--num_processes", str(args.num_processes), "--mixed_precision", "no", "--dynamo_backend", "no"]
    command = [*launch, "-m", "llm4pr", *(["--verbose"] if args.verbose else []), "train", "--config", str(args.config), "--data", str(args.data), "--out", str(args.out),
               "--stage", args.stage, "--device", args.device, *(f"--set={o}" for o in args.overrides)]
    return subprocess.run(command, check=False).returncode


def _add_fit_baseline(commands: Commands) -> None:
    fit_baseline = commands.add_parser("fit-baseline", help="fit a baseline on a prepared data folder and save it (for rank and serve)")
    fit_baseline.add_argument("--baseline", required=True, metavar="NAME", help="a baseline of docs/baselines.md, e.g. lambdamart")
    fit_baseline.add_argument("--data", required=True, type=Path,
                              help="prepared data folder: train.jsonl, schema.json, and valid.jsonl for early stopping")
    fit_baseline.add_argument("--out", required=True, type=Path, help="the saved ranker's folder (created, or replaced if it holds one)")
    fit_baseline.add_argument("--set", dest="params", action="append", default=[], metavar="KEY=VALUE",
                              help="a constructor argument (repeatable; the value is read as YAML), e.g. --set n_estimators=200")
    fit_baseline.add_argument("--seed", type=int, default=0)
    fit_baseline.set_defaults(handler=_fit_baseline)


def _fit_baseline(args: argparse.Namespace) -> int:
    from llm4pr.baselines import fit_and_save_baseline
    from llm4pr.data.config_files import parse_overrides

    fit_and_save_baseline(args.baseline, args.data, args.out, parse_overrides(args.params), seed=args.seed)
    print(f"saved {args.baseline} to {args.out} (llm4pr rank or serve --checkpoint {args.out})")
    return 0


# --- llm4pr rank, serve, bench-latency ----------------------------------------------------------


def _add_rank(commands: Commands) -> None:
    rank = commands.add_parser("rank", help="post-rank requests with a saved ranker: a checkpoint or a saved baseline (here, or on Ray)")
    rank.add_argument("--checkpoint", required=True, type=Path, nargs="+",
                      help="an llm4pr checkpoint or training run folder, or a saved baseline (llm4pr fit-baseline); "
                      "several: an ensemble ranking by their mean standardised first_token scores (--engine local)")
    rank.add_argument("--input", required=True, help="requests: a JSON-lines file; with --engine ray also a folder or glob of .jsonl/.parquet files")
    rank.add_argument("--output", required=True, type=Path, help="run file to write (JSON lines); with --engine ray a folder of shards")
    rank.add_argument("--engine", choices=["local", "ray"], default="local", help="ray: Ray Data over a cluster or local Ray (docs/scaling.md)")
    ray_options = rank.add_argument_group("--engine ray")
    ray_options.add_argument("--workers", type=int, default=1, help="ranking actors (each loads the model once)")
    ray_options.add_argument("--cpus-per-worker", type=float, default=1.0)
    ray_options.add_argument("--gpus-per-worker", type=float, default=0.0)
    ray_options.add_argument("--ray-batch-size", type=int, default=64, help="requests per Ray Data batch")
    ray_options.add_argument("--output-format", choices=["jsonl", "parquet"], help="default: the input's format")
    ray_options.add_argument("--ray-address", help="cluster to join (default: $RAY_ADDRESS, else a local Ray)")
    _add_explain_arguments(rank, "write each request's explanations into its run file line (--engine local)")
    _add_inference_arguments(rank)
    rank.set_defaults(handler=_rank)


def _add_explain_arguments(parser: argparse.ArgumentParser, help_text: str) -> None:
    if help_text:
        parser.add_argument("--explain", action="store_true", help=help_text)
    parser.add_argument("--occlusion", action="store_true",
                        help="explanations: add the score change when each field is set to missing (LLM4PR; one extra pass per field)")


def _rank(args: argparse.Namespace) -> int:
    from llm4pr.data.jsonl import read_requests, write_jsonl
    from llm4pr.loading import load_rankers
    from llm4pr.rankers.explanation import explain

    config = _inference_config(args)
    if args.occlusion and not args.explain:
        raise DataError("--occlusion is part of the explanations: add --explain")
    if args.engine == "ray":
        if args.explain:
            raise DataError("--explain ranks with --engine local")
        if len(args.checkpoint) > 1:
            raise DataError("--engine ray ranks with one checkpoint; rank an ensemble with --engine local")
        return _rank_with_ray(args, config)
    ranker = load_rankers(args.checkpoint, config, progress=True)
    requests = read_requests(args.input, ranker.schema)
    results = explain(ranker, requests, occlusion=args.occlusion) if args.explain else ranker.rank(requests)
    write_jsonl(args.output, results)
    fallbacks = sum(r.fallback for r in results)
    print(f"wrote {len(results)} rankings to {args.output} ({fallbacks} fallbacks)")
    return 0


def _add_explain(commands: Commands) -> None:
    explain = commands.add_parser("explain", help="why a saved ranker ranks one request as it does: a plain-text table")
    explain.add_argument("--checkpoint", required=True, type=Path, help="an llm4pr checkpoint or training run folder, or a saved baseline")
    explain.add_argument("--input", required=True, type=Path, help="requests: a JSON-lines file")
    explain.add_argument("--request-id", required=True, help="the request to explain")
    _add_explain_arguments(explain, "")
    _add_inference_arguments(explain)
    explain.set_defaults(handler=_explain)


def _explain(args: argparse.Namespace) -> int:
    from llm4pr.data.jsonl import read_requests
    from llm4pr.loading import load_ranker
    from llm4pr.rankers.explanation import explain, render_text

    ranker = load_ranker(args.checkpoint, _inference_config(args))
    requests = [r for r in read_requests(args.input, ranker.schema) if r.request_id == args.request_id]
    if not requests:
        raise DataError(f"{args.input}: no request with request_id '{args.request_id}'")
    [result] = explain(ranker, requests, occlusion=args.occlusion)
    print(render_text(result))
    return 0


def _rank_with_ray(args: argparse.Namespace, config: InferenceConfig) -> int:
    from llm4pr.inference.ray_batch import rank_with_ray
    from llm4pr.rankers.saved import is_saved_ranker

    (checkpoint,) = args.checkpoint
    if is_saved_ranker(checkpoint):
        raise DataError(f"--engine ray ranks with llm4pr checkpoints; {checkpoint} is a saved baseline: rank it with --engine local")

    count = rank_with_ray(
        checkpoint, args.input, args.output, config, output_format=args.output_format, workers=args.workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, batch_size=args.ray_batch_size,
        address=args.ray_address,
    )
    print(f"wrote {count} rankings to {args.output}/")
    return 0


def _add_serve(commands: Commands) -> None:
    serve = commands.add_parser("serve", help="the HTTP post-ranking service (docs/serving.md)")
    serve.add_argument("--checkpoint", required=True, type=Path,
                       help="an llm4pr checkpoint or training run folder, or a saved baseline (llm4pr fit-baseline)")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--mode", choices=SERVED_MODES, help="default inference mode")
    serve.add_argument("--max-batch-size", type=int)
    serve.add_argument("--max-wait-ms", type=float)
    serve.add_argument("--deadline-ms", type=float)
    serve.add_argument("--max-candidates", type=int,
                       help="candidates per /v1/post-rank request and documents per /v1 and /v2 rerank call (default 1000; more: 413)")
    serve.add_argument("--examples", type=Path,
                       help="sample requests for the playground page at / (JSON lines; the first 50, checked at start-up)")
    _add_model_arguments(serve)
    serve.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace) -> int:
    from llm4pr.serving import ServingSettings, serve

    names = ("mode", "max_batch_size", "max_wait_ms", "deadline_ms", "max_candidates")
    try:
        settings = ServingSettings(**{n: getattr(args, n) for n in names if getattr(args, n) is not None})
    except ValidationError as exc:
        raise DataError(f"invalid serving settings: {format_validation_error(exc)}") from exc
    serve(args.checkpoint, host=args.host, port=args.port, settings=settings, inference=_inference_config(args), examples=args.examples)
    return 0


def _add_bench_latency(commands: Commands) -> None:
    latency = commands.add_parser("bench-latency", help="tokens, latency and throughput per inference mode (one run)")
    latency.add_argument("--checkpoint", required=True, type=Path)
    latency.add_argument("--data", required=True, type=Path, help="requests to time (JSON lines)")
    latency.add_argument("--out", type=Path, help="write the report here (JSON)")
    latency.add_argument("--requests", type=int, default=100, help="how many requests to time")
    latency.add_argument("--device", default=INFERENCE_DEFAULTS.device)
    _add_dtype_argument(latency)
    latency.set_defaults(handler=_bench_latency)


def _bench_latency(args: argparse.Namespace) -> int:
    from llm4pr.benchmarks.latency import bench_latency_command

    bench_latency_command(args.checkpoint, args.data, args.out, args.requests, _inference_config(args))
    return 0


def _add_inference_arguments(parser: argparse.ArgumentParser) -> None:
    """The `InferenceConfig` flags of `rank` and `evaluate`; the defaults are the config's."""
    parser.add_argument("--mode", choices=MODES, default=INFERENCE_DEFAULTS.mode)
    parser.add_argument("--batch-size", type=int, default=INFERENCE_DEFAULTS.batch_size, help="requests per model call")
    parser.add_argument("--shifts", type=int, default=INFERENCE_DEFAULTS.shifts,
                        help="first_token: average scores over this many cyclic shifts of the candidate order (costs as many passes)")
    _add_model_arguments(parser)


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The `InferenceConfig` flags that say how a checkpoint is loaded and windowed (`serve` takes
    its mode and batch size from its own flags)."""
    parser.add_argument("--window", type=int, default=INFERENCE_DEFAULTS.window, help="sliding window for long candidate lists")
    parser.add_argument("--stride", type=int, default=INFERENCE_DEFAULTS.stride, help="how far the window moves (less than --window)")
    parser.add_argument("--device", default=INFERENCE_DEFAULTS.device)
    parser.add_argument("--quantize", choices=get_args(Quantization), help="int8: dynamic int8 decoder for CPU inference (docs/serving.md)")
    _add_dtype_argument(parser)


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=get_args(Dtype),
                        help="the backbone's float type (default: the checkpoint's model.dtype; auto: bfloat16 where the hardware has it)")


def _inference_config(args: argparse.Namespace) -> InferenceConfig:
    """The `InferenceConfig` of the command's flags (those it has); a bad value or combination is
    an `error:` line that names the flags."""
    given = {name: value for name in InferenceConfig.model_fields if (value := getattr(args, name, None)) is not None}
    try:
        return InferenceConfig(**given)
    except ValidationError as exc:
        raise DataError(f"invalid inference settings: {format_validation_error(exc, as_flags=True)}") from None


# --- llm4pr benchmark, study, demo ---------------------------------------------------------------


def _add_benchmark(commands: Commands) -> None:
    benchmark = commands.add_parser("benchmark", help="the paper's comparison: every row over several seeds")
    benchmark.add_argument("--config", required=True, type=Path, help="benchmark config (see benchmarks/)")
    benchmark.add_argument("--out", required=True, type=Path, help="results folder (resumed if it exists)")
    benchmark.add_argument("--row", action="append", metavar="NAME", help="run only this row (repeatable; default: every row)")
    benchmark.add_argument("--seed", action="append", type=int, help="run only this seed (repeatable; default: every seed)")
    benchmark.set_defaults(handler=_benchmark)


def _benchmark(args: argparse.Namespace) -> int:
    from llm4pr.benchmarks.comparison import benchmark_command

    benchmark_command(args.config, args.out, args.row, args.seed)
    return 0


def _add_study(commands: Commands) -> None:
    study = commands.add_parser("study", help="train a variant of a recipe (or a baseline) and record its validation metrics (docs/decisions.md)")
    recipe = study.add_mutually_exclusive_group(required=True)
    recipe.add_argument("--config", type=Path, help="the recipe (YAML training config)")
    recipe.add_argument("--baseline", metavar="NAME",
                        help="a benchmark baseline instead (item_quality, lambdamart, ...), fitted on the training split")
    study.add_argument("--data", required=True, type=Path, help="prepared data folder (train.jsonl, valid.jsonl, schema.json)")
    study.add_argument("--name", required=True, help="the variant's name: its run folder and result file")
    study.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                       help="what this variant changes (repeatable): a training config key, or a --baseline's constructor argument (--set factors=50)")
    study.add_argument("--metrics-at", type=int, action="append", metavar="K",
                       help="--baseline: cutoffs of the metrics (repeatable; default 3 and 5; a recipe's come from its metrics_at)")
    study.add_argument("--seed", type=int, default=None, help="--baseline: the fitting seed (default 0; a recipe's is --set seed=N)")
    study.add_argument("--runs", type=Path, default=Path("runs/studies"), help="where run folders go")
    study.add_argument("--out", type=Path, default=Path("benchmarks/results/studies"), help="where result files go")
    study.set_defaults(handler=_study)


def _study(args: argparse.Namespace) -> int:
    from llm4pr.benchmarks.study import run_baseline_study, run_study, study_summary

    if args.baseline is not None:
        record = run_baseline_study(
            args.baseline, args.data, args.name, out_dir=args.out, metrics_at=args.metrics_at or (3, 5), overrides=args.overrides,
            seed=args.seed if args.seed is not None else 0,
        )
    else:
        if args.metrics_at:
            raise DataError("study --metrics-at is for --baseline; a recipe's cutoffs are its metrics_at (--set metrics_at=[3,10])")
        if args.seed is not None:
            raise DataError("study --seed is for --baseline; a recipe's seed is its config's (--set seed=1)")
        record = run_study(args.config, args.data, args.name, args.overrides, runs_dir=args.runs, out_dir=args.out)
    print(study_summary(record))
    print(f"result: {args.out / (args.name + '.json')}")
    return 0


def _add_demo(commands: Commands) -> None:
    demo = commands.add_parser("demo", help="the whole pipeline on the offline defaults (ML-100K, quick config)")
    demo.add_argument("--out", type=Path, default=Path("demo-out"))
    demo.add_argument("--config", type=Path, default=None, help="training config (default: configs/ml100k-quick.yaml)")
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from llm4pr.demo import run_demo

    run_demo(args.out, args.config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
