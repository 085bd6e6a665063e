"""Session fixtures: what several test files need in the same form is built once per session.

`tiny_backbone_dir` is the tiny random backbone (tests/tiny.py) saved as a local model folder,
`toy_data_dir` the toy dataset folder (tests/toy.py) with its default sizes, and
`tiny_train_config` builds training configs for a few-second run on that backbone. Nothing is
imported or built until a test asks for a fixture, so collecting the light test files stays light.

Tests only read the shared folders. Each is fingerprinted when it is written and checked again
at the end of the session, so a test that writes into one fails the session instead of quietly
changing what later tests read. A test that needs a changed copy makes its own under `tmp_path`.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.tiny import TrainConfigFactory

# ranx (the metrics' reference implementation) is numba code: compiling it took a minute of every
# test run, while interpreting it on the tests' few hundred queries takes seconds. Set before
# anything imports numba; only ranx uses it.
os.environ.setdefault("NUMBA_DISABLE_JIT", "1")


def _fingerprint(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under `folder`."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _shared(folder: Path) -> Iterator[Path]:
    """Yield `folder`; afterwards, fail if any test changed, added or removed a file in it."""
    before = _fingerprint(folder)
    yield folder
    assert _fingerprint(folder) == before, f"{folder}: a test wrote into this shared, read-only session folder"


@pytest.fixture(scope="session")
def tiny_backbone_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny random backbone (seed 0), saved once per session as a local model folder."""
    from tests.tiny import save_tiny_backbone

    yield from _shared(save_tiny_backbone(tmp_path_factory.mktemp("tiny-backbone")))


@pytest.fixture(scope="session")
def toy_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The toy dataset with its default sizes (schema and train/valid/test splits), written once."""
    from tests.toy import write_toy_data

    yield from _shared(write_toy_data(tmp_path_factory.mktemp("toy-data")))


@pytest.fixture(scope="session")
def tiny_train_config(tiny_backbone_dir: Path) -> TrainConfigFactory:
    """`tiny_train_config(**overrides)`: a TrainConfig for a few-second run on `tiny_backbone_dir`.

    Each override replaces a top-level key as a whole: `adaptation={"steps": 1}` sets the whole
    stage (its other fields take their defaults), `model=...` the whole model section.
    """
    from llm4pr.training.config import TrainConfig

    def make(**overrides: object) -> TrainConfig:
        raw: dict[str, object] = {
            "seed": 0,
            "checkpoint_every": 2,
            "max_valid_requests": 4,
            "inference_batch_size": 4,
            "model": {
                "backbone": str(tiny_backbone_dir),
                "dtype": "float32",
                "text_encoder": "hashing",
                "qia_hidden_dim": 32,
                "categorical_dim": 8,
                "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            },
            "adaptation": {"steps": 3, "batch_size": 4},
            "post_rank": {"steps": 4, "batch_size": 4, "auxiliary_ratio": 0.5},
        }
        raw.update(overrides)
        return TrainConfig.model_validate(raw)

    return make
