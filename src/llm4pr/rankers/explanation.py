"""Explained rankings: the one way the CLI, the server and the faithfulness check reach a ranker's
attributions, and what every ranker's `explain` shares.

`explain(ranker, requests)` returns the ranker's `RankResult`s with `explanations` set (the data
shape is `llm4pr.data.explanations`). A ranker that cannot attribute still answers: positions and
scores, and its attribution marked "not available". `render_text` prints one explained result as
a plain-text table (`llm4pr explain`); `with_missing` sets fields to missing, which occlusion and
the faithfulness check (`rankers.faithfulness`) both need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from llm4pr.data.explanations import Attribution, CandidateExplanation, Explanation, FieldWeight, not_available
from llm4pr.data.requests import PostRankRequest, RankResult

ATTRIBUTION_NOT_AVAILABLE = "attribution"  # the method name under which a ranker without attribution says so


def explain(ranker: object, requests: Sequence[PostRankRequest], *, mode: str | None = None, occlusion: bool = False) -> list[RankResult]:
    """Rank and explain every request with `ranker` (any object with `rank`; its own `explain` when
    it has one, else positions and scores only)."""
    method = getattr(ranker, "explain", None)
    if method is not None:
        return method(requests, mode=mode, occlusion=occlusion)  # type: ignore[no-any-return]
    return explained_without_attribution(ranker, requests, mode)


def explained_without_attribution(ranker: object, requests: Sequence[PostRankRequest], mode: str | None) -> list[RankResult]:
    """The ranker's results, each with positions and scores and an honest "not available"."""
    name = str(getattr(ranker, "name", type(ranker).__name__))
    results: list[RankResult] = ranker.rank(requests, mode=mode)  # type: ignore[attr-defined]
    reason = f"{name} has no per-field attribution"
    return [attach(request, result, name, {c: {ATTRIBUTION_NOT_AVAILABLE: not_available(reason)} for c in request.candidate_ids})
            for request, result in zip(requests, results, strict=True)]


def attach(
    request: PostRankRequest,
    result: RankResult,
    ranker: str,
    attributions: Mapping[str, dict[str, Attribution]],
    *,
    score: str | None = None,
    user: dict[str, Attribution] | None = None,
    not_attributed: Sequence[str] = (),
) -> RankResult:
    """`result` with its `Explanation`: `attributions` maps candidate id -> method -> attribution.

    A fallback result (the ranking-stage order) gets no attribution: the ranker said nothing."""
    if result.fallback:
        fallback = not_available(f"fallback to the ranking-stage order: {result.error}")
        attributions = {c: {"fallback": fallback} for c in request.candidate_ids}
        user, score = None, None
    before = {candidate_id: position for position, candidate_id in enumerate(request.candidate_ids, start=1)}
    missing = set(request.candidate_ids) - set(attributions)
    if missing:
        raise ValueError(f"request '{request.request_id}': no attribution for candidate(s) {sorted(missing)}")
    candidates = [
        CandidateExplanation(
            id=candidate_id,
            score=result.scores[index] if result.scores is not None else None,
            position_before=before[candidate_id],
            position_after=index + 1,
            attributions=attributions[candidate_id],
        )
        for index, candidate_id in enumerate(result.ranking)
    ]
    explanation = Explanation(
        ranker=ranker, score=score, user=user or {}, candidates=candidates, not_attributed=list(not_attributed)
    )
    return result.model_copy(update={"explanations": explanation})


def with_missing(
    request: PostRankRequest, owner: Literal["user", "item", "request"], features: Sequence[str], candidate: int | None = None
) -> PostRankRequest:
    """The request with `features` set to missing: the user's (owner "user"), or the candidates' (all
    of them, or only the one at position `candidate` of the given order). History items keep theirs."""
    drop = set(features)
    if owner == "user":
        user = request.user.model_copy(update={"features": {k: v for k, v in request.user.features.items() if k not in drop}})
        return request.model_copy(update={"user": user})
    if owner != "item":
        raise ValueError(f"request '{request.request_id}': a field of owner {owner!r} cannot be set missing")
    candidates = [
        item.model_copy(update={"features": {k: v for k, v in item.features.items() if k not in drop}})
        if candidate is None or index == candidate
        else item
        for index, item in enumerate(request.candidates)
    ]
    return request.model_copy(update={"candidates": candidates})


def render_text(result: RankResult) -> str:
    """A plain-text table of one explained result: a row per candidate (ranked order), then its
    attributions, fields largest first."""
    explanation = result.explanations
    if explanation is None:
        raise ValueError(f"request '{result.request_id}': the result carries no explanation (rank it with explain)")
    lines = [f"request {result.request_id}: ranked by {explanation.ranker}" + (f" (score: {explanation.score})" if explanation.score else "")]
    if result.fallback:
        lines.append(f"FALLBACK: {result.error}")
    for method, attribution in explanation.user.items():
        lines.append(f"user, {method}: {_attribution_text(attribution)}")
    width = max(len("id"), *(len(c.id) for c in explanation.candidates))
    lines.append(f"{'rank':>4}  {'given':>5}  {'id':<{width}}  {'score':>10}")
    for candidate in explanation.candidates:
        score = f"{candidate.score:10.4f}" if candidate.score is not None else f"{'-':>10}"
        lines.append(f"{candidate.position_after:>4}  {candidate.position_before:>5}  {candidate.id:<{width}}  {score}")
        for method, attribution in candidate.attributions.items():
            lines.append(f"{'':>13}{method}: {_attribution_text(attribution)}")
    if explanation.not_attributed:
        lines.append("not attributed: " + "; ".join(explanation.not_attributed))
    return "\n".join(lines)


def _attribution_text(attribution: Attribution) -> str:
    if not attribution.available:
        return f"not available ({attribution.reason})"
    mixed = {"user", "item"} <= {f.owner for f in attribution.fields}  # say which fields are the user's

    def label(f: FieldWeight) -> str:
        return f"user.{f.name}" if mixed and f.owner == "user" and not f.name.startswith("user.") else f.name

    parts = [f"{label(f)} {f.value:+.4f}" for f in sorted(attribution.fields, key=lambda f: -abs(f.value))]
    parts += [f"[{name}] {value:+.4f}" for name, value in attribution.terms.items()]
    text = ", ".join(parts) or "(nothing)"
    return f"{text} ({attribution.reason})" if attribution.reason else text
