"""Explaining the LLM ranker's rankings: QIA attention over fields, the identifier logit's parts,
and (optional) occlusion.

Three attributions per candidate (`LLM4PRRanker.explain` attaches them to its results):
- `qia_attention`: the item QIA's attention of the candidate's soft token over its item fields
  (heads averaged; sums to 1); per request, the user QIA's attention over the user fields. It says
  which fields the adapter weighted when it built the token, not how much a field moved the score:
  attention need not be faithful, hence occlusion and `rankers.faithfulness`. The MLP adapter (the
  "w/o QIA" ablation) and text prompts have no such attention: "not available".
- `identifier_logit`: the candidate's identifier logit at the first answer position (the
  first_token score, in one pass over the given order) split into the backbone's logit (`llm`) and
  the parts of the identifier prior the model has (`candidate_prior`: the read-out of the
  candidate's own soft token; `position_prior`; `history_prior`). The terms sum to that logit.
  Not available for lists longer than the window (windows' logits do not compare) or with
  `shifts` > 1 (the score is then a mean log-probability).
- `occlusion` (on request): per field, the change of each candidate's first_token score when the
  field is set to missing on EVERY candidate (item fields) or on the user (user fields): one
  ranking pass per field. Positive: the field raised the score. Ids cannot be set missing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from llm4pr.data.explanations import Attribution, FieldOwner, FieldWeight, not_available
from llm4pr.data.requests import PostRankRequest, RankResult
from llm4pr.features.encoders import ID_FIELD, EntityEncoder
from llm4pr.model.llm4pr import LLM4PRModel
from llm4pr.model.prompts import collate
from llm4pr.model.request_prompts import RequestPrompter
from llm4pr.rankers.explanation import attach, with_missing

Rescore = Callable[[list[PostRankRequest]], list[RankResult]]  # ranks in first_token mode
ID_FIELD_NAME = "(id)"
OCCLUSION_MEANS = "first_token score minus the score with the field missing (item fields: on every candidate)"


def field_names(encoder: EntityEncoder) -> list[tuple[str, list[str]]]:
    """Per encoder field, in its order: the name an explanation shows and the schema features it
    is made of (the numerical features are ONE field; the id field is made of no feature)."""
    named = []
    for index, info in enumerate(encoder.fields):
        if index == 0 and encoder.embed_ids and info.name == ID_FIELD:
            named.append((ID_FIELD_NAME, []))
        elif index == len(encoder.fields) - 1 and encoder.numeric_names:  # the encoder appends it last
            named.append((f"numerical: {', '.join(encoder.numeric_names)}", list(encoder.numeric_names)))
        else:
            named.append((info.name, [info.name]))
    return named


def explain_results(
    model: LLM4PRModel,
    prompter: RequestPrompter,
    requests: Sequence[PostRankRequest],
    results: Sequence[RankResult],
    *,
    mode: str,
    window: int,
    shifts: int,
    batch_size: int,
    rescore: Rescore | None = None,
) -> list[RankResult]:
    """`results` (the ranker's, for `requests`) with their explanations; `rescore` given: occlusion too."""
    attention = [_attention(model, request) for request in requests]
    logits = _identifier_logits(model, prompter, requests, window, shifts, batch_size)
    occluded = _occlusion(model, requests, results, mode, rescore) if rescore is not None else None
    explained = []
    for index, (request, result) in enumerate(zip(requests, results, strict=True)):
        user_attention, item_attention = attention[index]
        per_candidate: dict[str, dict[str, Attribution]] = {}
        for position, candidate in enumerate(request.candidates):
            methods = {"qia_attention": item_attention[position], "identifier_logit": logits[index][position]}
            if occluded is not None:
                methods["occlusion"] = occluded[index][position]
            per_candidate[candidate.id] = methods
        explained.append(
            attach(request, result, "llm4pr", per_candidate, score=_score_meaning(mode, shifts),
                   user={"qia_attention": user_attention}, not_attributed=_not_attributed(model, mode))
        )
    return explained


def _attention(model: LLM4PRModel, request: PostRankRequest) -> tuple[Attribution, list[Attribution]]:
    """(the user's attention, each candidate's), or "not available" for all of them."""
    reason = None
    if model.config.prompt_style == "text":
        reason = "text prompts (PTPR) show the features as words: no soft token, no QIA attention"
    elif model.config.adapter == "mlp":
        reason = "adapter 'mlp' (the w/o QIA ablation) has no attention over fields"
    weights = None
    if reason is None:
        with torch.inference_mode():
            weights = model.field_attention(request.query, request.user, request.candidates)
        if weights is None:
            reason = f"adapter {model.config.adapter!r} has no attention over fields"
    if weights is None:
        missing = not_available(reason or "no attention")
        return missing, [missing] * len(request.candidates)
    user_weights, item_weights = weights
    user = Attribution(fields=_fields(model.user_encoder, "user", user_weights.tolist()))
    items = [Attribution(fields=_fields(model.item_encoder, "item", row)) for row in item_weights.tolist()]
    return user, items


def _fields(encoder: EntityEncoder, owner: FieldOwner, values: Sequence[float]) -> list[FieldWeight]:
    return [
        FieldWeight(name=name, owner=owner, features=features, value=float(value))
        for (name, features), value in zip(field_names(encoder), values, strict=True)
    ]


def _identifier_logits(
    model: LLM4PRModel, prompter: RequestPrompter, requests: Sequence[PostRankRequest], window: int, shifts: int, batch_size: int
) -> list[list[Attribution]]:
    """Per request, per candidate (given order): its identifier logit's parts in one pass over the
    given order, as `first_token` scores a list that fits one window."""
    out: list[list[Attribution]] = [[] for _ in requests]
    eligible = []
    for index, request in enumerate(requests):
        n = len(request.candidates)
        if n > window:
            out[index] = [not_available(f"{n} candidates exceed the window of {window}: windows' logits do not compare")] * n
        elif shifts > 1:
            out[index] = [not_available(f"scores are mean log-probabilities over {shifts} shifts; the logit split holds for one pass")] * n
        else:
            eligible.append(index)
    tokenizer = prompter.builder.tokenizer
    for start in range(0, len(eligible), batch_size):
        chunk = eligible[start : start + batch_size]
        laid_out = [prompter.main_task(requests[i], range(len(requests[i].candidates))) for i in chunk]
        batch = collate([prompt for prompt, _ in laid_out], tokenizer.pad_token_id)
        inputs = [entities for _, entities in laid_out]
        width = max(len(requests[i].candidates) for i in chunk)
        ids = torch.tensor(prompter.builder.identifier_ids[:width], device=model.device)
        with torch.inference_mode():
            hidden, _ = model.answer_state(batch, inputs)
            llm = model.token_logits(hidden, ids)
            parts = {name: part[:, ids].float() for name, part in model.identifier_prior_parts(batch, inputs).items()}
        for row, index in enumerate(chunk):
            out[index] = [
                Attribution(terms={"llm": float(llm[row, p]), **{name: float(part[row, p]) for name, part in parts.items()}})
                for p in range(len(requests[index].candidates))
            ]
    return out


def _occlusion(
    model: LLM4PRModel, requests: Sequence[PostRankRequest], results: Sequence[RankResult], mode: str, rescore: Rescore
) -> list[list[Attribution]]:
    """Per request, per candidate: first_token score minus the score with each field set missing."""
    base = list(results) if mode == "first_token" else rescore(list(requests))
    fields: list[tuple[FieldOwner, str, list[str]]] = [
        (owner, name, features)
        for owner, encoder in (("item", model.item_encoder), ("user", model.user_encoder))
        for name, features in field_names(encoder)
        if features
    ]
    variants = [with_missing(request, owner, features) for owner, _, features in fields for request in requests]
    masked = rescore(variants) if variants else []
    out: list[list[Attribution]] = []
    for index, (request, result) in enumerate(zip(requests, base, strict=True)):
        base_scores = _scores_by_id(result)
        if base_scores is None:
            reason = "no first_token scores for this request (a fallback, or a list longer than the window)"
            out.append([not_available(reason)] * len(request.candidates))
            continue
        per_field = [_scores_by_id(masked[f * len(requests) + index]) for f in range(len(fields))]
        attributions = []
        for candidate in request.candidates:
            weights = [
                FieldWeight(name=name, owner=owner, features=features, value=base_scores[candidate.id] - scores[candidate.id])
                for (owner, name, features), scores in zip(fields, per_field, strict=True)
                if scores is not None
            ]
            attributions.append(Attribution(fields=weights, reason=OCCLUSION_MEANS))
        out.append(attributions)
    return out


def _scores_by_id(result: RankResult) -> dict[str, float] | None:
    if result.fallback or result.scores is None:
        return None
    return dict(zip(result.ranking, result.scores, strict=True))


def _score_meaning(mode: str, shifts: int) -> str | None:
    if mode != "first_token":
        return None
    if shifts > 1:
        return f"mean identifier log-probability over {shifts} cyclic shifts (first_token)"
    return "identifier logit at the first answer position (first_token), prior included"


def _not_attributed(model: LLM4PRModel, mode: str) -> list[str]:
    config = model.config
    notes = [
        "qia_attention is the adapters' weighting of fields when building soft tokens, not each field's effect on the score (see occlusion)",
        "the backbone's attention over the prompt (instruction, query words, history items, other candidates) is not attributed",
    ]
    if mode != "first_token":
        notes.append(f"{mode}: the order comes from decoding; identifier_logit is the first answer position, which picks only the first candidate")
    if config.embed_ids:
        notes.append(f"ids: learned id embeddings are the '{ID_FIELD_NAME}' field of the attention; occlusion cannot set them missing")
    if config.bind_identifiers:
        notes.append("identifier binding: each candidate's soft token also carries its identifier letter's embedding (its shown position)")
    if model.request_context is not None:
        notes.append("request context (numbers relative to the other candidates, history labels, query similarity) is added to the soft tokens outside the QIA")
    return notes
