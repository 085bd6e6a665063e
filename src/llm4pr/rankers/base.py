"""One interface for every post-ranker: LLM4PR, its ablations and the baselines.

`rank` takes requests and returns one `RankResult` per request, in the same order, each a
permutation of that request's candidate ids. Rankers that can fail on a request (a model error)
answer with the ranking-stage order and mark the result `fallback: true`; they never drop one.

Inference modes (`Mode`), the names every command, config and endpoint uses:
- `generate`: the paper's greedy decoding, CONSTRAINED to identifiers not yet emitted, so the
  output is always a permutation ("generate" is the paper's word; constrained decoding is what
  it does);
- `first_token`: one forward pass, candidates ordered by their identifier's logit at the first
  answer position;
- `unconstrained`: free greedy decoding, then repair (counted): what the model writes unaided.
The first two (`ServedMode`) give the model's own permutation without repair: the server answers
them, benchmark rows and training validation use them. A ranker with a single ranking (every
baseline) accepts any mode and answers with that ranking; its results name the ranker in `mode`.

A `FittableRanker` learns from labelled requests and is saved as a folder that
`llm4pr.loading.load_ranker` reads back: a baseline's folder holds a manifest
(`rankers.saved`), LLM4PR's saved form is its checkpoint.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, Self, get_args

import numpy as np

from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.rankers.explanation import explained_without_attribution

ServedMode = Literal["generate", "first_token"]
Mode = Literal[ServedMode, "unconstrained"]
SERVED_MODES: tuple[ServedMode, ...] = get_args(ServedMode)
MODES: tuple[Mode, ...] = get_args(Mode)


class Ranker(Protocol):
    """What the CLI, the server and the benchmark need of any post-ranker."""

    name: str

    @property
    def schema(self) -> FeatureSchema | None:
        """The feature schema requests are validated against; None: the ranker reads no features."""
        return None

    @abstractmethod
    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        """Post-rank every request; the i-th result answers the i-th request. `mode` None: the
        ranker's default."""

    def explain(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None, occlusion: bool = False) -> list[RankResult]:
        """`rank`, each result carrying its `explanations` (`llm4pr.data.explanations`): positions,
        scores and per-field attributions. `occlusion`: also the score change when each field is set
        to missing (one extra pass per field), where the ranker supports it. This default attributes
        nothing and says so; rankers that can attribute override it."""
        return explained_without_attribution(self, requests, mode)


class FittableRanker(Ranker, Protocol):
    """A ranker that learns from labelled requests, then can be written to a folder."""

    def fit(
        self,
        train_requests: Sequence[PostRankRequest],
        schema: FeatureSchema,
        valid_requests: Sequence[PostRankRequest] | None = None,
        seed: int = 0,
    ) -> Self:
        """Learn from the training requests; `valid_requests` (labelled) may steer early stopping."""
        ...

    def save(self, folder: str | Path) -> None:
        """Write the fitted ranker to `folder`, in a form `llm4pr.loading.load_ranker` reads back."""
        ...


def descending_order(scores: Sequence[float] | np.ndarray) -> list[int]:
    """Indices sorted by score, highest first; equal scores keep their input order (stable)."""
    return [int(i) for i in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")]


def fallback_result(request: PostRankRequest, reason: str) -> RankResult:
    """The ranking-stage order, marked as a fallback with the reason."""
    return RankResult(request_id=request.request_id, ranking=request.candidate_ids, fallback=True, error=reason)


class InitialOrderRanker(Ranker):
    """The ranking stage's order, unchanged: the reference every post-ranker must beat."""

    name = "initial"

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        return [RankResult(request_id=r.request_id, ranking=r.candidate_ids) for r in requests]
