"""Is one ranker better than another on these test requests? A paired bootstrap over requests.

The spread over training seeds says how much a row moves when it is trained again; it says nothing
about the test requests, which are one sample of the users. Two rows scored on the same requests
are compared request by request: the mean difference, and a 95% interval from resampling the
requests with replacement (the percentile bootstrap of Efron and Tibshirani, as IR evaluations
use it: Sakai, "Evaluating evaluation metrics based on the bootstrap", SIGIR 2006).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedDifference:
    """Mean of (a - b) over the requests where both are defined, with its bootstrap interval."""

    mean: float
    low: float
    high: float
    n: int

    def as_dict(self) -> dict[str, float | int]:
        return {key: round(value, 4) if isinstance(value, float) else value for key, value in asdict(self).items()}


def paired_bootstrap(
    a: Sequence[float | None], b: Sequence[float | None], resamples: int = RESAMPLES, seed: int = 0
) -> PairedDifference:
    """The difference a - b of two rows' per-request values (same requests, same order), with a
    `CONFIDENCE` percentile interval from `resamples` resamplings of the requests. Requests where
    either value is undefined (None: no relevant candidate) are left out of both."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same requests: {len(a)} against {len(b)}")
    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    if not pairs:
        raise ValueError("no request has a defined value in both rows")
    differences = np.array([x - y for x, y in pairs], dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), size=(resamples, len(differences)))].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return PairedDifference(mean=float(differences.mean()), low=float(low), high=float(high), n=len(differences))
