"""router.stream against the fake provider server, on SQLite and PostgreSQL: pieces, the
result and its row, fallback before the first piece, a break after it, leaving early and
cancelling, with the limit's hold settled every time."""

from __future__ import annotations

import asyncio

import pytest

from core.pricing import estimate_cost_usd, to_micro_usd
from core.routing import ProviderCallError, Router
from tests.fakes import FakeProviderServer, count_tokens, make_reply
from tests.fakes.streams import pieces
from tests.support.database import MigratedDatabase
from tests.support.quota import counter, holds
from tests.support.routing import (
    FAKE_NAME,
    MODELS,
    add_config,
    make_router,
    run,
)
from tests.support.routing import usage_rows as rows

PROMPT = "Draft the opening of a cover letter for a staff engineer role in Lisbon."
LIMIT = 1_000_000
PROVIDERS = ["openai", "claude", "gemini"]


def assert_settled(db: MigratedDatabase, config: int) -> None:
    """The limit counts exactly what the rows say, and nothing is left held."""
    used = sum(r.total_tokens for r in rows(db) if r.provider_config_id == config)
    assert counter(db, config) == (used, 0) and holds(db) == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_stream_is_accounted_as_a_blocking_call(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str
) -> None:
    config = add_config(db, fake, provider, tasks=["cv_draft"], daily_token_limit=LIMIT)

    async def scenario(router: Router) -> tuple[list[str], object]:
        async with router.stream("cv_draft", PROMPT, user_id=42) as stream:
            got = [text async for text in stream]
        return got, stream.result

    got, result = run(make_router(db), scenario)
    answer = make_reply(PROMPT)
    assert got == pieces(answer) and "".join(got) == result.text == answer  # type: ignore[attr-defined]
    assert (result.input_tokens, result.output_tokens) == (  # type: ignore[attr-defined]
        count_tokens([PROMPT]),
        count_tokens([answer]),
    )
    cost = estimate_cost_usd(provider, MODELS[provider], result.input_tokens, result.output_tokens)  # type: ignore[attr-defined]
    assert cost is not None and result.cost_usd == cost  # type: ignore[attr-defined]
    [row] = rows(db)
    assert (row.status, row.user_id, row.provider_config_id, row.task_type) == (
        "success",
        42,
        config,
        "cv_draft",
    )
    assert (row.input_tokens, row.output_tokens, row.cost_micro_usd) == (
        result.input_tokens,  # type: ignore[attr-defined]
        result.output_tokens,  # type: ignore[attr-defined]
        to_micro_usd(cost),
    )
    assert_settled(db, config)


def test_a_failure_before_the_first_piece_falls_back(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["cv_draft"], priority=1)
    second = add_config(db, fake, "claude", tasks=["cv_draft"], priority=2)
    fake.fail_next("openai", 503)

    async def scenario(router: Router) -> str:
        async with router.stream("cv_draft", PROMPT) as stream:
            return "".join([text async for text in stream])

    assert run(make_router(db), scenario) == make_reply(PROMPT)
    assert [(r.provider_type, r.status) for r in rows(db)] == [
        ("openai", "error"),
        ("claude", "success"),
    ]
    assert rows(db)[1].provider_config_id == second


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_break_after_the_first_piece_raises_with_the_partial_text(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str
) -> None:
    config = add_config(db, fake, provider, tasks=["cv_draft"], daily_token_limit=LIMIT)
    add_config(db, fake, "openai" if provider != "openai" else "claude", tasks=["cv_draft"])
    fake.fail_next(FAKE_NAME[provider], mode="cut", pieces=3)
    got: list[str] = []

    async def scenario(router: Router) -> ProviderCallError:
        with pytest.raises(ProviderCallError) as caught:
            async with router.stream("cv_draft", PROMPT) as stream:
                async for text in stream:
                    got.append(text)
        return caught.value

    error = run(make_router(db), scenario)
    assert got == pieces(make_reply(PROMPT))[:3] and error.partial_text == "".join(got)
    assert "broke off after 3 pieces" in str(error)
    [row] = rows(db)  # no fallback once the caller has text
    assert (row.status, row.provider_config_id) == ("error", config)
    assert row.output_tokens >= len("".join(got)) and row.input_tokens > 0
    assert row.cost_micro_usd is not None
    assert_settled(db, config)


@pytest.mark.parametrize("ending", ["leave", "cancel"])
def test_leaving_early_or_cancelling_writes_one_cancelled_row_and_frees_the_hold(
    db: MigratedDatabase, fake: FakeProviderServer, ending: str
) -> None:
    config = add_config(db, fake, "claude", tasks=["cv_draft"], daily_token_limit=LIMIT)

    async def read_two(router: Router, started: asyncio.Event) -> None:
        async with router.stream("cv_draft", PROMPT) as stream:
            async for n, _ in aenumerate(stream):
                if n == 1:
                    if ending == "leave":
                        return
                    started.set()
                    await asyncio.Event().wait()  # until cancelled

    async def scenario(router: Router) -> None:
        started = asyncio.Event()
        task = asyncio.create_task(read_two(router, started))
        if ending == "cancel":
            await started.wait()
            task.cancel()
        with pytest.raises(asyncio.CancelledError) if ending == "cancel" else _nothing():
            await task

    run(make_router(db), scenario)
    [row] = rows(db)
    assert (row.status, row.error_type, row.provider_config_id) == (
        "cancelled",
        "cancelled",
        config,
    )
    # Claude said the input tokens at the start; the output so far is an upper bound.
    assert row.input_tokens == count_tokens([PROMPT])
    assert row.output_tokens >= len("".join(pieces(make_reply(PROMPT))[:2]))
    assert "tokens estimated" in (row.error_message or "")
    assert_settled(db, config)


def test_the_sync_form_streams_the_same(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "gemini", tasks=["cv_draft"])
    router = make_router(db)
    try:
        with router.stream_sync("cv_draft", PROMPT, user_id=7) as stream:
            got = list(stream)
        assert got == pieces(make_reply(PROMPT)) and stream.result is not None
        assert stream.result.text == make_reply(PROMPT)
    finally:
        router.close()
    assert [(r.status, r.user_id) for r in rows(db)] == [("success", 7)]


def test_bad_arguments_are_refused_before_any_call(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["cv_draft"])
    router = make_router(db)
    try:
        with pytest.raises(TypeError):
            router.stream("cv_draft", PROMPT, user_id="abc")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            router.stream("cv_draft", "")
    finally:
        router.close()
    assert rows(db) == [] and fake.requests == []


async def aenumerate(stream):  # type: ignore[no-untyped-def]
    n = 0
    async for item in stream:
        yield n, item
        n += 1


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
