"""The ranker interface: the only way the CLI, the benchmark and the server reach a model."""

from llm4pr.rankers.base import InitialOrderRanker, Ranker

__all__ = ["InitialOrderRanker", "Ranker"]
