"""A saved ranker's folder: `ranker.json` says what the folder holds, so that it loads without guessing.

The manifest names the ranker's kind (the name the loader dispatches on, e.g. `lambdamart`), its
constructor parameters, the feature schema requests must follow and the provenance of the fit
(commit, machine, command); the kind's own files lie beside it (LambdaMART: `model.txt` and
`featuriser.json`). No pickle: every file is JSON or a documented format. The folder is filled
under a temporary name and swapped into place, so a crash never leaves half a ranker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llm4pr.data.config_files import load_json_model
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import write_json
from llm4pr.data.schema import FeatureSchema
from llm4pr.io import atomic_folder
from llm4pr.provenance import git_commit, provenance

MANIFEST_FILE = "ranker.json"


class RankerManifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    format: Literal["llm4pr-ranker"] = "llm4pr-ranker"
    version: Literal[1] = 1
    kind: str = Field(min_length=1, description="what loads the folder, e.g. 'lambdamart'")
    params: dict[str, Any] = Field(default_factory=dict, description="the ranker's constructor arguments")
    feature_schema: FeatureSchema = Field(alias="schema", description="the schema requests must follow")
    provenance: dict[str, Any] | None = Field(default=None, description="where and from what code the ranker was fitted")

    def to_json(self) -> dict[str, Any]:
        raw = self.model_dump(mode="json", by_alias=True)
        return {**raw, "schema": self.feature_schema.model_dump(mode="json", exclude_none=True)}


def is_saved_ranker(folder: str | Path) -> bool:
    return (Path(folder) / MANIFEST_FILE).is_file()


def read_manifest(folder: str | Path) -> RankerManifest:
    missing = f"{folder}: not a saved ranker (no {MANIFEST_FILE})"
    return load_json_model(RankerManifest, Path(folder) / MANIFEST_FILE, "saved-ranker manifest", missing)


@contextmanager
def saving_ranker(folder: str | Path, kind: str, params: dict[str, Any], schema: FeatureSchema) -> Iterator[Path]:
    """A temporary folder for the ranker's own files; on success the manifest is added and the
    folder replaces `folder`. A `folder` that holds anything but a saved ranker is never replaced."""
    folder = Path(folder)
    if folder.exists() and not is_saved_ranker(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise DataError(f"{folder}: exists and is not a saved ranker; save into a new or empty folder")
    manifest = RankerManifest(kind=kind, params=params, feature_schema=schema, provenance=provenance(git_commit()))
    with atomic_folder(folder) as tmp:
        yield tmp
        write_json(tmp / MANIFEST_FILE, manifest.to_json())
