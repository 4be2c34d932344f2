"""Dollar budgets through the router, on SQLite and PostgreSQL: a call holds its worst-case
cost and settles to what it cost, calls stop when the budget is spent, fit_to_budget shortens
an answer to what is left, and a model without a price cannot be held to a budget."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select

from core.models import QuotaCounter, QuotaReservation, utcnow
from core.pricing import estimate_cost_usd, format_usd, to_micro_usd, worst_case_micro_usd
from core.providers.base import DEFAULT_MAX_OUTPUT_TOKENS
from core.quota.ledger import QuotaLedger, reservation_size
from core.routing import GenerationResult, QuotaExceeded, Router
from core.routing.budgets import MIN_FITTED_OUTPUT_TOKENS
from tests.fakes import FakeProviderServer, count_tokens, make_reply
from tests.support.database import MigratedDatabase
from tests.support.routing import FAKE_NAME, MODELS, add_config, make_router, run, usage_rows

PROMPT = "Extract the job title from: Senior Data Engineer, Berlin, hybrid."
MAX_OUTPUT = 200
PROVIDERS = ["openai", "claude", "gemini"]


def worst(provider: str, max_output: int = MAX_OUTPUT) -> int:
    bound = reservation_size(PROMPT, None, max_output) - max_output
    cost = worst_case_micro_usd(provider, MODELS[provider], bound, max_output, utcnow())
    assert cost is not None
    return cost


def held_money(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The micro-dollars of every reservation made from now on."""
    held: list[int] = []
    reserve = QuotaLedger.reserve

    async def recording(self: QuotaLedger, demand: Any, *args: Any, **kwargs: Any) -> Any:
        held.append(demand.micro_usd)
        return await reserve(self, demand, *args, **kwargs)

    monkeypatch.setattr(QuotaLedger, "reserve", recording)
    return held


def counter(db: MigratedDatabase) -> QuotaCounter:
    with db.session() as session:
        assert session.scalars(select(QuotaReservation)).all() == []  # nothing left held
        return session.scalars(select(QuotaCounter)).one()


async def settled(router: Router, result: GenerationResult) -> GenerationResult:
    """The result, once its usage row is stored and its hold settled."""
    await asyncio.to_thread(router.flush)
    return result


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_call_holds_its_worst_case_cost_and_settles_to_what_it_cost(
    db: MigratedDatabase, fake: FakeProviderServer, monkeypatch: pytest.MonkeyPatch, provider: str
) -> None:
    add_config(db, fake, provider, tasks=["extraction"], daily_budget_micro_usd=1_000_000)
    held = held_money(monkeypatch)
    router = make_router(db, lease_calls=1)

    result = run(router, lambda r: r.generate("extraction", PROMPT, max_output_tokens=MAX_OUTPUT))

    [row] = usage_rows(db)
    assert held == [worst(provider)]
    assert row.cost_micro_usd is not None and 0 < row.cost_micro_usd < held[0]
    assert to_micro_usd(result.cost_usd) == row.cost_micro_usd
    spent = counter(db)
    assert (spent.used_micro_usd, spent.reserved_micro_usd) == (row.cost_micro_usd, 0)
    assert result.fitted_max_output_tokens is None


def test_calls_are_refused_once_the_budget_cannot_cover_their_worst_case(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    router = make_router(db, lease_calls=1)
    cost = one_call_cost()
    budget = (
        worst("openai", DEFAULT_MAX_OUTPUT_TOKENS) + cost
    )  # two calls fit (the second exactly), a third does not
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_budget_micro_usd=budget)

    async def scenario(r: Router) -> list[Any]:
        outcomes: list[Any] = []
        for _ in range(3):
            try:
                outcomes.append(await settled(r, await r.generate("extraction", PROMPT)))
            except QuotaExceeded as exc:
                outcomes.append(exc)
        return outcomes

    outcomes = run(router, scenario)

    assert [type(o).__name__ for o in outcomes] == ["GenerationResult"] * 2 + ["QuotaExceeded"]
    assert "at its token limit or dollar budget" in str(outcomes[2])
    rows = [row for row in usage_rows(db) if row.provider_config_id == config]
    assert [row.status for row in rows] == ["success", "success", "rejected"]
    assert rows[2].error_message == "daily or monthly dollar budget reached"
    spent = sum(row.cost_micro_usd or 0 for row in rows)
    assert spent == 2 * cost <= budget
    assert counter_for(db, config).used_micro_usd == spent

    [candidate] = make_router(db).explain("extraction").candidates
    assert candidate.eligible
    assert f"left: {format_usd(budget - spent)} today" in candidate.reason


@pytest.mark.parametrize("how", ["generate", "stream"])
def test_fit_to_budget_shortens_the_answer_to_what_the_budget_leaves(
    db: MigratedDatabase, fake: FakeProviderServer, how: str
) -> None:
    budget = worst("openai", 100)  # covers 100 output tokens of this prompt, not 200
    add_config(db, fake, "openai", tasks=["extraction"], daily_budget_micro_usd=budget)
    router = make_router(db, lease_calls=1)

    async def call(r: Router, **options: Any) -> GenerationResult:
        if how == "generate":
            return await r.generate("extraction", PROMPT, max_output_tokens=MAX_OUTPUT, **options)
        async with r.stream("extraction", PROMPT, max_output_tokens=MAX_OUTPUT, **options) as s:
            async for _ in s:
                pass
        assert s.result is not None
        return s.result

    async def scenario(r: Router) -> tuple[str, GenerationResult]:
        try:
            await call(r)
        except QuotaExceeded as exc:
            refused = str(exc)
        return refused, await call(r, fit_to_budget=True)

    refused, result = run(router, scenario)

    assert "dollar budget" in refused  # without fit_to_budget the call is refused
    fitted = result.fitted_max_output_tokens
    assert fitted is not None and 100 <= fitted < MAX_OUTPUT
    assert worst("openai", fitted) <= budget < worst("openai", fitted + 1)  # the most that fits
    sent = fake.last_request("openai").body
    assert (sent.get("max_completion_tokens") or sent.get("max_tokens")) == fitted
    assert result.text  # and it answered


def test_fit_to_budget_fits_a_token_limit_too_and_refuses_below_the_minimum(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    bound = reservation_size(PROMPT, None, MAX_OUTPUT) - MAX_OUTPUT
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=bound + 70)
    router = make_router(db, lease_calls=1)

    async def scenario(r: Router) -> tuple[GenerationResult, str]:
        fitted = await r.generate("extraction", PROMPT, max_output_tokens=500, fit_to_budget=True)
        await asyncio.to_thread(r.flush)
        try:
            await r.generate("extraction", PROMPT, max_output_tokens=500, fit_to_budget=True)
        except QuotaExceeded as exc:
            return fitted, str(exc)
        raise AssertionError("the second call was not refused")

    fitted, refused = run(router, scenario)

    assert fitted.fitted_max_output_tokens == 70
    assert "token limit" in refused  # what the first used leaves fewer than the minimum
    left = bound + 70 - counter_for(db, config).used_tokens
    assert left - bound < MIN_FITTED_OUTPUT_TOKENS


def test_a_budget_on_a_model_without_a_price_refuses_it_and_falls_back(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    # Stored directly: the console and CLI refuse to save such a budget (tests/admin).
    add_config(
        db,
        fake,
        "openai",
        tasks=["extraction"],
        model_name="acme-unpriced-1",
        priority=1,
        daily_budget_micro_usd=5_000_000,
    )
    fallback = add_config(db, fake, "claude", tasks=["extraction"], priority=2)

    result = run(make_router(db), lambda r: r.generate("extraction", PROMPT))

    assert result.config_id == fallback
    [refused] = result.attempts
    assert refused.status == "rejected"
    assert refused.error_message == (
        "acme-unpriced-1 has no price in genai-prices, so its dollar budget cannot be held"
    )
    assert FAKE_NAME["openai"] not in {r.provider for r in fake.requests}  # never called


def one_call_cost() -> int:
    """What one call of PROMPT costs on the fake server (its token counts, genai-prices' price)."""
    tokens = count_tokens([PROMPT]), count_tokens([make_reply(PROMPT, DEFAULT_MAX_OUTPUT_TOKENS)])
    cost = to_micro_usd(estimate_cost_usd("openai", MODELS["openai"], *tokens, utcnow()))
    assert cost is not None
    return cost


def counter_for(db: MigratedDatabase, config_id: int) -> QuotaCounter:
    with db.session() as session:
        return session.get_one(QuotaCounter, (config_id, utcnow().date()))
