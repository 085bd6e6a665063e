"""Where a measured number comes from: the code (git commit) and the machine.

Benchmark results are filled in over several sessions and possibly on different machines; every
result file carries this record so that a table can say what ran where."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


LIBRARIES = ("llm4pr", "torch", "transformers", "peft", "accelerate", "numpy", "lightgbm", "fastapi", "uvicorn", "httpx")


def libraries() -> dict[str, str]:
    """Installed versions of the libraries that decide a result (those installed)."""
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, Any]:
    import torch

    record: dict[str, Any] = {
        "processor": _cpu_model() or platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        record["gpu"] = torch.cuda.get_device_name(0)
    return record


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


def _cpu_model() -> str | None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return None
    for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None
