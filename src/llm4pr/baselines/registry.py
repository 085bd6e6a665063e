"""The baselines by name: build one, fit one on a prepared data folder and save it, load a saved one.

The name is the one configs, result tables and a saved ranker's manifest (`kind`) use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llm4pr.baselines.base import Baseline
from llm4pr.baselines.bi_encoder import BiEncoderRanker
from llm4pr.baselines.collaborative import MatrixFactorisationRanker
from llm4pr.baselines.heuristics import ItemQualityRanker, RandomOrderRanker, RankingStageOrderRanker
from llm4pr.baselines.listwise import DLCMRanker, PRMRanker, Seq2SlateRanker, SetRankRanker
from llm4pr.baselines.ltr import LambdaMARTRanker, LTRDNNRanker
from llm4pr.data.errors import DataError
from llm4pr.data.jsonl import read_requests
from llm4pr.data.schema import FeatureSchema
from llm4pr.rankers.saved import MANIFEST_FILE, read_manifest

BASELINES: dict[str, type[Baseline]] = {
    "initial": RankingStageOrderRanker,
    "random": RandomOrderRanker,
    "bi_encoder": BiEncoderRanker,
    "item_quality": ItemQualityRanker,
    "mf": MatrixFactorisationRanker,
    "ltr_dnn": LTRDNNRanker,
    "lambdamart": LambdaMARTRanker,
    "dlcm": DLCMRanker,
    "setrank": SetRankRanker,
    "prm": PRMRanker,
    "seq2slate": Seq2SlateRanker,
}


def build_baseline(name: str, **kwargs: Any) -> Baseline:
    """An unfitted baseline ranker; kwargs go to its constructor."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}") from None
    return cls(**kwargs)


def fit_and_save_baseline(name: str, data_dir: Path, out: Path, params: dict[str, Any] | None = None, seed: int = 0) -> Baseline:
    """Fit the baseline `name` on `data_dir`'s training split (early-stopping on its validation
    split, when there is one) and save it to `out`; what `llm4pr fit-baseline` does."""
    try:
        ranker = build_baseline(name, **(params or {}))
    except (TypeError, ValueError) as exc:  # an unknown name or parameter
        raise DataError(f"fit-baseline {name}: {exc}") from None
    schema = FeatureSchema.load(data_dir / "schema.json")
    train = read_requests(data_dir / "train.jsonl", schema)
    valid = read_requests(data_dir / "valid.jsonl", schema) if (data_dir / "valid.jsonl").is_file() else []
    try:
        ranker.fit(train, schema, valid or None, seed)
    except ValueError as exc:  # data the baseline cannot learn from (labels, a missing feature)
        raise DataError(f"fit-baseline {name} on {data_dir}: {exc}") from None
    ranker.save(out)
    return ranker


def load_baseline(folder: str | Path) -> Baseline:
    """The baseline saved in `folder` (its manifest names the kind)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest.kind not in BASELINES:
        raise DataError(f"{folder / MANIFEST_FILE}: unknown ranker kind {manifest.kind!r}; known: {', '.join(BASELINES)}")
    try:
        return BASELINES[manifest.kind].load(folder, manifest)
    except Exception as exc:  # noqa: BLE001 - a missing or damaged file: say which folder, not a traceback
        raise DataError(f"{folder}: cannot load the saved {manifest.kind} ranker: {type(exc).__name__}: {exc}") from exc
