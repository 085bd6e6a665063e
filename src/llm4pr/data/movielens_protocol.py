"""The paper's MovieLens protocol: per-user segments of 5 ratings become post-ranking requests.

Input is `MovieLensData`, the common in-memory form that every raw-layout reader in
`llm4pr.data.movielens` produces; nothing here reads or writes files.

Decisions, each one chosen so that no held-out label can leak into training inputs:

- Per user, ratings are sorted by timestamp with a stable sort, so ties keep file order.
- The sorted ratings are cut into consecutive segments of `segment_length` (5). The remainder
  (`n % 5` ratings) is dropped from the OLDEST end, never the newest: the test segment is then
  always the user's latest 5 ratings, as a deployed post-ranker would meet them. The dropped
  ratings are not candidates of any request, but they stay in the user's history and count as
  training interactions.
- Split per user: the last segment is the test request, the second-to-last the validation
  request, the others training requests. A user with one segment has only a test request,
  with two a validation and a test request, with fewer than 5 ratings no request at all.
- Training interactions are every rating outside validation and test segments, the dropped
  remainders and the ratings of users without requests included.
- Statistics are as of the request (ordered target statistics, as CatBoost's): a request's time
  is its first candidate's timestamp, and the user's and every item's (history and candidates)
  `avg_rating` and `rating_count` count the training interactions strictly before it, in every
  split alike. A training request's own labels are then never inside its features (they are not
  earlier than itself), nor is any validation or test label inside any request's. Counting all
  training interactions instead, as this module did before, put a training request's own ratings
  into its item averages: features better than any held-out request ever sees (docs/datasets.md).
  With `prior_weight` m > 0 the average is shrunk toward the global mean of the same earlier
  ratings, (sum + m * mean) / (count + m), so that a few early ratings do not read as a verdict.
  Means are rounded to 4 decimals; an entity without earlier training ratings gets
  `rating_count` 0 and no `avg_rating` (absent = missing).
- A request's candidates are its segment in timestamp order (the "ranking-stage order") with
  `label` = rating; the target order is the candidates sorted by label, descending, ties in
  input order. Its history is the user's last `history_length` ratings strictly before the
  segment (by sorted position), oldest first, with `label` = the user's rating.
- Cold items (`cold_items` > 0, the cold-start protocol): a `cold_items` fraction of the rated
  items, drawn with `random.Random(f"cold:{cold_seed}")` from the items in id order, is held out
  of everything but the held-out candidates: their ratings are not training interactions (so no
  statistic counts them and no collaborative model learns them), not candidates of training
  requests (a training request left with fewer than 2 candidates is dropped), and not history of
  any request (a history is the user's last `history_length` ratings of other items). Validation
  and test requests keep their candidates; `cold_candidates` says how many of each request's are
  cold. This is the case a language model exists for: an item nobody has rated, known by its
  title, genres and year only.
- request_id is `u{user_id}-s{segment index}`, segments numbered from 0 (oldest) per user; the
  pseudo-query is drawn with `random.Random(f"{seed}:{request_id}")`, so it depends on the seed
  and the request only, never on iteration order.
"""

from __future__ import annotations

import bisect
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from llm4pr.data.converters import number_value
from llm4pr.data.schema import FeatureKind, FeatureSchema, FeatureSpec

Split = Literal["train", "valid", "test"]
SPLITS: tuple[Split, ...] = ("train", "valid", "test")

# (timestamp, item id, rating) of one user's rating.
Rating = tuple[float, str, float]
# (rating count, rating sum) of a user or an item.
RatingTotals = tuple[int, float]

PSEUDO_QUERIES = (
    "what to watch",
    "movie recommendations",
    "a good film for tonight",
    "something to watch this weekend",
    "films I might enjoy",
    "what movie should I see next",
    "recommend me a movie",
    "movies for a night in",
)

AGE_DESCRIPTION = "{value:.0f} years old"


@dataclass
class MovieLensData:
    """One MovieLens dataset as the readers deliver it, whatever its raw layout.

    `users` and `items` hold the static features (user: gender, age, occupation; item: title,
    genres, year) with missing values left out; `ratings` holds each user's ratings in file
    order, already cleaned of bad and duplicate rows. `skipped_rows` and `warnings` count
    every row the reader dropped or kept incomplete, keyed "file: reason".
    """

    dataset: str
    layout: str
    users: dict[str, dict[str, Any]]
    items: dict[str, dict[str, Any]]
    ratings: dict[str, list[Rating]]
    skipped_rows: Counter[str] = field(default_factory=Counter)
    warnings: Counter[str] = field(default_factory=Counter)
    input_files: tuple[Path, ...] = ()
    age_description: str = AGE_DESCRIPTION


@dataclass(frozen=True)
class Protocol:
    seed: int = 0
    history_length: int = 10
    segment_length: int = 5
    prior_weight: float = 0.0
    cold_items: float = 0.0
    cold_seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if self.segment_length < 1:
            raise ValueError(f"segment_length must be at least 1, got {self.segment_length}")
        if self.history_length < 0:
            raise ValueError(f"history_length must be at least 0, got {self.history_length}")
        if not self.prior_weight >= 0 or self.prior_weight == float("inf"):  # NaN fails the first test
            raise ValueError(f"prior_weight must be a finite number >= 0, got {self.prior_weight}")
        if not 0.0 <= self.cold_items < 1.0:  # NaN fails too
            raise ValueError(f"cold_items must be a fraction in [0, 1), got {self.cold_items}")


def build_schema(data: MovieLensData) -> FeatureSchema:
    """The features every MovieLens request carries, with their description templates."""

    def spec(owner: Literal["user", "item"], name: str, kind: FeatureKind, description: str) -> FeatureSpec:
        return FeatureSpec(name=name, owner=owner, kind=kind, description=description)

    cat, multi, num, text = (
        FeatureKind.categorical,
        FeatureKind.multi_categorical,
        FeatureKind.numerical,
        FeatureKind.text,
    )
    return FeatureSchema(
        dataset=data.dataset,
        label="rating 1-5",
        features=(
            spec("user", "gender", cat, "gender {value}"),
            spec("user", "age", num, data.age_description),
            spec("user", "occupation", cat, "works as {value}"),
            spec("user", "avg_rating", num, "gives an average rating of {value:.1f}"),
            spec("user", "rating_count", num, "has rated {value:.0f} movies"),
            spec("item", "title", text, "titled {value}"),
            spec("item", "genres", multi, "genres {value}"),
            spec("item", "year", num, "released in {value:.0f}"),
            spec("item", "avg_rating", num, "average rating {value:.1f}"),
            spec("item", "rating_count", num, "rated {value:.0f} times"),
        ),
    )


def segment_starts(length: int, segment_length: int) -> range:
    """Sorted positions where segments start: the remainder is left out at the oldest end."""
    return range(length % segment_length, length, segment_length)


def segment_split(index: int, count: int) -> Split:
    if index == count - 1:
        return "test"
    if index == count - 2:
        return "valid"
    return "train"


def training_cutoff(length: int, segment_length: int) -> int:
    """Sorted positions before this one are training interactions (the last two segments are held out)."""
    return length - min(2, length // segment_length) * segment_length


def pseudo_query(seed: int, request_id: str) -> str:
    return random.Random(f"{seed}:{request_id}").choice(PSEUDO_QUERIES)


def id_sort_key(entity_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then any other ids in string order: a stable output order."""
    return (0, int(entity_id), "") if entity_id.isdigit() else (1, 0, entity_id)


class TrainingStatistics:
    """Rating count and sum of every user and item over the training interactions strictly before
    a given time, answered by binary search over each entity's sorted timestamps."""

    def __init__(self, interactions: list[tuple[float, str, str, float]], prior_weight: float) -> None:
        """`interactions` are (timestamp, user, item, rating) of the training interactions."""
        self.prior_weight = prior_weight
        ordered = sorted(interactions, key=itemgetter(0))
        self._all = self._cumulative([(time, rating) for time, _, _, rating in ordered])
        by_user: dict[str, list[tuple[float, float]]] = defaultdict(list)
        by_item: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for time, user, item, rating in ordered:
            by_user[user].append((time, rating))
            by_item[item].append((time, rating))
        self._users = {user: self._cumulative(ratings) for user, ratings in by_user.items()}
        self._items = {item: self._cumulative(ratings) for item, ratings in by_item.items()}

    @staticmethod
    def _cumulative(ratings: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
        """Timestamps in order and the running rating sum after each."""
        times, sums, total = [], [], 0.0
        for time, rating in ratings:
            total += rating
            times.append(time)
            sums.append(total)
        return times, sums

    @staticmethod
    def _before(series: tuple[list[float], list[float]] | None, time: float) -> RatingTotals:
        if series is None:
            return 0, 0.0
        count = bisect.bisect_left(series[0], time)
        return count, (series[1][count - 1] if count else 0.0)

    def features(self, kind: Literal["user", "item"], entity: str, time: float) -> dict[str, Any]:
        """`avg_rating` (absent without earlier ratings) and `rating_count` of a user or an item as of `time`."""
        count, total = self._before((self._users if kind == "user" else self._items).get(entity), time)
        if not count:
            return {"rating_count": 0}
        weight = self.prior_weight
        if weight:
            all_count, all_total = self._before(self._all, time)
            average = (total + weight * all_total / all_count) / (count + weight)  # all_count >= count > 0
        else:
            average = total / count
        return {"avg_rating": round(average, 4), "rating_count": count}


class MovieLensRequests:
    """The requests of one dataset under one protocol.

    Static features and the statistics' search tables are computed once; each split's requests
    are produced lazily, because ML-1M's requests held as dicts would take gigabytes.
    """

    def __init__(self, data: MovieLensData, protocol: Protocol) -> None:
        self.protocol = protocol
        self.timelines = {
            user: sorted(data.ratings[user], key=itemgetter(0))
            for user in sorted(data.ratings, key=id_sort_key)
            if data.ratings[user]
        }
        self.user_features = {user: data.users.get(user, {}) for user in self.timelines}
        rated_items = {item for timeline in self.timelines.values() for _, item, _ in timeline}
        self.item_features = {item: data.items.get(item, {}) for item in sorted(rated_items, key=id_sort_key)}
        self.cold_items = cold_item_draw(list(self.item_features), protocol.cold_items, protocol.cold_seed)
        # per user, the sorted positions of ratings of warm items: what histories are made of
        self._warm_positions = {
            user: [i for i, (_, item, _) in enumerate(timeline) if item not in self.cold_items] for user, timeline in self.timelines.items()
        }
        self.statistics = TrainingStatistics(self._training_interactions(), protocol.prior_weight)

    def _training_interactions(self) -> list[tuple[float, str, str, float]]:
        """(timestamp, user, item, rating) of every rating of a warm item outside validation and test segments."""
        length = self.protocol.segment_length
        return [
            (time, user, item, rating)
            for user, timeline in self.timelines.items()
            for time, item, rating in timeline[: training_cutoff(len(timeline), length)]
            if item not in self.cold_items
        ]

    def requests(self, split: Split) -> Iterator[dict[str, Any]]:
        """The split's requests as JSON-ready dicts, users in id order, segments oldest first.

        Static feature dicts are shared between requests: serialise them, never mutate.
        """
        for user, timeline, index, start, candidates in self._segments(split):
            yield self._request(user, timeline, index, start, candidates)

    def _segments(self, split: Split) -> Iterator[tuple[str, list[Rating], int, int, list[Rating]]]:
        """(user, timeline, segment index, start, candidate ratings) of the split's requests."""
        length = self.protocol.segment_length
        for user, timeline in self.timelines.items():
            starts = segment_starts(len(timeline), length)
            for index, start in enumerate(starts):
                if segment_split(index, len(starts)) != split:
                    continue
                candidates = timeline[start : start + length]
                if split == "train" and self.cold_items:
                    candidates = [rating for rating in candidates if rating[1] not in self.cold_items]
                    if len(candidates) < 2:
                        continue  # nothing left to rank
                yield user, timeline, index, start, candidates

    def _request(self, user: str, timeline: list[Rating], index: int, start: int, candidates: list[Rating]) -> dict[str, Any]:
        request_id = f"u{user}-s{index}"
        warm = self._warm_positions[user]
        before = bisect.bisect_left(warm, start)  # warm ratings strictly before the segment
        history = warm[max(0, before - self.protocol.history_length) : before] if self.protocol.history_length else []
        time = timeline[start][0]  # the request's time: its segment's first timestamp
        user_features = {**self.user_features[user], **self.statistics.features("user", user, time)}
        return {
            "request_id": request_id,
            "query": pseudo_query(self.protocol.seed, request_id),
            "user": {"id": user, "features": user_features},
            "history": [self._item(timeline[position], time) for position in history],
            "candidates": [self._item(rating, time) for rating in candidates],
        }

    def cold_candidates(self) -> dict[str, dict[str, int]]:
        """Per split, request id -> number of cold candidates, for the requests that have any."""
        return {
            split: {
                f"u{user}-s{index}": cold
                for user, _, index, _, candidates in self._segments(split)
                if (cold := sum(item in self.cold_items for _, item, _ in candidates))
            }
            for split in SPLITS
        }

    def _item(self, rating: Rating, time: float) -> dict[str, Any]:
        """An item entry with its statistics as of the request's `time`."""
        _, item, label = rating
        features = {**self.item_features[item], **self.statistics.features("item", item, time)}
        return {"id": item, "features": features, "label": number_value(label)}

    def counts(self) -> dict[str, Any]:
        """Sizes for the prepare report: interactions by role and requests per split."""
        length = self.protocol.segment_length
        remainder = sum(len(timeline) % length for timeline in self.timelines.values())
        return {
            "users": len(self.timelines),
            "items": len(self.item_features),
            "interactions": sum(len(timeline) for timeline in self.timelines.values()),
            "training_interactions": len(self._training_interactions()),
            "interactions_outside_segments": remainder,
            "users_with_requests": sum(1 for t in self.timelines.values() if len(t) >= length),
            "requests": {split: sum(1 for _ in self._segments(split)) for split in SPLITS},
        }


def cold_item_draw(items: list[str], fraction: float, seed: int) -> frozenset[str]:
    """A `fraction` of `items` (given in id order), drawn with the seed alone deciding."""
    return frozenset(random.Random(f"cold:{seed}").sample(items, round(fraction * len(items)))) if fraction else frozenset()
