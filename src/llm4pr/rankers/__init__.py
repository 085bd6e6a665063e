"""The ranker interface: the only way the CLI, the benchmark and the server reach a model."""

from llm4pr.rankers.base import MODES, SERVED_MODES, FittableRanker, InitialOrderRanker, Mode, Ranker, ServedMode

__all__ = ["MODES", "SERVED_MODES", "FittableRanker", "InitialOrderRanker", "Mode", "Ranker", "ServedMode"]
