"""What a call cost, from the genai-prices package (tiered and dated prices; no hand-kept table).

Cost is None when the model is unknown to the price data: unknown is not free. Amounts are
stored as integer micro-dollars on each usage row.
"""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from genai_prices import Usage, calc_price

# Our provider types to genai-prices' provider ids.
PRICE_PROVIDERS = {"openai": "openai", "claude": "anthropic", "gemini": "google"}
MICRO = Decimal(1_000_000)


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
