"""What a call cost, from the genai-prices package (tiered and dated prices; no hand-kept table).

Cost is None when the model is unknown to the price data: unknown is not free. Amounts are
stored as integer micro-dollars on each usage row.

Pricing a call takes genai-prices about 0.1 ms, a fifth of what routing adds to a call, so the
router does not price on the caller's path: a result and its usage row carry a `Priced` (what
the price needs), the usage writer's thread prices the row, and `result.cost_usd` is priced on
first read. Both run `Priced.usd`, so they agree.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from genai_prices import Usage, calc_price

# Our provider types to genai-prices' provider ids.
PRICE_PROVIDERS = {"openai": "openai", "claude": "anthropic", "gemini": "google"}
MICRO = Decimal(1_000_000)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Priced:
    """One call's tokens, to be priced at the price in force when it started: by the first of
    `models` the price data knows (the model that answered, then the configured one, for
    providers that answer with a dated name genai-prices does not list)."""

    provider_type: str
    models: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    at: datetime

    @property
    def usd(self) -> Decimal | None:
        """genai-prices' figure (worked out once); None when unpriced."""
        if "_usd" not in self.__dict__:
            # Not functools.cached_property: on Python 3.11 it holds one lock for every
            # instance while it computes, so a caller reading its cost would queue behind the
            # writer pricing other rows.
            object.__setattr__(self, "_usd", self._price())
        return self.__dict__["_usd"]

    def _price(self) -> Decimal | None:
        """Never raises: the call has been made and its usage must still be recorded."""
        try:
            for model in dict.fromkeys(self.models):
                cost = estimate_cost_usd(
                    self.provider_type, model, self.input_tokens, self.output_tokens, self.at
                )
                if cost is not None:
                    return cost
        except Exception as exc:
            log.warning("pricing %s %s failed (%s)", self.provider_type, self.models[0], exc)
        return None


def estimate_cost_usd(
    provider_type: str,
    model_name: str,
    input_tokens: int,
    output_tokens: int,
    at: datetime | None = None,
) -> Decimal | None:
    """USD for the tokens at the price in force at `at` (default now); None if unpriced."""
    provider_id = PRICE_PROVIDERS.get(str(provider_type))
    if provider_id is None or not model_name:
        return None
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    try:
        price = calc_price(
            usage,
            model_ref=model_name.removeprefix("models/"),
            provider_id=provider_id,
            genai_request_timestamp=at,
        )
    except LookupError:
        return None
    return Decimal(price.total_price)


def to_micro_usd(cost: Decimal | None) -> int | None:
    """Integer micro-dollars (half up), or None for an unpriced call."""
    if cost is None:
        return None
    return int((cost * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_micro_usd(micro: int | None) -> Decimal | None:
    return None if micro is None else Decimal(micro) / MICRO
