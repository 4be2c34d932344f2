"""What a call asks of a candidate's limits, and how far its answer may be shortened to fit.

A call's `Need` is an upper bound on its prompt's tokens and the output it allows. Against a
config with a token limit it holds prompt + output tokens (core/quota/ledger.py); against one
with a dollar budget also the worst case those tokens can cost at genai-prices' price for the
config's model (core.pricing.worst_case_micro_usd), settled to the real cost after the call.

With `fit_to_budget=True` a call whose hold is refused is tried once more with a smaller
max_output_tokens: the largest that what is left today and this month still covers (tokens and
dollars), if at least `MIN_FITTED_OUTPUT_TOKENS`. The answer says so on
`result.fitted_max_output_tokens`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from core.pricing import worst_case_micro_usd
from core.quota.ledger import Demand, Limits, Standing
from core.routing.candidates import Candidate

MIN_FITTED_OUTPUT_TOKENS = 64  # fewer than this is not worth a call: refused instead


@dataclass(frozen=True)
class Need:
    """A call's upper bounds: its prompt's tokens and the output it allows."""

    prompt_tokens: int
    max_output_tokens: int
    fit: bool = False

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.max_output_tokens


class Unpriced(Exception):
    """The candidate has a dollar budget and its model has no price: nothing can be held."""


def demand(candidate: Candidate, need: Need, now: datetime) -> Demand:
    """What `need` holds against `candidate`'s limits at `now` (Unpriced: it cannot)."""
    assert candidate.config_id is not None
    limits = candidate.limits
    return Demand(
        candidate.config_id,
        need.tokens,
        limits,
        now,
        _cost(candidate, limits, need.prompt_tokens, need.max_output_tokens, now),
    )


def fitted(candidate: Candidate, need: Need, standing: Standing, now: datetime) -> Need | None:
    """`need` with the largest max_output_tokens (below its own) that what `standing` leaves
    covers; None when fewer than MIN_FITTED_OUTPUT_TOKENS would fit."""
    limits = candidate.limits
    tokens_left = standing.left(limits) - need.prompt_tokens
    money_left = standing.left_micro_usd(limits)

    def fits(output: int) -> bool:
        cost = _cost(candidate, limits, need.prompt_tokens, output, now)
        return output <= tokens_left and cost <= money_left

    low, high = MIN_FITTED_OUTPUT_TOKENS, need.max_output_tokens - 1
    if high < low or not fits(low):
        return None
    while low < high:  # the largest output that fits: a cost never falls as output grows
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return replace(need, max_output_tokens=low)


def _cost(candidate: Candidate, limits: Limits, prompt: int, output: int, now: datetime) -> int:
    if not limits.budgeted:
        return 0
    cost = worst_case_micro_usd(candidate.provider_type, candidate.model_name, prompt, output, now)
    if cost is None:
        raise Unpriced(
            f"{candidate.model_name} has no price in genai-prices, so its dollar budget "
            "cannot be held"
        )
    return cost
