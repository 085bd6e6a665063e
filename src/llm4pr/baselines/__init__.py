"""The paper's baselines, each a `FittableRanker`: `fit(train, schema, valid=None, seed=0)`, `save`.

`BASELINES` maps a name (as used in configs, result tables and saved rankers' manifests) to the
ranker class; `build_baseline(name, **kwargs)` constructs one, `load_baseline(folder)` reads a
saved one back. See docs/baselines.md for losses and sizes.
"""

from llm4pr.baselines.base import Baseline, FeaturisedRanker, ScoringRanker, descending_order
from llm4pr.baselines.bi_encoder import BiEncoderRanker
from llm4pr.baselines.collaborative import MatrixFactorisationRanker
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
from llm4pr.baselines.registry import BASELINES, build_baseline, fit_and_save_baseline, load_baseline

__all__ = [
    "BASELINES",
    "Baseline",
    "BiEncoderRanker",
    "CANDIDATE_ORDERS",
    "RANKING_STAGE_FEATURES",
    "CandidateOrder",
    "DLCMRanker",
    "FeaturisedRanker",
    "Featuriser",
    "ItemQualityRanker",
    "LTRDNNRanker",
    "LambdaMARTRanker",
    "MatrixFactorisationRanker",
    "NeuralListRanker",
    "PRMRanker",
    "RankingStage",
    "RankingStageOrderRanker",
    "ScoringRanker",
    "Seq2SlateRanker",
    "SetRankRanker",
    "build_baseline",
    "descending_order",
    "fit_and_save_baseline",
    "load_baseline",
    "reorder_by_ranking_stage",
    "schema_with_signals",
    "uses_ranking_stage_signals",
]
