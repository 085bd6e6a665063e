"""The LLM4PR ranker: requests in, permutations out, batched, windowed, never losing a candidate.

Each batch of requests is laid out with the main-task prompt (`RequestPrompter`, the same path
training examples take), encoded once, and decoded with the chosen mode; the instruction every
prompt starts with is encoded once per ranker and its keys and values reused (`PrefixCache`).
Lists longer than the window are ranked with sliding windows (`window.sliding_window_rank`: all
requests of a batch advance one window per round, so windows are batched too). If anything fails
for a batch, its requests get the ranking-stage order with `fallback: true` and the error, never
an exception. Its settings are one `InferenceConfig`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm4pr.data.errors import DataError
from llm4pr.data.rerank import check_first_stage_feature, with_first_stage_estimate
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.inference.config import InferenceConfig
from llm4pr.inference.decoding import Decoded, PrefixCache, decode
from llm4pr.inference.window import sliding_window_rank
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.prompts import PromptBuilder, collate, shared_prefix
from llm4pr.model.request_prompts import RequestPrompter
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.rankers.base import Mode, Ranker, fallback_result

logger = logging.getLogger(__name__)


class LLM4PRRanker(Ranker):
    """The LLM's `Ranker`, over a model in memory or a checkpoint (its saved form, written by the
    trainer and loaded by `from_pretrained`).

    Settings come as an `InferenceConfig`, or as its fields by keyword (`mode="first_token"`), which
    override `config`. `cache_prefix` (reuse the instruction's keys and values; off only to check
    that it changes nothing) and `progress` (a bar per `rank` call, for commands) are not settings.
    """

    name = "llm4pr"

    def __init__(
        self,
        model: LLM4PRModel,
        builder: PromptBuilder,
        config: InferenceConfig | None = None,
        *,
        cache_prefix: bool = True,
        progress: bool = False,
        **settings: Any,
    ) -> None:
        self.config = (config or InferenceConfig()).replace(**settings)
        if self.config.window > builder.max_candidates:
            raise DataError(
                f"window {self.config.window} is more than the model's {builder.max_candidates} candidate identifiers: "
                f"use a window of at most {builder.max_candidates}"
            )
        self.model = model
        self.builder = builder
        self.prompter = RequestPrompter.for_model(model, builder)
        # (score feature, text feature) of the in-call BM25 estimate (`model.first_stage_bm25`), if any
        feature = self.prompter.first_stage_bm25
        self._estimate = (feature, check_first_stage_feature(model.schema, feature)) if feature is not None else None
        self.prefix_cache = PrefixCache() if cache_prefix else None
        self.progress = progress

    @property
    def schema(self) -> FeatureSchema:
        return self.model.schema

    @classmethod
    def from_pretrained(
        cls, path: str | Path, config: InferenceConfig | None = None, *, progress: bool = False, **settings: Any
    ) -> LLM4PRRanker:
        """Load a checkpoint for inference (LoRA merged) on `config.device`; `config.quantize="int8"`:
        see `inference.quantize`. `settings` override `config`'s fields, as in the constructor."""
        from llm4pr.inference.quantize import quantize_int8
        from llm4pr.model.factory import load_model

        config = (config or InferenceConfig()).replace(**settings)
        dtype = "float32" if config.quantize == "int8" else config.dtype
        model, tokenizer = load_model(resolve_checkpoint(path), device=config.device, dtype=dtype)
        if config.quantize == "int8":
            quantize_int8(model)
        return cls(model, PromptBuilder(tokenizer, model.config.identifiers), config, progress=progress)

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        mode = mode or self.config.mode
        results: list[RankResult] = []
        bar = tqdm(total=len(requests), desc=f"ranking ({mode})", unit="req", disable=not self.progress)
        for chunk in _chunks(requests, self.config.batch_size):
            started = time.perf_counter()
            try:
                ranked = self._rank_batch(chunk, mode)
            except Exception as exc:  # a model failure must not lose the requests: fall back
                logger.exception("post-ranking failed for %d request(s); using the ranking-stage order", len(chunk))
                ranked = [fallback_result(r, f"{type(exc).__name__}: {exc}") for r in chunk]
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            for result in ranked:
                result.latency_ms = round(elapsed_ms, 3)
            results.extend(ranked)
            bar.update(len(chunk))
        bar.close()
        return results

    def explain(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None, occlusion: bool = False) -> list[RankResult]:
        """`rank`, each result with its explanation (`inference.explain`: QIA attention over fields,
        the identifier logit's parts, and with `occlusion` the score change per field set missing)."""
        from llm4pr.inference.explain import explain_results

        mode = mode or self.config.mode
        results = self.rank(requests, mode=mode)
        rescore = (lambda variants: self.rank(variants, mode="first_token")) if occlusion else None
        return explain_results(
            self.model, self.prompter, requests, results, mode=mode, window=self.config.window,
            shifts=self.config.shifts, batch_size=self.config.batch_size, rescore=rescore,
        )

    def prompt_length(self, request: PostRankRequest) -> int:
        """Input tokens of the request's (first window's) main-task prompt."""
        prompt, _ = self.prompter.main_task(request, range(min(len(request.candidates), self.config.window)))
        return len(prompt)

    def _rank_batch(self, requests: Sequence[PostRankRequest], mode: Mode) -> list[RankResult]:
        repaired = [False] * len(requests)
        scores: list[list[float] | None] = [None] * len(requests)

        def rank_windows(active: list[int], shown: list[list[int]]) -> list[list[int]]:
            decoded = self._decode([requests[i] for i in active], shown, mode)
            for i, result in zip(active, decoded, strict=True):
                repaired[i] = repaired[i] or result.repaired
                if len(requests[i].candidates) <= self.config.window:  # one window: its scores cover the list
                    scores[i] = result.scores
            return [result.order for result in decoded]

        if self._estimate is not None:
            # A long list's windows would each recompute the estimate over ALL its candidates (the
            # prompter's rule): once per request is the same numbers, n/stride times cheaper.
            requests = [with_first_stage_estimate(r, *self._estimate) if len(r.candidates) > self.config.window else r for r in requests]
        sizes = [len(r.candidates) for r in requests]
        orders = sliding_window_rank(sizes, self.config.window, self.config.stride, rank_windows)
        results = []
        for request, order, was_repaired, request_scores in zip(requests, orders, repaired, scores, strict=True):
            ids = request.candidate_ids
            result = RankResult(request_id=request.request_id, ranking=[ids[p] for p in order], mode=mode)
            if request_scores is not None:
                result.scores = [request_scores[p] for p in order]
            if mode == "unconstrained":
                result.repaired = was_repaired
            results.append(result)
        return results

    def _decode(self, requests: Sequence[PostRankRequest], shown: Sequence[list[int]], mode: Mode) -> list[Decoded]:
        if mode != "first_token" or self.config.shifts == 1:
            return self._decode_once(requests, shown, mode)
        return self._decode_shift_averaged(requests, shown)

    def _decode_shift_averaged(self, requests: Sequence[PostRankRequest], shown: Sequence[list[int]]) -> list[Decoded]:
        """`first_token` scored over `config.shifts` cyclic shifts of each shown list, then averaged.

        Why: a candidate's score depends on where it is shown and which identifier it gets; the
        mean log-probability over rotations cancels much of that bias (permutation
        self-consistency), at `shifts` forward passes per request."""
        totals = [[0.0] * len(positions) for positions in shown]
        shifts = self.config.shifts
        for shift in range(shifts):
            rotated = [_rotate(list(range(len(p))), shift) for p in shown]
            decoded = self._decode_once(requests, [[p[i] for i in r] for p, r in zip(shown, rotated, strict=True)], "first_token")
            for total, rotation, result in zip(totals, rotated, decoded, strict=True):
                log_probs = torch.tensor(result.scores).log_softmax(-1).tolist()  # type: ignore[arg-type]
                for slot, index in enumerate(rotation):
                    total[index] += log_probs[slot] / shifts
        return [Decoded(order=sorted(range(len(t)), key=lambda i: -t[i]), scores=t) for t in totals]

    def _decode_once(self, requests: Sequence[PostRankRequest], shown: Sequence[list[int]], mode: Mode) -> list[Decoded]:
        laid_out = [self.prompter.main_task(request, positions) for request, positions in zip(requests, shown, strict=True)]
        prompts = [prompt for prompt, _ in laid_out]
        inputs = [entities for _, entities in laid_out]
        prefix = shared_prefix(prompts) if self.prefix_cache is not None else []
        batch = collate(prompts, self.builder.tokenizer.pad_token_id, skip_prefix=len(prefix))
        with torch.inference_mode():
            cache = self.prefix_cache.for_batch(self.model, prefix, len(prompts)) if prefix and self.prefix_cache else None
            return decode(
                self.model,
                batch,
                inputs,
                self.builder.identifier_ids,
                [len(p) for p in shown],
                mode=mode,
                eos_token_id=self.builder.tokenizer.eos_token_id,
                prefix=cache,
                cached_prefix=len(prefix),
            )


def _rotate(order: list[int], shift: int) -> list[int]:
    shift %= max(len(order), 1)
    return order[shift:] + order[:shift]


def _chunks(items: Sequence[PostRankRequest], size: int) -> Iterator[Sequence[PostRankRequest]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
