"""BM25 over a list of texts (bm25s with Snowball stemming): the Semanlink converter's first
stage, and the first-stage score that a rerank call does not carry, computed over the call's own
documents (`llm4pr.data.rerank.with_first_stage_estimate`). One tokenisation for both, so that a
score estimated at serving time is the same kind of number the model was trained on."""

from __future__ import annotations

import logging
from importlib import metadata

from llm4pr.data.errors import DataError

BM25_K1, BM25_B = 0.9, 0.4  # Lucene's defaults in Anserini/Pyserini's BEIR runs
SCORE_DECIMALS = 4
BM25_INSTALL = "pip install 'llm4pr[data]'"


class BM25:
    """BM25 (Lucene's formula) over a fixed list of texts: lower-cased words of 2+ characters,
    English stop words removed, Snowball English stemming (PyStemmer)."""

    def __init__(self, texts: list[str]) -> None:
        try:
            import bm25s
            import Stemmer
        except ImportError as exc:
            raise DataError(f"BM25 needs bm25s and PyStemmer: {BM25_INSTALL} ({exc})") from exc
        # bm25s sets its logger to DEBUG, which would print a line to every run's stderr.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._bm25s = bm25s
        self._stemmer = Stemmer.Stemmer("english")
        # Token lists, not ids: bm25s 0.3 cannot build ids for a corpus without one indexable word
        # (every text empty or stop words), which a rerank call may send.
        corpus = self._tokens(texts)
        self._vocab = {token for tokens in corpus for token in tokens}
        self._retriever = bm25s.BM25(method="lucene", k1=BM25_K1, b=BM25_B)
        if self._vocab:
            self._retriever.index(corpus, show_progress=False)
        self._size = len(texts)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        return self._bm25s.tokenize(texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False)

    def scores(self, query: str) -> list[float]:
        """Every text's score for `query`, in text order, to 4 decimals (0 for a text without a query word)."""
        return [round(score, SCORE_DECIMALS) for score in self._exact_scores(query)]

    def rank(self, query: str) -> list[tuple[int, float]]:
        """(text position, score) for every text scoring above 0, best first, ties by position."""
        scores = self._exact_scores(query)
        ranked = sorted((position for position in range(self._size) if scores[position] > 0), key=lambda p: (-scores[p], p))
        return [(position, round(scores[position], SCORE_DECIMALS)) for position in ranked]

    def _exact_scores(self, query: str) -> list[float]:
        tokens = [token for token in self._tokens([query])[0] if token in self._vocab]
        if not tokens:
            return [0.0] * self._size
        return [float(score) for score in self._retriever.get_scores(tokens)]

    @staticmethod
    def versions() -> str:
        """The libraries behind the scores, for provenance."""
        return ", ".join(f"{name} {_version(name)}" for name in ("bm25s", "PyStemmer"))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(version unknown)"
