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
from datetime import date, datetime
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal

from genai_prices import Usage, calc_price

# Our provider types to genai-prices' provider ids.
PRICE_PROVIDERS = {"openai": "openai", "claude": "anthropic", "gemini": "google"}
MICRO = Decimal(1_000_000)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Priced:
    """One call's tokens, to be priced at the price in force when it started: by the first of
    `models` the price data knows (the model that answered, then the configured one, for
    providers that answer with a dated name genai-prices does not list).

    input_tokens counts all input; `cached_input_tokens` of it were read from the provider's
    prompt cache and `cache_write_tokens` written to it, each at genai-prices' price for that
    (cache reads are cheaper, Anthropic's cache writes dearer)."""

    provider_type: str
    models: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    at: datetime
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def usd(self) -> Decimal | None:
        """genai-prices' figure (worked out once); None when unpriced."""
        return self._prices()[0]

    @property
    def savings_usd(self) -> Decimal | None:
        """What the prompt cache saved: the same tokens' cost with none of them cached, less
        `usd` (negative when cache writes cost more than the reads saved); None when the call
        used no cache or is unpriced."""
        return self._prices()[1]

    def _prices(self) -> tuple[Decimal | None, Decimal | None]:
        if "_memo" not in self.__dict__:
            # Not functools.cached_property: on Python 3.11 it holds one lock for every
            # instance while it computes, so a caller reading its cost would queue behind the
            # writer pricing other rows.
            object.__setattr__(self, "_memo", self._price())
        return self.__dict__["_memo"]

    def _price(self) -> tuple[Decimal | None, Decimal | None]:
        """Never raises: the call has been made and its usage must still be recorded."""
        tokens = (self.input_tokens, self.output_tokens, self.at)
        cache = {
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }
        try:
            for model in dict.fromkeys(self.models):
                cost = estimate_cost_usd(self.provider_type, model, *tokens, **cache)
                if cost is None:
                    continue
                if not any(cache.values()):
                    return cost, None
                uncached = estimate_cost_usd(self.provider_type, model, *tokens)
                return cost, None if uncached is None else uncached - cost
        except Exception as exc:
            log.warning("pricing %s %s failed (%s)", self.provider_type, self.models[0], exc)
        return None, None


def estimate_cost_usd(
    provider_type: str,
    model_name: str,
    input_tokens: int,
    output_tokens: int,
    at: datetime | None = None,
    *,
    cached_input_tokens: int = 0,
    cache_write_tokens: int = 0,
) -> Decimal | None:
    """USD for the tokens at the price in force at `at` (default now); None if unpriced.
    input_tokens counts all input, the cached and cache-write tokens among it."""
    provider_id = PRICE_PROVIDERS.get(str(provider_type))
    if provider_id is None or not model_name:
        return None
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached_input_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
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


def can_price(provider_type: str, model_name: str) -> bool:
    """Whether genai-prices knows this model's price today (a dollar budget needs one)."""
    return estimate_cost_usd(provider_type, model_name, 1, 1) is not None


def worst_case_micro_usd(
    provider_type: str, model_name: str, input_tokens: int, output_tokens: int, at: datetime
) -> int | None:
    """The most a call of at most `input_tokens` in and `output_tokens` out can cost at the
    price in force at `at`, in micro-dollars rounded up; None when unpriced. Every input token
    is priced at the dearer of the input and cache-write prices, and the prompt at the tier of
    its upper bound (a longer prompt never costs less). The bound is rounded up to a step of
    at most an eighth of it, so calls of similar size share one cached figure per day."""
    step = max(64, 1 << max(input_tokens.bit_length() - 4, 0))
    rounded = -(-input_tokens // step) * step
    key = (provider_type, model_name, rounded, output_tokens, at.date())
    if key not in _WORST_CASES:
        if len(_WORST_CASES) >= 4096:
            _WORST_CASES.clear()
        _WORST_CASES[key] = _worst_case(provider_type, model_name, rounded, output_tokens, at)
    return _WORST_CASES[key]


# genai-prices' prices change by the day: one figure per model, size and UTC day.
_WORST_CASES: dict[tuple[str, str, int, int, date], int | None] = {}


def _worst_case(
    provider_type: str, model_name: str, input_tokens: int, output_tokens: int, at: datetime
) -> int | None:
    costs = [
        estimate_cost_usd(provider_type, model_name, input_tokens, output_tokens, at, **extra)
        for extra in ({}, {"cache_write_tokens": input_tokens})
    ]
    known = [cost for cost in costs if cost is not None]
    if not known:
        return None
    return int((max(known) * MICRO).to_integral_value(rounding=ROUND_CEILING))


def to_micro_usd(cost: Decimal | None) -> int | None:
    """Integer micro-dollars (half up), or None for an unpriced call."""
    if cost is None:
        return None
    return int((cost * MICRO).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def format_usd(micro: int) -> str:
    """Micro-dollars for people: "$1,234.50", and small amounts to the hundredth of a cent
    ("$0.0042") instead of "$0.00"."""
    dollars = Decimal(micro) / MICRO
    places = 2 if dollars == 0 or abs(dollars) >= Decimal("0.01") else 4
    return f"{'-' if dollars < 0 else ''}${abs(dollars):,.{places}f}"


def from_micro_usd(micro: int | None) -> Decimal | None:
    return None if micro is None else Decimal(micro) / MICRO
