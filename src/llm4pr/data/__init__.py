"""Data: the request format, the feature schema, JSON-lines I/O and dataset converters."""

from llm4pr.data.errors import DataError
from llm4pr.data.requests import Item, PostRankRequest, RankResult, User
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec

__all__ = [
    "DataError",
    "FeatureKind",
    "FeatureSchema",
    "FeatureSpec",
    "Item",
    "PostRankRequest",
    "RankResult",
    "User",
]
