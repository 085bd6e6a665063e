"""Evaluation: ranking metrics (the only scoring code) and run checking and scoring."""

from llm4pr.evaluation.evaluate import check_run, evaluate_run, format_report_table
from llm4pr.evaluation.metrics import (
    MetricReport,
    average_precision_at_k,
    dcg_at_k,
    mrr_at_k,
    ndcg_at_k,
    relevant_flags,
    score_requests,
)

__all__ = [
    "MetricReport",
    "average_precision_at_k",
    "check_run",
    "dcg_at_k",
    "evaluate_run",
    "format_report_table",
    "mrr_at_k",
    "ndcg_at_k",
    "relevant_flags",
    "score_requests",
]
