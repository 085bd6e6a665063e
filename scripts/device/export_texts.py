"""Export the MiniLM vectors of every text in a prepared ML-100K folder (titles, queries) into a
table that `TextEncoder` serves without loading the model (`$LLM4PR_TEXT_EMBEDDINGS`): the
lent GPU machine here can neither download nor hold every asset at once.

    .venv/bin/python scripts/device/export_texts.py data/ml100k .device/a/texts.safetensors
"""

import sys

import torch

from llm4pr.data.jsonl import read_requests
from llm4pr.data.movielens_protocol import PSEUDO_QUERIES
from llm4pr.data.schema import FeatureKind, FeatureSchema
from llm4pr.features.text_encoder import load_text_encoder


def main(data: str, out: str) -> None:
    torch.set_num_threads(1)
    schema = FeatureSchema.load(f"{data}/schema.json")
    text_names = [s.name for s in schema.features if s.kind is FeatureKind.text]
    texts = list(PSEUDO_QUERIES)
    for split in ("train", "valid", "test"):
        for request in read_requests(f"{data}/{split}.jsonl"):
            texts.append(request.query)
            for item in [*request.history, *request.candidates]:
                texts.extend(item.features[n] for n in text_names if item.features.get(n))
    load_text_encoder("all-minilm-l6-v2").export(texts, out)
    print(len(set(texts)), "texts exported to", out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
