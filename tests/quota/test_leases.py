"""Quota leases: most limited calls take their tokens from a lease in memory, and what a lease
holds in the database always adds up; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from core.config import PROJECT_ROOT
from core.db import write_transaction
from core.models import ProviderConfig, QuotaReservation, utcnow
from core.quota.leases import (
    LEASE_CALLS,
    LEASE_IDLE_S,
    LEASE_SHARE,
    LEASE_WINDOW_S,
    QuotaLeases,
)
from core.quota.ledger import QuotaLedger, Reservation, Spend, Standing, reservation_size
from core.usage.writer import UsageRecord, UsageWriter
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.quota import Clock, counter, demand, holds, reserve_now
from tests.support.routing import add_config, allow_planted_keys, make_router, usage_rows

PROMPT = "Extract the job title from: Staff Engineer, Lisbon"
TTL = timedelta(minutes=5)
NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BIG = 10**9


class CountingLedger(QuotaLedger):
    """A real ledger that counts its database reservations (and reads)."""

    round_trips = 0
    reads = 0  # of what is left, before asking for a lease

    async def reserve(self, *args: Any, **kwargs: Any) -> Reservation | None:
        self.round_trips += 1
        return await super().reserve(*args, **kwargs)

    async def standing_now(self, *args: Any, **kwargs: Any) -> Standing:
        self.reads += 1
        return await super().standing_now(*args, **kwargs)


def stored_config(db: MigratedDatabase, limit: int | None = BIG) -> int:
    """A config row to hold tokens against (no provider is called in the ledger tests)."""
    with db.session() as session:
        row = ProviderConfig(
            provider_type="openai",
            model_name="gpt-4o-mini",
            display_name="leased",
            api_key_encrypted="not-used",
            key_last4="0000",
            daily_token_limit=limit,
        )
        session.add(row)
        session.commit()
        return row.id


@pytest.fixture
def fake(fake_providers: FakeProviderServer) -> FakeProviderServer:
    allow_planted_keys(fake_providers)
    return fake_providers


# --- through the router ----------------------------------------------------------------------


def test_calls_in_a_row_share_one_lease_and_closing_gives_it_back(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=BIG)
    size = reservation_size(PROMPT, None, 100)
    router = make_router(db, lease_clock=Clock())  # no lease ages while the calls run

    async def calls() -> list[tuple[int, int]]:
        for _ in range(10):
            await router.generate("extraction", PROMPT, max_output_tokens=100)
        await asyncio.to_thread(router.flush)
        return holds(db)

    async def scenario() -> list[tuple[int, int]]:
        try:
            return await calls()
        finally:
            await router.aclose()

    during = asyncio.run(scenario())
    used = sum(row.total_tokens for row in usage_rows(db))
    assert len(usage_rows(db)) == 10
    # One reservation served all ten calls, drawn down by exactly what they used.
    assert [tokens for _, tokens in during] == [LEASE_CALLS * size - used]
    # Closed: the rest is given back, and the counter holds just the usage.
    assert holds(db) == []
    assert counter(db, config) == (used, 0)


@pytest.mark.parametrize(("fits", "lease"), [(10, 10), (1, 0)])
def test_a_small_limit_gets_a_lease_of_what_fits(
    db: MigratedDatabase, fake: FakeProviderServer, fits: int, lease: int
) -> None:
    """A lease is as many calls' worth as fit in 1/(LEASE_SHARE + 1) of what is left: `fits`
    of them here. A fixed 32 calls' worth would have needed 32 * 17 calls' worth left."""
    size = reservation_size(PROMPT, None, 100)
    limit = (LEASE_SHARE + 1) * size * fits + size - 1
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=limit)
    router = make_router(db, lease_clock=Clock())

    async def first_call() -> list[int]:
        try:
            await router.generate("extraction", PROMPT, max_output_tokens=100)
            await asyncio.to_thread(router.flush)
            return [tokens for _, tokens in holds(db)]
        finally:
            await router.aclose()

    # Once the call is stored: the lease (its clock stands still, so it is not given back yet)
    # holds its block less what the call used; a call without one has no hold left.
    held = asyncio.run(first_call())
    used = sum(r.total_tokens for r in usage_rows(db))
    assert held == ([lease * size - used] if lease else [])
    assert counter(db, config) == (used, 0)


def test_a_limit_edited_in_the_console_retires_the_lease(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=BIG)
    router = make_router(db, config_refresh_s=0)

    async def scenario() -> list[tuple[int, int]]:
        try:
            await router.generate("extraction", PROMPT, max_output_tokens=100)
            with db.session() as session:  # an admin lowers the limit: too low for a lease
                session.execute(
                    update(ProviderConfig)
                    .where(ProviderConfig.id == config)
                    .values(daily_token_limit=5_000, version=ProviderConfig.version + 1)
                )
                session.commit()
            await router.generate("extraction", PROMPT, max_output_tokens=100)
            await asyncio.to_thread(router.flush)
            return holds(db)
        finally:
            await router.aclose()

    # The old lease held nearly all of the new limit; the second call, refused at first, gave
    # back what the retired lease held unpromised and then reserved exactly. Both are settled
    # and the old lease is given back, all before close.
    assert asyncio.run(scenario()) == []
    assert counter(db, config) == (sum(r.total_tokens for r in usage_rows(db)), 0)


def test_a_service_that_exits_without_closing_gives_its_lease_back(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    config = add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=BIG)
    script = (
        "import sys\n"
        "from core.config import Settings\n"
        "from core.routing import Router\n"
        "from pathlib import Path\n"
        "settings = Settings(database_url=sys.argv[1], fernet_keys=(sys.argv[2],),"
        " data_dir=Path(sys.argv[3]))\n"
        "router = Router(settings=settings, max_retries=0, environ={})\n"
        "for _ in range(3):\n"
        f"    router.generate_sync('extraction', {PROMPT!r}, max_output_tokens=50)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, db.url, db.settings.fernet_keys[0], db.settings.data_dir],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert len(usage_rows(db)) == 3
    assert holds(db) == []
    assert counter(db, config) == (sum(r.total_tokens for r in usage_rows(db)), 0)


# --- the lease book over a real ledger --------------------------------------------------------


def test_concurrent_calls_wait_for_the_lease_being_asked_for(db: MigratedDatabase) -> None:
    config = stored_config(db)
    ledger = CountingLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=8)

    async def scenario() -> list[Reservation | None]:
        try:
            return await asyncio.gather(
                *(leases.hold(demand(config, 100, BIG, None, NOON)) for _ in range(5))
            )
        finally:
            await ledger.aclose()

    got = asyncio.run(scenario())
    assert ledger.round_trips == 1
    assert {(h.id, h.tokens, h.draw) for h in got if h} == {(got[0].id, 100, True)}  # type: ignore[union-attr]
    assert holds(db) == [(got[0].id, 800)]  # type: ignore[union-attr]
    assert counter(db, config) == (0, 800)


def test_near_a_limit_every_call_reserves_exactly(db: MigratedDatabase) -> None:
    config = stored_config(db, limit=1_000)  # a lease of 800 would not leave 15 times as much
    ledger = CountingLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=8)

    async def scenario() -> list[Reservation | None]:
        try:
            return [await leases.hold(demand(config, 100, 1_000, None, NOON)) for _ in range(3)]
        finally:
            await ledger.aclose()

    got = asyncio.run(scenario())
    assert [(h.tokens, h.draw) for h in got if h] == [(100, False)] * 3
    # What is left was read once (no lease fits), and not again for a while: 3 exact ones.
    assert (ledger.reads, ledger.round_trips) == (1, 3)
    assert counter(db, config) == (0, 300)


def test_a_lease_that_cannot_cover_a_call_is_replaced_and_given_back_once_settled(
    db: MigratedDatabase,
) -> None:
    config = stored_config(db)
    ledger = QuotaLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=2)

    async def scenario() -> list[Reservation | None]:
        try:
            return [await leases.hold(demand(config, 100, BIG, None, NOON)) for _ in range(3)]
        finally:
            await ledger.aclose()

    first, second, third = asyncio.run(scenario())
    assert first and second and third
    assert first.id == second.id != third.id
    assert leases.due() == ([], [])  # the first lease still has calls to settle, none spare
    settle(
        db, leases, [Spend(config, NOON.date(), 30, first), Spend(config, NOON.date(), 40, second)]
    )
    (given_back,), _ = leases.due()
    assert given_back.id == first.id
    settle(db, leases, [Spend(config, NOON.date(), 0, given_back)])
    assert holds(db) == [(third.id, 200)]
    assert counter(db, config) == (70, 200)


def test_a_new_utc_day_starts_a_new_lease(db: MigratedDatabase) -> None:
    config = stored_config(db)
    ledger = QuotaLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=4)
    late = datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)

    async def scenario() -> list[Reservation | None]:
        try:
            return [
                await leases.hold(demand(config, 100, BIG, None, late)),
                await leases.hold(demand(config, 100, BIG, None, late + timedelta(seconds=2))),
            ]
        finally:
            await ledger.aclose()

    today, tomorrow = asyncio.run(scenario())
    assert today and tomorrow
    assert (today.day, tomorrow.day) == (date(2026, 12, 1), date(2026, 12, 2))
    assert today.id != tomorrow.id


def test_an_idle_lease_goes_back_without_a_close(db: MigratedDatabase) -> None:
    config = stored_config(db)
    clock = Clock()
    ledger = QuotaLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=4, clock=clock)
    writer = UsageWriter(db.engine, ledger, db.settings.usage_spool_dir, leases)

    async def take() -> Reservation | None:
        try:  # now, not NOON: the writer also sweeps holds whose time is up
            return await leases.hold(demand(config, 100, BIG, None, utcnow()))
        finally:
            await ledger.aclose()

    hold = asyncio.run(take())
    assert hold is not None
    leases.spent(hold, 60)
    record = UsageRecord(config, None, "openai", "gpt-4o-mini", "extraction", "success")
    writer.submit(UsageRecord(**{**record.__dict__, "total_tokens": 60}), hold)
    assert writer.flush()
    assert holds(db) == [(hold.id, 340)]  # still leased: drawn down by the call's 60
    clock.now += LEASE_IDLE_S
    assert writer.flush()
    writer.close()
    assert holds(db) == []
    assert counter(db, config) == (60, 0)


@pytest.mark.parametrize("options", [{"lease_share": 0}, {"lease_calls": 0}])
def test_lease_options_that_would_break_the_limit_are_refused(
    db: MigratedDatabase, options: dict[str, int]
) -> None:
    with pytest.raises(ValueError, match="lease_calls and lease_share must be at least 1"):
        make_router(db, **options)
    with pytest.raises(ValueError, match="naive datetime"):  # which day would it count on?
        reserve_now(
            QuotaLedger(db.engine), stored_config(db), 10, BIG, None, NOON.replace(tzinfo=None), TTL
        )
    with pytest.raises(ValueError, match="margin of -1"):
        reserve_now(QuotaLedger(db.engine), stored_config(db), 10, BIG, None, NOON, TTL, margin=-1)


def test_no_call_draws_on_a_lease_after_its_window(db: MigratedDatabase) -> None:
    """A call drawn late could outlast the lease's row, which another process may then sweep
    and reuse: past its window a lease serves nobody, even a call refused otherwise."""
    config = stored_config(db, limit=400)
    clock = Clock()
    ledger = QuotaLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=4, share=1, clock=clock)

    async def scenario() -> list[Reservation | None]:
        try:
            first = await leases.hold(demand(config, 100, 400, None, NOON))  # a lease of 200
            other = await ledger.reserve(demand(config, 150, 400, None, NOON), TTL)
            clock.now += LEASE_WINDOW_S
            # No new lease fits (50 left), nor this call beside the old lease (350 + 100): the
            # old lease's unpromised 100 is given back and the call reserves alone.
            return [first, other, await leases.hold(demand(config, 100, 400, None, NOON))]
        finally:
            await ledger.aclose()

    first, other, second = asyncio.run(scenario())
    assert first is not None and first.draw
    assert second is not None and not second.draw
    assert other is not None
    assert holds(db) == [(first.id, 100), (other.id, 150), (second.id, 100)]
    assert counter(db, config) == (0, 350)


def test_a_retired_lease_gives_back_its_spare_tokens_before_its_calls_end(
    db: MigratedDatabase,
) -> None:
    config = stored_config(db)
    clock = Clock()
    ledger = QuotaLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=4, clock=clock)
    writer = UsageWriter(db.engine, ledger, db.settings.usage_spool_dir, leases)

    async def two_calls() -> list[Reservation | None]:
        try:  # now, not NOON: the writer also sweeps holds whose time is up
            now = utcnow()
            return [await leases.hold(demand(config, 100, BIG, None, now)) for _ in range(2)]
        finally:
            await ledger.aclose()

    first, second = asyncio.run(two_calls())
    assert first and second and first.id == second.id
    clock.now += LEASE_WINDOW_S  # retired, with both calls still running
    assert writer.flush()
    assert holds(db) == [(first.id, 200)]  # what the two running calls may still use
    assert counter(db, config) == (0, 200)
    writer.close()


def test_a_caller_cancelled_while_asking_for_a_lease_does_not_strand_it(
    db: MigratedDatabase,
) -> None:
    config = stored_config(db)
    ledger = CountingLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=4)

    async def scenario() -> Reservation | None:
        try:
            asker = asyncio.create_task(leases.hold(demand(config, 100, BIG, None, NOON)))
            await asyncio.sleep(0)  # it has asked for the lease, and waits for the answer
            asker.cancel()
            return await leases.hold(demand(config, 100, BIG, None, NOON))
        finally:
            await ledger.aclose()

    later = asyncio.run(scenario())
    assert ledger.round_trips == 1  # the later call drew on the lease the cancelled one asked for
    assert later is not None and later.draw
    assert holds(db) == [(later.id, 400)]


def test_a_lease_whose_size_and_margin_overflow_a_small_integer_is_granted(
    db: MigratedDatabase,
) -> None:
    """psycopg sends small numbers as int2: 2,112 + 31,680 must not be added in that type."""
    config = stored_config(db)
    ledger = QuotaLedger(db.engine)

    async def asked() -> Reservation | None:
        try:
            return await ledger.reserve(demand(config, 2_112, BIG, None, NOON), TTL, margin=31_680)
        finally:
            await ledger.aclose()

    assert reserve_now(ledger, config, 2_112, BIG, None, NOON, TTL, margin=31_680) is not None
    assert asyncio.run(asked()) is not None
    assert counter(db, config) == (0, 4_224)


class FailingLeaseLedger(QuotaLedger):
    """A real ledger whose lease requests (those with a margin) fail, as on a dropped link."""

    async def reserve(self, *args: Any, **kwargs: Any) -> Reservation | None:
        if kwargs.get("margin"):
            await asyncio.sleep(0.01)
            raise ConnectionError("the database went away")
        return await super().reserve(*args, **kwargs)


def test_callers_waiting_for_a_failed_lease_request_reserve_alone(db: MigratedDatabase) -> None:
    config = stored_config(db)
    ledger = FailingLeaseLedger(db.engine)
    leases = QuotaLeases(ledger, TTL, calls=4)

    async def scenario() -> list[Reservation | BaseException | None]:
        try:
            return await asyncio.gather(
                *(leases.hold(demand(config, 100, BIG, None, NOON)) for _ in range(3)),
                return_exceptions=True,
            )
        finally:
            await ledger.aclose()

    got = asyncio.run(scenario())
    assert all(isinstance(h, Reservation) and not h.draw for h in got), got
    assert counter(db, config) == (0, 300)


def test_a_reservation_id_is_never_used_twice(db: MigratedDatabase) -> None:
    """A late settlement of a deleted hold (an overdue call, a swept lease) must not find a newer
    one under the same id: SQLite reuses the highest deleted id unless told not to."""
    config = stored_config(db)
    ledger = QuotaLedger(db.engine)
    first = reserve_now(ledger, config, 100, BIG, None, NOON, TTL)
    assert first is not None
    with write_transaction(db.engine) as conn:
        QuotaLedger.settle(conn, [Spend(config, NOON.date(), 0, first)])
    second = reserve_now(ledger, config, 100, BIG, None, NOON, TTL)
    assert second is not None and second.id > first.id


# --- settling against a lease ------------------------------------------------------------------


def test_draws_are_settled_before_the_lease_is_given_back(db: MigratedDatabase) -> None:
    config = stored_config(db)
    lease = reserve_now(QuotaLedger(db.engine), config, 1_000, BIG, None, NOON, TTL)
    assert lease is not None
    draw = Reservation(lease.id, config, lease.day, 300, draw=True)
    with write_transaction(db.engine) as conn:  # one batch: a call's usage, then the give-back
        QuotaLedger.settle(
            conn, [Spend(config, lease.day, 0, lease), Spend(config, lease.day, 250, draw)]
        )
    assert holds(db) == []
    assert counter(db, config) == (250, 0)


def test_a_lease_may_be_drawn_down_to_nothing(db: MigratedDatabase) -> None:
    """Its calls may use all it holds: the row then holds 0 tokens until it is given back."""
    config = stored_config(db)
    lease = reserve_now(QuotaLedger(db.engine), config, 600, BIG, None, NOON, TTL)
    assert lease is not None
    draws = [Reservation(lease.id, config, lease.day, 300, draw=True) for _ in range(2)]
    with write_transaction(db.engine) as conn:
        QuotaLedger.settle(conn, [Spend(config, lease.day, 300, draw) for draw in draws])
    assert holds(db) == [(lease.id, 0)]
    assert counter(db, config) == (600, 0)


def test_a_draw_beyond_what_the_lease_holds_finishes_it(db: MigratedDatabase) -> None:
    config = stored_config(db)
    lease = reserve_now(QuotaLedger(db.engine), config, 1_000, BIG, None, NOON, TTL)
    assert lease is not None
    draw = Reservation(lease.id, config, lease.day, 500, draw=True)  # an image, say
    with write_transaction(db.engine) as conn:
        QuotaLedger.settle(conn, [Spend(config, lease.day, 1_200, draw)])
    assert holds(db) == []
    assert counter(db, config) == (1_200, 0)


def settle(db: MigratedDatabase, leases: QuotaLeases, spends: list[Spend]) -> None:
    """What the usage writer does with a batch: settle it, then tell the leases."""
    with write_transaction(db.engine) as conn:
        QuotaLedger.settle(conn, spends)
    leases.settled(spend.reservation for spend in spends)


@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_reservation_after_the_server_dropped_its_connection_is_made_once(
    db: MigratedDatabase,
) -> None:
    """A restart, a failover or an idle timeout ends every pooled connection: the next call's
    reservation goes to a new connection instead of failing, and holds its tokens once."""
    config = stored_config(db)
    ledger = QuotaLedger(db.engine)

    async def scenario() -> list[Reservation | None]:
        try:  # concurrent calls leave several connections in the pool
            first = await asyncio.gather(
                *(ledger.reserve(demand(config, 100, BIG, None, NOON), TTL) for _ in range(4))
            )
            with db.engine.connect() as conn:
                ended = conn.scalar(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
            assert ended
            return [*first, await ledger.reserve(demand(config, 100, BIG, None, NOON), TTL)]
        finally:
            await ledger.aclose()

    assert all(isinstance(hold, Reservation) for hold in asyncio.run(scenario()))
    assert counter(db, config) == (0, 500)


@pytest.mark.parametrize("lease_calls", [1, 8], ids=["own reservation", "lease"])
def test_a_running_call_keeps_its_hold_past_the_expiry(
    db: MigratedDatabase, fake_providers: FakeProviderServer, lease_calls: int
) -> None:
    """The heartbeat: a call that runs longer than HOLD_EXPIRY keeps its hold, because the
    usage writer renews it; a sweep at the row's first expiry leaves it alone."""
    allow_planted_keys(fake_providers)
    config = add_config(db, fake_providers, "openai", tasks=["extraction"], daily_token_limit=BIG)
    fake_providers.fail_next("openai", mode="slow", delay=60)
    router = make_router(db, lease_calls=lease_calls, hold_expiry=timedelta(seconds=3))

    def expiry() -> datetime | None:
        with db.session() as session:
            return session.scalar(select(QuotaReservation.expires_at))

    async def until(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60  # only a bound for a failing test; it never waits it
        while not await asyncio.to_thread(check):
            assert time.monotonic() < deadline, "the condition never came true"
            await asyncio.sleep(0.02)

    async def scenario() -> int:
        call = asyncio.create_task(router.generate("extraction", "Extract the title"))
        await until(lambda: expiry() is not None)
        first = expiry()
        assert first is not None
        await until(lambda: (renewed := expiry()) is not None and renewed > first)
        swept = await asyncio.to_thread(
            QuotaLedger(db.engine).sweep, first + timedelta(milliseconds=1)
        )
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await router.aclose()
        return swept

    assert asyncio.run(scenario()) == 0
    assert holds(db) == [] and counter(db, config) == (0, 0)
    assert [row.status for row in usage_rows(db)] == ["cancelled"]
