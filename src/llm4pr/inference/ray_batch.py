"""`llm4pr rank --engine ray`: post-rank request logs on a Ray cluster with Ray Data.

The input (JSON-lines or Parquet files: one file, a folder or a glob, local or any filesystem
Ray reads) streams through `map_batches` to a pool of `RankingWorker` actors; each loads the
checkpoint once and ranks with the same `LLM4PRRanker` and `InferenceConfig` as `llm4pr rank`,
so the output is the same request for request. Results are written as shards into a temporary
folder next to the output and renamed into place at the end: an interrupted job leaves no
partial output.

Every request is validated against the checkpoint's feature schema in the worker; a bad one stops
the job with an error naming the file and the request id (line numbers are not known to Ray's
readers: `llm4pr rank` on that file gives them).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import loads_strict, parse_record, request_parser
from llm4pr.data.requests import RankResult
from llm4pr.inference.config import InferenceConfig

Format = Literal["jsonl", "parquet"]
EXTENSIONS: dict[str, Format] = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def result_schema() -> Any:
    """The Arrow schema of output rows: the fields of `RankResult` (but `explanations`: the Ray
    engine does not explain), typed so that every shard agrees."""
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()),
            ("ranking", pa.list_(pa.string())),
            ("scores", pa.list_(pa.float64())),
            ("mode", pa.string()),
            ("fallback", pa.bool_()),
            ("error", pa.string()),
            ("repaired", pa.bool_()),
            ("latency_ms", pa.float64()),
        ]
    )


class RankingWorker:
    """Ray Data's callable class: one per actor, so the model is loaded once per worker."""

    def __init__(self, checkpoint: str, config: InferenceConfig, threads: int) -> None:
        import torch

        from llm4pr.inference.ranker import LLM4PRRanker

        torch.set_num_threads(threads)
        self.ranker = LLM4PRRanker.from_pretrained(checkpoint, config)
        self.parse = request_parser(self.ranker.model.schema)

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        rows = batch.to_pylist()
        requests = [self.parse_row(row) for row in rows]
        results = self.ranker.rank(requests)
        fields = result_schema().names
        return pa.Table.from_pylist([{f: getattr(r, f) for f in fields} for r in results], schema=result_schema())

    def parse_row(self, row: dict[str, Any]) -> Any:
        """A row of a Parquet file is a request; a row of a JSON-lines file holds one line of text."""
        where = row.pop("path", "input")
        if set(row) == {"text"}:
            try:
                obj = loads_strict(row["text"])
            except ValueError as exc:
                raise DataError(f"{where}: invalid JSON: {exc}: {row['text'][:80]!r}") from exc
        else:
            obj = row
        return parse_record(obj, self.parse, where)


def input_files(spec: str) -> tuple[list[str], Format]:
    """The files of a local file, folder or glob (other URIs are passed to Ray as they are), and their format."""
    if "://" in spec:
        files = [spec]
    elif os.path.isdir(spec):
        files = sorted(str(p) for p in Path(spec).iterdir() if p.suffix in EXTENSIONS)
    else:
        files = sorted(glob.glob(spec))
    if not files:
        raise DataError(f"--input {spec}: no input files (expected .jsonl, .json or .parquet files)")
    formats = {EXTENSIONS.get(Path(f.split("?")[0]).suffix) for f in files}
    if None in formats or len(formats) != 1:
        raise DataError(f"--input {spec}: mixes or lacks file types ({sorted(Path(f).suffix for f in files)}); give .jsonl/.json or .parquet files")
    return files, formats.pop()  # type: ignore[return-value]


def rank_with_ray(
    checkpoint: str | Path,
    input_spec: str,
    output: str | Path,
    config: InferenceConfig,
    output_format: Format | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_size: int = 64,
    address: str | None = None,
) -> int:
    """Rank every request of the input with `config`; write result shards into `output`; return the count."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise DataError(f"--engine ray needs Ray Data: pip install 'llm4pr[ray]' ({exc})") from exc

    output = Path(output)
    if output.exists() and any(output.iterdir()):
        raise DataError(f"--output {output}: folder exists and is not empty")
    files, input_format = input_files(input_spec)
    output_format = output_format or input_format
    checkpoint = str(Path(checkpoint).resolve())

    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    cpus = ray.cluster_resources().get("CPU", 0.0)
    if address is None and workers * cpus_per_worker > cpus - 1:
        # Ray Data's actors would hold every CPU and its read and write tasks would wait forever.
        if started_here:
            ray.shutdown()
        raise DataError(
            f"--workers {workers} x --cpus-per-worker {cpus_per_worker:g} leave no CPU for reading and writing on this "
            f"{cpus:g}-CPU Ray instance: use at most {max(cpus - 1, 0):g} CPUs for workers"
        )
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards follow the input order
    context.enable_progress_bars = False
    tmp = Path(tempfile.mkdtemp(dir=output.parent if output.parent.exists() else None, prefix=f".{output.name}."))
    try:
        if input_format == "parquet":
            dataset = ray.data.read_parquet(files, include_paths=True)
        else:
            dataset = ray.data.read_text(files, include_paths=True)
        ranked = dataset.map_batches(
            RankingWorker,
            fn_constructor_kwargs={"checkpoint": checkpoint, "config": config, "threads": max(int(cpus_per_worker), 1)},
            batch_size=batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
        )
        if output_format == "parquet":
            ranked.write_parquet(str(tmp))
        else:
            ranked.write_json(str(tmp), double_precision=15)
        count = _count_rows(tmp)
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.exists():
            output.rmdir()  # empty (checked above)
        tmp.rename(output)
        return count
    except Exception as exc:
        raise _data_error(exc) or exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if started_here:
            ray.shutdown()


def read_results(folder: str | Path) -> list[RankResult]:
    """Every result of an output folder (JSON-lines or Parquet shards), in shard order."""
    import pyarrow.parquet as pq

    from llm4pr.data.jsonl import read_run

    results: list[RankResult] = []
    for shard in sorted(Path(folder).iterdir()):
        if shard.suffix == ".parquet":
            results += [RankResult.model_validate(row) for row in pq.read_table(shard).to_pylist()]
        elif shard.suffix in EXTENSIONS:
            results += read_run(shard)
    return results


def _count_rows(folder: Path) -> int:
    """Results written to `folder`: Parquet footers hold the row count; JSON shards are counted by line."""
    import pyarrow.parquet as pq

    def rows(shard: Path) -> int:
        if shard.suffix == ".parquet":
            return pq.ParquetFile(shard).metadata.num_rows
        with shard.open(encoding="utf-8") as lines:
            return sum(1 for line in lines if line.strip())

    return sum(rows(shard) for shard in folder.iterdir() if shard.is_file())


def _data_error(exc: BaseException) -> DataError | None:
    """The DataError that a worker raised, out of Ray's wrappers (so the CLI prints it plainly).

    Ray passes the worker's traceback as text; the last DataError in it is the outermost one, the
    message that names the file and the request."""
    marker = f"{DataError.__module__}.{DataError.__name__}: "
    text = str(exc)
    if marker in text:
        return DataError(text.rsplit(marker, 1)[1].split("\n\n", 1)[0].strip())
    return DataError(text) if isinstance(exc, DataError) else None
