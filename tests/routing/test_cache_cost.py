"""Cache-aware cost, on SQLite and PostgreSQL, for each provider, blocking and streamed: the
cached, cache-write and reasoning tokens each provider reports are on the result and its usage
row, the cost is genai-prices' price for them (cache reads cheaper, Anthropic's cache writes
dearer), and what the cache saved is summed by the rollups the Usage page reads."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from genai_prices import Usage, calc_price

from core.pricing import PRICE_PROVIDERS, to_micro_usd
from core.providers import GenerationResult
from core.routing import Router
from tests.fakes import FakeProviderServer, count_tokens, make_reply
from tests.support.database import MigratedDatabase
from tests.support.routing import MODELS, add_config, make_router, run
from tests.support.routing import usage_rows as rows
from tests.support.usage import assert_rollups_match, rollup_contents

# A long posting, most of it cached: the cached price differs from the full one by far more than
# the 1 µUSD the cost is checked to.
PROMPT = "Extract the job title and city from: " + "Senior Data Engineer, Berlin, hybrid. " * 5000
PROVIDERS = ["openai", "claude", "gemini"]
CACHED, WRITTEN, THINKING = 20_000, 5_000, 3
MILLION = Decimal(1_000_000)


def price_by_hand(provider: str, cached: int, written: int, out: int) -> Decimal:
    """The call's cost from genai-prices' per-million prices for the model, worked out here:
    uncached input at the input price, cache reads and writes at theirs, output at its own."""
    prices = calc_price(
        Usage(input_tokens=1, output_tokens=1),
        model_ref=MODELS[provider],
        provider_id=PRICE_PROVIDERS[provider],
    ).model_price
    total_in = count_tokens([PROMPT])
    cost = (total_in - cached - written) * Decimal(prices.input_mtok)
    cost += cached * Decimal(prices.cache_read_mtok or prices.input_mtok)
    cost += written * Decimal(prices.cache_write_mtok or prices.input_mtok)
    return (cost + out * Decimal(prices.output_mtok)) / MILLION


async def blocking(router: Router) -> GenerationResult:
    return await router.generate("extraction", PROMPT, user_id=5)


async def streamed(router: Router) -> GenerationResult:
    async with router.stream("extraction", PROMPT, user_id=5) as stream:
        async for _ in stream:
            pass
    assert stream.result is not None
    return stream.result


@pytest.mark.parametrize("how", [blocking, streamed], ids=["blocking", "streamed"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_cached_tokens_are_stored_and_priced_at_the_cached_price(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str, how: Any
) -> None:
    add_config(db, fake, provider, tasks=["extraction"])
    fake.cached_tokens, fake.cache_write_tokens, fake.reasoning_tokens = CACHED, WRITTEN, THINKING
    result = run(make_router(db), how)
    written = WRITTEN if provider == "claude" else 0  # only Anthropic reports cache writes
    thinking = 0 if provider == "claude" else THINKING  # Anthropic does not report thinking
    out = count_tokens([make_reply(PROMPT)])
    assert (result.input_tokens, result.output_tokens) == (count_tokens([PROMPT]), out)
    assert (result.cached_input_tokens, result.cache_write_tokens, result.reasoning_tokens) == (
        CACHED,
        written,
        thinking,
    )
    cost = price_by_hand(provider, CACHED, written, out)
    uncached = price_by_hand(provider, 0, 0, out)
    assert result.cost_usd is not None and abs(result.cost_usd - cost) < Decimal("0.000001")
    if not written:  # cache reads are cheaper (Anthropic's writes are dearer: priced above)
        assert result.cost_usd < uncached
    assert result.cache_savings_usd == uncached - result.cost_usd
    [row] = rows(db)
    assert (row.cached_input_tokens, row.cache_write_tokens, row.reasoning_tokens) == (
        CACHED,
        written,
        thinking,
    )
    assert row.cost_micro_usd == to_micro_usd(result.cost_usd)
    assert row.cache_savings_micro_usd == to_micro_usd(result.cache_savings_usd)
    assert_rollups_match(db)
    [day] = rollup_contents(db, hourly=False).values()
    assert (day["cached_input_tokens"], day["cache_write_tokens"]) == (CACHED, written)
    assert day["cache_savings_micro_usd"] == row.cache_savings_micro_usd


def test_a_call_that_used_no_cache_saved_nothing(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    result = run(make_router(db), blocking)
    assert result.cost_usd == price_by_hand("openai", 0, 0, result.output_tokens)
    assert result.cache_savings_usd is None
    [row] = rows(db)
    assert (row.cached_input_tokens, row.cache_savings_micro_usd) == (0, None)
