"""What an explained ranking says about each candidate: the output format of `explain`.

One `Explanation` per request, carried by its `RankResult` (`explanations`), so that the run file
line, the HTTP answer and the library all hold the same object. Per candidate: its score, its
position in the given order and in the ranking (1 = first), and per method an `Attribution` over
feature FIELDS. A field is what the ranker reads as one input: a schema feature, or a group of
them (LLM4PR reads all numerical features as ONE field, named "numerical: a, b, ..."; LambdaMART's
crosses and history summary are columns derived from several inputs). `features` lists the schema
features a field is made of (what setting the field to missing removes; empty: the field cannot be
set missing, e.g. ids). A ranker that cannot attribute says so (`available: false` and a `reason`)
instead of giving numbers: explanations never invent values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

FieldOwner = Literal["user", "item", "request"]


class FieldWeight(BaseModel):
    """One field's share of a candidate's score (or attention)."""

    name: str = Field(description="schema feature name, or a group's name ('numerical: a, b', 'history summary')")
    owner: FieldOwner
    features: list[str] = Field(default_factory=list, description="the schema features of this field; empty: cannot be set missing")
    value: float


class Attribution(BaseModel):
    """One method's attribution: per field, plus terms that belong to no field (a bias, a prior)."""

    available: bool = True
    reason: str | None = Field(default=None, description="why not available, or what the numbers mean when it needs saying")
    fields: list[FieldWeight] = Field(default_factory=list)
    terms: dict[str, float] = Field(default_factory=dict, description="parts of the score that are not fields (bias, priors)")

    def top_and_bottom(self, owner: FieldOwner = "item") -> tuple[FieldWeight, FieldWeight] | None:
        """The fields of `owner` that can be set missing with the largest and smallest |value| (first
        wins a tie); None when fewer than two such fields."""
        maskable = [f for f in self.fields if f.owner == owner and f.features]
        if len(maskable) < 2:
            return None
        top = max(maskable, key=lambda f: abs(f.value))
        bottom = min((f for f in maskable if f is not top), key=lambda f: abs(f.value))
        return top, bottom


class CandidateExplanation(BaseModel):
    id: str
    score: float | None = Field(default=None, description="the score the ranking used, where the ranker has scores")
    position_before: int = Field(description="1-based position in the given (ranking-stage) order")
    position_after: int = Field(description="1-based position in the post-ranked list")
    attributions: dict[str, Attribution] = Field(default_factory=dict, description="method name -> attribution")


class Explanation(BaseModel):
    """Why one request was ranked as it was; candidates in the post-ranked order."""

    ranker: str
    score: str | None = Field(default=None, description="what a candidate's score is")
    user: dict[str, Attribution] = Field(default_factory=dict, description="per-request attributions (the user token's attention)")
    candidates: list[CandidateExplanation]
    not_attributed: list[str] = Field(default_factory=list, description="inputs the ranker reads that no attribution covers")


def not_available(reason: str) -> Attribution:
    return Attribution(available=False, reason=reason)
