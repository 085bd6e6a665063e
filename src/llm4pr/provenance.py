"""Where a measured number comes from: the code (git commit) and the machine.

Benchmark results are filled in over several sessions and possibly on different machines; every
result file carries this record so that a table can say what ran where."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import shlex
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any


LIBRARIES = ("llm4pr", "torch", "transformers", "peft", "accelerate", "numpy", "lightgbm", "scikit-surprise", "fastapi", "uvicorn", "httpx")


def libraries() -> dict[str, str]:
    """Installed versions of the libraries that decide a result (those installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# /proc/cpuinfo flags of x86 CPUs whose vector units multiply bfloat16 natively: they decide how
# fast the same code trains (model/precision.py), so every result names them.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@lru_cache(maxsize=1)
def cpuinfo() -> str:
    """The text of /proc/cpuinfo ("" off Linux)."""
    path = Path("/proc/cpuinfo")
    if platform.system() != "Linux" or not path.is_file():
        return ""
    return path.read_text(encoding="utf-8", errors="replace")


def cpuinfo_field(text: str, name: str) -> str | None:
    """The first value of field `name` in /proc/cpuinfo's text ("model name", "flags", ...)."""
    for line in text.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == name:
            return value.strip()
    return None


def bf16_flags(text: str) -> frozenset[str]:
    """The bfloat16 flags in /proc/cpuinfo's text (of its first processor)."""
    return frozenset((cpuinfo_field(text, "flags") or "").split()) & BF16_CPU_FLAGS


def machine() -> dict[str, Any]:
    import torch

    text = cpuinfo()
    record: dict[str, Any] = {
        "processor": cpuinfo_field(text, "model name") or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    family, model = cpuinfo_field(text, "cpu family"), cpuinfo_field(text, "model")
    if family and model:  # a VM may name only the brand ("AMD EPYC"): family and model tell the generation
        record["cpu_id"] = f"family {family} model {model}"
    if text:
        record["bf16_units"] = sorted(bf16_flags(text))
    probe = read_dtype_probe()
    if probe is not None:
        record["dtype_probe"] = probe  # what `model.dtype: auto` measured and chose on this machine
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


# --- the number-format probe's record, per machine (model/precision.py measures and decides) -----

DTYPE_PROBE_FILE = "dtype-probe.json"


def cache_root() -> Path:
    """`$LLM4PR_CACHE`, else ~/.cache/llm4pr: where converted backbones, datasets and probes live."""
    root = os.environ.get("LLM4PR_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "llm4pr"


def machine_key() -> str:
    """What decides how fast a number format runs here: CPU model, its flags, torch's version and
    thread count. A probe measured under one key says nothing under another."""
    import torch

    text = cpuinfo()
    parts = [cpuinfo_field(text, name) or "" for name in ("model name", "cpu family", "model", "flags")]
    parts += [platform.machine(), torch.__version__, str(torch.get_num_threads())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def read_dtype_probe() -> dict[str, Any] | None:
    """This machine's cached probe record, None if it was never measured (or the cache is unreadable)."""
    try:
        records = json.loads((cache_root() / DTYPE_PROBE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    record = records.get(machine_key()) if isinstance(records, dict) else None
    return record if isinstance(record, dict) else None


def write_dtype_probe(record: dict[str, Any]) -> None:
    """Keep `record` as this machine's probe (other machines' records sharing the cache stay). The
    file is replaced whole (write aside, then rename): a reader never sees half of it."""
    path = cache_root() / DTYPE_PROBE_FILE
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        records = {}
    records = records if isinstance(records, dict) else {}
    records[machine_key()] = record
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}")
    aside.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(aside, path)


CODE_PATHS = ("src", "configs", "benchmarks/*.yaml")  # what decides a result; results files are not code


def git_commit(folder: str | Path = ".", paths: tuple[str, ...] = CODE_PATHS) -> str | None:
    """HEAD of the repository holding `folder`, with "-dirty" when tracked files under `paths`
    differ from it (a benchmark rewrites its own tracked results as it goes: that is not a code
    change); None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True, check=True).stdout.strip()
        status = ["git", "status", "--porcelain", "--untracked-files=no", "--", *paths]
        changed = subprocess.run(status, cwd=folder, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}-dirty" if changed.strip() else head


def provenance(commit: str | None) -> dict[str, Any]:
    """`commit`: taken when the process started (the code it runs), not when the result is written."""
    return {
        "commit": commit,
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else None,
        "python": platform.python_version(),
        "libraries": libraries(),
        "machine": machine(),
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
