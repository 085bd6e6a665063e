"""A small synthetic post-ranking dataset (schema + requests) for fast tests of models and rankers.

Labels follow the item's `quality` feature plus a user-genre affinity, so a model that reads
the features can beat the ranking-stage order, which is random.
"""

from __future__ import annotations

import random
from pathlib import Path

from llm4pr.data.jsonl import write_jsonl
from llm4pr.data.requests import PostRankRequest
from llm4pr.data.schema import FeatureSchema, FeatureSpec

GENRES = ["Action", "Comedy", "Drama", "Horror"]

TOY_SCHEMA = FeatureSchema(
    dataset="toy",
    label="rating 1-5",
    features=(
        FeatureSpec(name="gender", owner="user", kind="categorical", description="gender {value}"),
        FeatureSpec(name="age", owner="user", kind="numerical", description="{value:.0f} years old"),
        FeatureSpec(name="favourite", owner="user", kind="categorical", description="likes {value}"),
        FeatureSpec(name="title", owner="item", kind="text", description="titled {value}"),
        FeatureSpec(name="genres", owner="item", kind="multi_categorical", description="genres {value}"),
        FeatureSpec(name="quality", owner="item", kind="numerical", description="quality {value:.1f}"),
        FeatureSpec(name="vec", owner="item", kind="embedding", dim=3, description="vector {value}"),
    ),
)


def toy_item(rng: random.Random, item_id: int) -> dict:
    quality = round(rng.uniform(0, 4), 2)
    return {
        "id": str(item_id),
        "features": {
            "title": f"movie number {item_id}",
            "genres": rng.sample(GENRES, 1 + item_id % 2),
            "quality": quality,
            "vec": [rng.uniform(-1, 1) for _ in range(3)],
        },
    }


def toy_requests(n: int, n_candidates: int = 5, seed: int = 0, n_items: int = 40) -> list[PostRankRequest]:
    rng = random.Random(seed)
    items = [toy_item(rng, i) for i in range(n_items)]
    requests = []
    for r in range(n):
        favourite = rng.choice(GENRES)
        user = {"id": str(r % 7), "features": {"gender": rng.choice("MF"), "age": rng.randint(18, 60), "favourite": favourite}}
        chosen = rng.sample(items, n_candidates)
        candidates = []
        for item in chosen:
            score = item["features"]["quality"] + (1.0 if favourite in item["features"]["genres"] else 0.0)
            candidates.append({**item, "label": float(min(5, max(1, round(score + 0.5))))})
        history = [{k: v for k, v in it.items()} for it in rng.sample(items, 3)]
        requests.append(
            PostRankRequest.model_validate(
                {"request_id": f"q{r}", "query": rng.choice(["what to watch", "a good film"]), "user": user, "history": history, "candidates": candidates}
            )
        )
    return requests


def write_toy_data(folder: Path, n_train: int = 40, n_valid: int = 8, n_test: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    TOY_SCHEMA.save(folder / "schema.json")
    write_jsonl(folder / "train.jsonl", toy_requests(n_train, seed=1))
    write_jsonl(folder / "valid.jsonl", toy_requests(n_valid, seed=2))
    write_jsonl(folder / "test.jsonl", toy_requests(n_test, seed=3))
    return folder
