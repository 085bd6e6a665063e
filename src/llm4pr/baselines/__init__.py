"""The paper's baselines, each a `Ranker` with `fit(train, schema, valid=None, seed=0)`.

`BASELINES` maps a name (as used in configs and result tables) to the ranker class;
`build_baseline(name, **kwargs)` constructs one. See docs/baselines.md for losses and sizes.
"""

from __future__ import annotations

from typing import Any

from llm4pr.baselines.base import Baseline, ScoringRanker, descending_order
from llm4pr.baselines.features import RANKING_STAGE_FEATURES, Featuriser, uses_ranking_stage_signals
from llm4pr.baselines.heuristics import ItemQualityRanker, RankingStageOrderRanker
from llm4pr.baselines.listwise import DLCMRanker, PRMRanker, Seq2SlateRanker, SetRankRanker
from llm4pr.baselines.ltr import LambdaMARTRanker, LTRDNNRanker
from llm4pr.baselines.neural import NeuralListRanker
from llm4pr.baselines.protocols import (
    CANDIDATE_ORDERS,
    CandidateOrder,
    RankingStage,
    reorder_by_ranking_stage,
    schema_with_signals,
)

BASELINES: dict[str, type] = {
    "initial": RankingStageOrderRanker,
    "item_quality": ItemQualityRanker,
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


__all__ = [
    "BASELINES",
    "Baseline",
    "CANDIDATE_ORDERS",
    "RANKING_STAGE_FEATURES",
    "CandidateOrder",
    "DLCMRanker",
    "Featuriser",
    "ItemQualityRanker",
    "LTRDNNRanker",
    "LambdaMARTRanker",
    "NeuralListRanker",
    "PRMRanker",
    "RankingStage",
    "RankingStageOrderRanker",
    "ScoringRanker",
    "Seq2SlateRanker",
    "SetRankRanker",
    "build_baseline",
    "descending_order",
    "reorder_by_ranking_stage",
    "schema_with_signals",
    "uses_ranking_stage_signals",
]
