"""The checkpoint format: self-describing folders, written atomically, loaded without pickle.

A checkpoint folder holds:
- `config.json`: the model config, the feature schema and the fitted feature statistics;
- `encoders.safetensors`: field encoders, adapters (QIA or MLP) and the soft-token scale;
- `adapter/`: the PEFT LoRA adapter (absent before learning to post-rank);
- `trainer_state.json` + `optimizer.safetensors` in resumable training snapshots only.

A folder is written under a temporary name and renamed into place, so a crash leaves either the
old checkpoint or the new one, never a mix. `model.factory.load_model` rebuilds a model from a folder;
`model.run_folder` says where a training run keeps its checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import write_json
from llm4pr.data.schema import FeatureSchema
from llm4pr.features.encoders import FeatureStats
from llm4pr.io import atomic_folder
from llm4pr.model.config import ModelConfig
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.provenance import read_dtype_probe

FORMAT = "llm4pr-checkpoint"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ADAPTER_DIR = "adapter"
OPTIMIZER_FILE = "optimizer.safetensors"


def save_checkpoint(
    model: LLM4PRModel,
    path: str | Path,
    optimizer: torch.optim.Optimizer | None = None,
    trainer_state: dict[str, Any] | None = None,
    full_state: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write `model` (or, when given, `full_state`: its weights gathered from sharded processes)."""
    with atomic_folder(path) as tmp:
        write_json(
            tmp / CONFIG_FILE,
            {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "model": model.config.model_dump(mode="json"),
                "trained_in": model.backbone_dtype,  # what model.dtype resolved to; a loader resolves it again
                **({"dtype_probe": probe} if (probe := read_dtype_probe()) else {}),  # how auto decided on this machine
                "schema": model.schema.model_dump(mode="json", exclude_none=True),
                "stats": model.stats.to_dict(),
            },
        )
        trainable = model.trainable_state_dict(full_state)
        save_file({k: v.detach().contiguous().cpu() for k, v in trainable.items()}, tmp / "encoders.safetensors")
        if hasattr(model.backbone, "peft_config"):
            backbone_state = None if full_state is None else {k.removeprefix("backbone."): v for k, v in full_state.items() if k.startswith("backbone.")}
            model.backbone.save_pretrained(tmp / ADAPTER_DIR, state_dict=backbone_state)
        if optimizer is not None:
            tensors, structure = _flatten_optimizer(optimizer)
            save_file(tensors, tmp / OPTIMIZER_FILE)
            write_json(tmp / "optimizer.json", structure)
        if trainer_state is not None:
            write_json(tmp / "trainer_state.json", trainer_state)


def read_checkpoint_config(path: str | Path) -> tuple[ModelConfig, FeatureSchema, FeatureStats]:
    path = Path(path)
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise DataError(f"{path}: not an llm4pr checkpoint (no config.json)")
    raw = json.loads(config_path.read_text(encoding="utf-8"))
    if raw.get("format") != FORMAT or raw.get("version") != FORMAT_VERSION:
        raise DataError(f"{config_path}: unsupported checkpoint format {raw.get('format')!r} v{raw.get('version')!r}")
    # Checkpoints written before these options existed were trained without them.
    for option in ("bind_identifiers", "relative_numeric", "history_labels", "query_similarity", "candidate_prior", "history_prior"):
        raw["model"].setdefault(option, False)
    return (
        ModelConfig.model_validate(raw["model"]),
        FeatureSchema.model_validate(raw["schema"]),
        FeatureStats.from_dict(raw["stats"]),
    )


def load_weights(model: LLM4PRModel, path: str | Path) -> None:
    """Load encoders and adapters (strict: every tensor must match) into a freshly built model."""
    state = load_file(Path(path) / "encoders.safetensors", device=str(model.device))
    missing, unexpected = model.load_state_dict(state, strict=False)
    expected = set(model.trainable_state_dict())
    missing = [k for k in missing if k in expected]
    if missing or unexpected:
        raise DataError(f"{path}: checkpoint does not match the model: missing {missing}, unexpected {unexpected}")


def has_adapter(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_DIR / "adapter_config.json").is_file()


def load_optimizer(optimizer: torch.optim.Optimizer, path: str | Path) -> None:
    path = Path(path)
    structure = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    tensors = load_file(path / OPTIMIZER_FILE)
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": structure["param_groups"]})


def read_trainer_state(path: str | Path) -> dict[str, Any] | None:
    state_path = Path(path) / "trainer_state.json"
    if not state_path.is_file():
        return None
    return json.loads(state_path.read_text(encoding="utf-8"))


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for index, param_state in state_dict["state"].items():
        for name, value in param_state.items():
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"{index}.{name}"] = tensor.detach().contiguous().cpu()
    return tensors, {"param_groups": state_dict["param_groups"]}

