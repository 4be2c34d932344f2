"""A database that stops, freezes or restarts under running routers: the fault tests.

Each test has a PostgreSQL server of its own (tests/support/own_postgres.py) to stop and freeze.
What must hold: callers see only RoutingError subclasses, calls that need no database are
served throughout, a limited config fails fast with LimitsUnavailable and serves again once the
database answers, and afterwards every success the callers saw has its usage row, the counters
equal the rows, and no hold is left.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from core.crypto import generate_key
from core.db import make_engine, upgrade
from core.models import UsageStatus
from core.quota.reach import RETRY_AFTER_S
from core.routing import DatabaseUnavailable, LimitsUnavailable, Router
from tests.support.database import MigratedDatabase
from tests.support.own_postgres import OwnPostgres, own_postgres
from tests.support.quota import Clock, counter, holds
from tests.support.routing import add_config, usage_rows

PROMPT = "Extract the job title from: Staff Engineer, Lisbon"
CALLERS = 20


@pytest.fixture(scope="module")
def server() -> Iterator[OwnPostgres]:
    with own_postgres() as pg:
        yield pg


@pytest.fixture
def pg(server: OwnPostgres, tmp_path: Path) -> Iterator[tuple[MigratedDatabase, OwnPostgres]]:
    url = server.create_database()
    settings = Settings(
        database_url=url,
        fernet_keys=(generate_key(),),
        data_dir=tmp_path,
        db_statement_timeout_s=0.5,
    )
    engine = make_engine(settings)
    upgrade(engine)
    try:
        yield MigratedDatabase("postgresql", url, engine, settings), server
    finally:
        server.thaw()
        if not (server.data / "postmaster.pid").exists():
            server.start()
        engine.dispose()


def router_for(db: MigratedDatabase, clock: Clock, **options: object) -> Router:
    """A router as Router.from_env builds it (its own engine, with the timeouts), re-reading
    the configs on every call, on a clock the test moves."""
    return Router(
        settings=db.settings,
        max_retries=0,
        timeout_s=10,
        config_refresh_s=0,
        environ={},
        lease_clock=clock,
        **options,  # type: ignore[arg-type]
    )


def assert_accounted(db: MigratedDatabase, successes: int, capped: int) -> None:
    """Every success has its row, the counters equal the rows, no hold is left."""
    rows = usage_rows(db)
    assert sum(r.status == UsageStatus.SUCCESS for r in rows) == successes
    used = sum(r.total_tokens for r in rows if r.provider_config_id == capped)
    assert counter(db, capped) == (used, 0)
    assert holds(db) == []


@pytest.mark.parametrize("fault", ["restart", "freeze"])
def test_an_outage_stops_only_the_calls_that_need_the_database(pg, fake, fault: str) -> None:
    db, server = pg
    add_config(db, fake, "openai", tasks=["extraction"])
    capped = add_config(db, fake, "claude", tasks=["cv_draft"], daily_token_limit=10_000_000)
    clock = Clock()
    router = router_for(db, clock, lease_calls=1)  # no lease: every limited call reserves
    away, back = (server.stop, server.start) if fault == "restart" else (server.freeze, server.thaw)

    async def scenario() -> int:
        await router.generate("extraction", PROMPT)
        await router.generate("cv_draft", PROMPT)
        away()
        served = await asyncio.gather(
            *(router.generate("extraction", PROMPT) for _ in range(CALLERS))
        )
        for _ in range(2):  # the first waits out the timeouts, the second not even that
            with pytest.raises(LimitsUnavailable) as refused:
                await router.generate("cv_draft", PROMPT)
            assert refused.value.config_ids == (capped,)
            assert "did not answer" in str(refused.value)
        back()  # a reservation the frozen server had is now granted: it is given back
        with pytest.raises(LimitsUnavailable):  # not tried again before RETRY_AFTER_S
            await router.generate("cv_draft", PROMPT)
        clock.advance(RETRY_AFTER_S)
        await router.generate("cv_draft", PROMPT)
        await router.aclose()
        return 2 + len(served) + 1

    successes = asyncio.run(scenario())
    assert_accounted(db, successes, capped)
    refused_rows = [r for r in usage_rows(db) if r.error_type == "limits_unavailable"]
    assert [(r.provider_config_id, r.status) for r in refused_rows] == [(capped, "error")] * 3


@pytest.mark.parametrize("fault", ["restart", "freeze"])
def test_a_limited_config_serves_what_its_lease_holds(pg, fake, fault: str) -> None:
    db, server = pg
    capped = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=10_000_000)
    clock = Clock()  # the lease does not age while the database is away
    router = router_for(db, clock, lease_calls=8)
    away, back = (server.stop, server.start) if fault == "restart" else (server.freeze, server.thaw)
    unhandled: list[str] = []

    async def scenario() -> tuple[int, int]:
        asyncio.get_running_loop().set_exception_handler(
            lambda _, context: unhandled.append(context["message"])
        )
        await router.generate("extraction", PROMPT)  # takes a lease of 8 calls' worth
        away()
        served = 0
        with pytest.raises(LimitsUnavailable):
            for _ in range(1_000):
                await router.generate("extraction", PROMPT)
                served += 1
        back()
        clock.advance(RETRY_AFTER_S)
        await router.generate("extraction", PROMPT)
        await router.aclose()
        gc.collect()  # a task whose failure nobody retrieved says so when it is freed
        return 1 + served + 1, served

    successes, served = asyncio.run(scenario())
    # The lease held 8 calls' upper bound; each call gives back what it did not use, so it
    # serves at least the other 7 (and more), then the calls fail fast.
    assert served >= 7
    assert_accounted(db, successes, capped)
    # What the database did not answer in time is dealt with, not left to asyncio's log.
    assert unhandled == []


def test_a_router_that_never_read_the_configs_says_the_database_is_away(pg, fake) -> None:
    db, server = pg
    add_config(db, fake, "openai", tasks=["extraction"])
    router = router_for(db, Clock())
    server.stop()

    async def scenario() -> None:
        with pytest.raises(DatabaseUnavailable, match="has not read the provider configs"):
            await router.generate("extraction", PROMPT)
        server.start()
        await router.generate("extraction", PROMPT)  # the next call reads them
        await router.aclose()

    asyncio.run(scenario())
    assert [r.status for r in usage_rows(db)] == ["success"]


def test_only_the_routing_path_has_a_statement_timeout(pg) -> None:
    """A router's statements are cancelled by the server after AI_CONSOLE_DB_STATEMENT_TIMEOUT_S;
    the console's and the CLI's (reports, migrations) are not."""
    db, _ = pg
    routing, console = make_engine(db.settings, statement_timeout=True), make_engine(db.settings)
    try:
        shown = []
        for engine in (routing, console):
            with engine.connect() as conn:
                shown.append(conn.exec_driver_sql("SHOW statement_timeout").scalar_one())
        assert shown == ["500ms", "0"]
    finally:
        routing.dispose()
        console.dispose()


@pytest.mark.parametrize("fault", ["restart", "freeze"])
def test_explain_says_the_limits_cannot_be_checked_while_the_database_is_away(
    pg, fake, fault: str
) -> None:
    """Also on a frozen server, where it used to wait until the server was thawed."""
    db, server = pg
    capped = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=10_000_000)
    router = router_for(db, Clock())
    away, back = (server.stop, server.start) if fault == "restart" else (server.freeze, server.thaw)

    async def scenario() -> str:
        await router.generate("extraction", PROMPT)
        away()
        try:
            # In a thread, so that a regression fails this test instead of hanging it.
            explained = asyncio.to_thread(router.explain, "extraction")
            [plan] = (await asyncio.wait_for(explained, timeout=120)).candidates
        finally:
            back()
        await router.aclose()
        assert plan.config_id == capped and not plan.eligible
        return plan.reason

    reason = asyncio.run(scenario())
    assert reason.startswith("its limits cannot be checked: the database did not answer")
    assert "it serves only what this process's leases hold" in reason
