"""The LLM4PR ranker: requests in, permutations out, batched, windowed, never losing a candidate.

Each batch of requests is laid out with the main-task prompt, encoded once, and decoded with the
chosen mode; the instruction every prompt starts with is encoded once per ranker and its keys and
values reused (`PrefixCache`). Lists longer than the window are ranked with sliding windows (all requests of a
batch advance one window per round, so windows are batched too). If anything fails for a batch,
its requests get the ranking-stage order with `fallback: true` and the error, never an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.data.schema import FeatureSchema
from llm4pr.inference.decoding import Decoded, PrefixCache, decode
from llm4pr.inference.window import apply_window, validate_window, window_schedule
from llm4pr.model.llm4pr import LLM4PRModel, PromptInputs
from llm4pr.model.prompts import Prompt, PromptBuilder, collate, entity_texts, shared_prefix
from llm4pr.model.run_folder import resolve_checkpoint
from llm4pr.rankers.base import MODES, Mode, Ranker, fallback_result

logger = logging.getLogger(__name__)


class LLM4PRRanker(Ranker):
    """The LLM's `Ranker`, over a model in memory or a checkpoint (its saved form, written by the
    trainer and loaded by `from_pretrained`)."""

    name = "llm4pr"

    def __init__(
        self,
        model: LLM4PRModel,
        builder: PromptBuilder,
        mode: Mode = "generate",
        batch_size: int = 8,
        window: int = 20,
        stride: int = 10,
        cache_prefix: bool = True,
        shifts: int = 1,
        progress: bool = False,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown inference mode '{mode}'; choose one of {', '.join(MODES)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if shifts < 1:
            raise ValueError(f"shifts must be at least 1, got {shifts}")
        validate_window(window, stride, builder.max_candidates)
        self.shifts = shifts
        self.model = model
        self.builder = builder
        self.mode = mode
        self.batch_size = batch_size
        self.window = window
        self.stride = stride
        self.prefix_cache = PrefixCache() if cache_prefix else None
        self.progress = progress  # a progress bar per `rank` call (for commands, not for the server)

    @property
    def schema(self) -> FeatureSchema:
        return self.model.schema

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "cpu", quantize: str | None = None, **kwargs: object) -> "LLM4PRRanker":
        """Load a checkpoint for inference (LoRA merged); `quantize="int8"`: see `inference.quantize`."""
        from llm4pr.inference.quantize import QUANTIZATIONS, quantize_int8
        from llm4pr.model.factory import load_model

        if quantize is not None and quantize not in QUANTIZATIONS:
            raise ValueError(f"unknown quantization '{quantize}'; choose one of {', '.join(QUANTIZATIONS)}")
        model, tokenizer = load_model(resolve_checkpoint(path), device=device)
        if quantize == "int8":
            quantize_int8(model)
        builder = PromptBuilder(tokenizer, model.config.identifiers)
        return cls(model, builder, **kwargs)  # type: ignore[arg-type]

    def rank(self, requests: Sequence[PostRankRequest], *, mode: Mode | None = None) -> list[RankResult]:
        mode = mode or self.mode
        results: list[RankResult] = []
        bar = tqdm(total=len(requests), desc=f"ranking ({mode})", unit="req", disable=not self.progress)
        for chunk in _chunks(requests, self.batch_size):
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

    def prompt_length(self, request: PostRankRequest) -> int:
        """Input tokens of the request's (first window's) main-task prompt."""
        return len(self._prompt(request, list(range(min(len(request.candidates), self.window)))))

    def _rank_batch(self, requests: Sequence[PostRankRequest], mode: Mode) -> list[RankResult]:
        orders = [list(range(len(r.candidates))) for r in requests]
        schedules = [window_schedule(len(r.candidates), self.window, self.stride) for r in requests]
        repaired = [False] * len(requests)
        scores: list[list[float] | None] = [None] * len(requests)
        for round_index in range(max(len(s) for s in schedules)):
            active = [i for i, s in enumerate(schedules) if round_index < len(s)]
            spans = [schedules[i][round_index] for i in active]
            decoded = self._decode([requests[i] for i in active], [orders[i][a:b] for i, (a, b) in zip(active, spans)], mode)
            for i, span, result in zip(active, spans, decoded, strict=True):
                orders[i] = apply_window(orders[i], span, result.order)
                repaired[i] = repaired[i] or result.repaired
                if len(schedules[i]) == 1:
                    scores[i] = result.scores
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

    def _inputs(self, request: PostRankRequest, positions: Sequence[int]) -> PromptInputs:
        """The request's entities as shown: recent history, and the candidates at `positions`."""
        max_history = self.model.config.max_history
        history = list(request.history[-max_history:]) if max_history else []
        candidates = [request.candidates[p] for p in positions]
        return PromptInputs(query=request.query, user=request.user, history=history, candidates=candidates)

    def _prompt(self, request: PostRankRequest, positions: Sequence[int]) -> Prompt:
        shown = self._inputs(request, positions)
        texts = None
        if self.model.config.prompt_style == "text":
            texts = entity_texts(self.model.schema, request.user, shown.history, shown.candidates)
        return self.builder.main_task(request.query, len(shown.history), len(shown.candidates), texts=texts)

    def _decode(self, requests: Sequence[PostRankRequest], shown: Sequence[list[int]], mode: Mode) -> list[Decoded]:
        if mode != "first_token" or self.shifts == 1:
            return self._decode_once(requests, shown, mode)
        return self._decode_shift_averaged(requests, shown)

    def _decode_shift_averaged(self, requests: Sequence[PostRankRequest], shown: Sequence[list[int]]) -> list[Decoded]:
        """`first_token` scored over `shifts` cyclic shifts of each shown list, then averaged.

        Why: a candidate's score depends on where it is shown and which identifier it gets; the
        mean log-probability over rotations cancels much of that bias (permutation
        self-consistency), at `shifts` forward passes per request."""
        totals = [[0.0] * len(positions) for positions in shown]
        for shift in range(self.shifts):
            rotated = [_rotate(list(range(len(p))), shift) for p in shown]
            decoded = self._decode_once(requests, [[p[i] for i in r] for p, r in zip(shown, rotated, strict=True)], "first_token")
            for total, rotation, result in zip(totals, rotated, decoded, strict=True):
                log_probs = torch.tensor(result.scores).log_softmax(-1).tolist()  # type: ignore[arg-type]
                for slot, index in enumerate(rotation):
                    total[index] += log_probs[slot] / self.shifts
        return [Decoded(order=sorted(range(len(t)), key=lambda i: -t[i]), scores=t) for t in totals]

    def _decode_once(self, requests: Sequence[PostRankRequest], shown: Sequence[list[int]], mode: Mode) -> list[Decoded]:
        prompts, inputs = [], []
        for request, positions in zip(requests, shown, strict=True):
            prompts.append(self._prompt(request, positions))
            inputs.append(self._inputs(request, positions))
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
