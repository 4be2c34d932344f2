"""Daily and monthly token limits that hold across processes: reservations in the database.

Mechanism (the same SQL on PostgreSQL and SQLite):

- One counter row per config and UTC day (`ai_provider_quota_counters`: used and reserved
  tokens). A month's total is the sum of its day rows, so a call is counted in the day and month
  in which it started.
- A hold is taken by one atomic conditional upsert: insert today's row, or add to its
  `reserved_tokens`, only if used + reserved + the hold (+ a margin, below) stays within the
  daily limit and the month's other days + today + the hold within the monthly limit. On
  PostgreSQL the upsert takes the row lock and re-checks the condition against the newest row
  version; on SQLite the statement holds the database's write lock. Either way concurrent
  callers, in any number of processes, are serialised on that one row and cannot both take the
  last tokens. A reservation row (`ai_provider_quota_reservations`) with an expiry records each
  hold.
- What a call holds is an upper bound on what it can use: prompt bytes (a token never covers
  less than one byte of UTF-8 text) plus a per-message allowance plus max_output_tokens. After
  the call, `settle` moves the real usage from reserved to used and gives back the rest. So for
  text prompts the tokens recorded against a config in a period never exceed its limit. (Images
  have no such bound; their estimate is generous but not a proof.)
- Leases (leases.py) take the database round trip off most calls: a router holds a
  larger block, a lease of up to 32 calls' worth, and hands it out to its calls in memory. The
  lease is one reservation row like any other; each settled call draws its real usage down from
  it (reserved -> used in the same transaction), and what is left is given back after a few
  seconds. The guarantee is unchanged, because a call draws only what the lease still covers.
  A lease is granted only with the `margin`: it must leave at least 15 times its size for
  everyone else, so each lease is at most a sixteenth of what remained when it was granted
  (leases.py sizes it to a seventeenth of what it read, to leave room for concurrent takers).
- A process that dies mid-call leaves its reservation (or lease) behind; `sweep` (run by every
  router and the console in the background) deletes expired reservations and releases their
  tokens. A live process renews the rows of its holds (`renew`, leases.py), so they can expire
  soon after a process dies (within a minute) however long a call may last.
- A database that does not answer makes `reserve` raise `LedgerUnavailable` (reach.py: bounded
  waits, failing fast while it is away); a hold the server grants after its caller stopped
  waiting is released as soon as it arrives (else the sweep frees it when it expires).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine

from core.config import DbTimeouts
from core.db import UNAVAILABLE, failure_reason, write_transaction
from core.quota import statements as sql
from core.quota.reach import DatabaseReach

log = logging.getLogger(__name__)

UNLIMITED = 2**62
MESSAGE_OVERHEAD_TOKENS = 32  # role markers and per-message framing the providers add
IMAGE_TOKENS_ESTIMATE = 2_000  # generous; providers charge ~250–1,600 for a typical image


@dataclass(frozen=True)
class Limits:
    """A config's token limits and dollar budgets (in micro-dollars); None is none."""

    daily: int | None = None
    monthly: int | None = None
    daily_micro_usd: int | None = None
    monthly_micro_usd: int | None = None

    @property
    def budgeted(self) -> bool:
        return self.daily_micro_usd is not None or self.monthly_micro_usd is not None


@dataclass(frozen=True)
class Demand:
    """What one call (or a lease for many) asks of a config's limits, at a moment: tokens, and
    for a config with a budget the call's worst-case cost in micro-dollars."""

    config_id: int
    tokens: int
    limits: Limits
    now: datetime
    micro_usd: int = 0

    def scaled(self, calls: int) -> Demand:
        return replace(self, tokens=self.tokens * calls, micro_usd=self.micro_usd * calls)


@dataclass(frozen=True)
class Reservation:
    """Tokens and micro-dollars held on a config's day. `draw` marks one call's share of a
    lease: settling it draws the call's usage down from the lease's row instead of finishing
    the row."""

    id: int
    config_id: int
    day: date
    tokens: int
    draw: bool = False
    micro_usd: int = 0


@dataclass(frozen=True)
class Spend:
    """What one finished call used, against its config's day (and the hold it had, if any)."""

    config_id: int
    day: date
    tokens: int
    reservation: Reservation | None = None
    micro_usd: int = 0


@dataclass(frozen=True)
class Standing:
    """A config's tokens and micro-dollars in the current UTC day and month (used = settled,
    reserved = in flight)."""

    day_used: int
    day_reserved: int
    month_used: int
    month_reserved: int
    day_used_micro_usd: int = 0
    day_reserved_micro_usd: int = 0
    month_used_micro_usd: int = 0
    month_reserved_micro_usd: int = 0

    def left(self, limits: Limits) -> int:
        """Tokens neither used nor held under the tighter of `limits` (UNLIMITED: none)."""
        return _room(
            (limits.daily, self.day_used + self.day_reserved),
            (limits.monthly, self.month_used + self.month_reserved),
        )

    def left_micro_usd(self, limits: Limits) -> int:
        """Micro-dollars neither spent nor held under the tighter budget (UNLIMITED: none)."""
        return _room(
            (limits.daily_micro_usd, self.day_used_micro_usd + self.day_reserved_micro_usd),
            (limits.monthly_micro_usd, self.month_used_micro_usd + self.month_reserved_micro_usd),
        )


def _room(*periods: tuple[int | None, int]) -> int:
    return min([UNLIMITED, *(limit - taken for limit, taken in periods if limit is not None)])


def reservation_size(
    prompt: str | Sequence[Any],
    system_prompt: str | None,
    max_output_tokens: int,
    images: int = 0,
    history: Sequence[tuple[str, str | Sequence[Any]]] = (),
) -> int:
    """An upper bound on the tokens a call can use (see the module docstring); `history`: the
    conversation's earlier (role, content) turns. A content (the prompt's too) is a text or a
    sequence of parts, each a str (a text) or anything else (an image, counted in `images`)."""
    texts = [system_prompt or ""]
    for content in [prompt, *(content for _, content in history)]:
        parts = [content] if isinstance(content, str) else content
        texts += [part for part in parts if isinstance(part, str)]
        images += sum(not isinstance(part, str) for part in parts)
    prompt_bytes = sum(len(text.encode()) for text in texts)
    overhead = MESSAGE_OVERHEAD_TOKENS * (1 + bool(system_prompt) + len(history))
    return prompt_bytes + overhead + images * IMAGE_TOKENS_ESTIMATE + max_output_tokens


def month_start(day: date) -> date:
    return day.replace(day=1)


class QuotaLedger:
    """Reservations and counters for every config, in the database behind `engine`.

    Reserving is on the hot path of every limited call that no lease serves. On PostgreSQL it is
    one statement (compiled once by SQLAlchemy for psycopg) through reach.py's pool, in
    autocommit mode: one round trip and no thread hop, ~0.8 ms a reservation on loopback where
    SQLAlchemy's async engine took ~1.9 ms. On SQLite it is two statements in a write
    transaction, in a worker thread. Everything else is rare or runs in the usage
    writer's thread, so it goes through the one synchronous engine.
    """

    def __init__(
        self,
        engine: Engine,
        timeouts: DbTimeouts | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._reach = DatabaseReach(engine, timeouts, clock=clock)
        self._reserve_sql = str(sql.RESERVE.compile(dialect=engine.dialect))
        self._standing_sql = str(sql.STANDING.compile(dialect=engine.dialect))

    async def reserve(
        self, demand: Demand, ttl: timedelta, margin: int = 0, margin_micro_usd: int = 0
    ) -> Reservation | None:
        """Hold `demand.tokens` and `demand.micro_usd` against its limits, if `margin` more
        tokens and `margin_micro_usd` more micro-dollars would still fit; None when they would
        not. The hold expires after `ttl` (then a sweep releases it)."""
        params = _params(demand, ttl, margin, margin_micro_usd)
        row = await self._reach.query(
            self._reserve_sql,
            self._reserve_sqlite,
            params,
            late=functools.partial(self._release_late, demand, params["day"]),
        )
        if row is None:
            return None
        return _hold(row, demand, params["day"])

    async def standing_now(self, config_id: int, now: datetime) -> Standing:
        """`standing` for the routing path: bounded and failing fast like `reserve`."""
        row = await self._reach.query(
            self._standing_sql, self._standing_row, _period(config_id, now)
        )
        assert row is not None  # an aggregate always has its row
        return Standing(*(int(value) for value in row))

    async def _release_late(self, demand: Demand, day: date, task: asyncio.Future[Any]) -> None:
        try:
            row = await task
        except Exception:  # no hold was taken
            return
        if row is not None:
            await asyncio.to_thread(self._release, _hold(row, demand, day))

    def _release(self, hold: Reservation) -> None:
        try:
            with write_transaction(self._engine) as conn:
                self.settle(conn, [Spend(hold.config_id, hold.day, 0, hold)])
        except Exception as exc:  # it expires and is swept
            log.warning("quota: releasing a late hold failed (%s)", failure_reason(exc))

    def _reserve_sqlite(self, params: dict[str, Any]) -> Sequence[Any] | None:
        with write_transaction(self._engine) as conn:
            if conn.execute(sql.COUNT, params).first() is None:
                return None
            return conn.execute(sql.HOLD, params).one()

    async def aclose(self) -> None:
        """Close this event loop's connections (PostgreSQL), after releasing the holds the
        server granted late."""
        await self._reach.aclose()

    async def give_back(self, hold: Reservation, tokens: int, micro_usd: int = 0) -> bool:
        """Release `tokens` and `micro_usd` of a lease that no call will draw on, keeping the
        rest held; False if the lease was already given back whole."""
        return await asyncio.to_thread(self._give_back, hold, tokens, micro_usd)

    def _give_back(self, hold: Reservation, tokens: int, micro_usd: int) -> bool:
        try:
            with write_transaction(self._engine) as conn:
                return self.shrink(conn, hold, tokens, micro_usd)
        except UNAVAILABLE as exc:
            raise self._reach.went_down(exc) from exc

    @staticmethod
    def shrink(conn: Connection, hold: Reservation, tokens: int, micro_usd: int = 0) -> bool:
        """`give_back` inside the caller's transaction."""
        taken = {"id": hold.id, "tokens": tokens, "micro_usd": micro_usd}
        row = conn.execute(sql.TAKE, taken).first()
        if row is not None:
            conn.execute(sql.RELEASE_HELD, [_released(hold.config_id, hold.day, tokens, micro_usd)])
        return row is not None

    @staticmethod
    def settle(conn: Connection, spends: Iterable[Spend]) -> None:
        """Record what calls really used and give back what their holds have left, inside the
        caller's transaction, in a few statements however many calls there are.

        A call's own reservation is finished: deleted, its tokens released. A draw on a lease
        takes the call's usage out of the lease's row, so those tokens move from reserved to
        used. Draws are applied before finishes, so settling a lease's last calls and giving it
        back in one batch releases only what they left. A hold that a sweep already released
        (an overdue call) only adds its usage.
        """
        items = list(spends)
        used: dict[tuple[int, date], Amount] = {}
        freed: dict[tuple[int, date], Amount] = {}
        drawn: dict[int, tuple[tuple[int, date], Amount]] = {}
        finished: dict[int, tuple[int, date]] = {}
        for spend in items:
            hold = spend.reservation
            key = (hold.config_id, hold.day) if hold is not None else (spend.config_id, spend.day)
            spent = Amount(spend.tokens, spend.micro_usd)
            used[key] = used.get(key, NOTHING) + spent
            if hold is None:
                continue
            if hold.draw:
                # Money is drawn only as far as the call held it: none without a budget, where
                # the cost still counts as spent.
                take = Amount(spend.tokens, min(spend.micro_usd, hold.micro_usd))
                drawn[hold.id] = (key, drawn.get(hold.id, (key, NOTHING))[1] + take)
            else:
                finished[hold.id] = key
        for lease_id, (key, amount) in drawn.items():
            if not amount:
                continue
            taken = {"id": lease_id, "tokens": amount.tokens, "micro_usd": amount.micro_usd}
            if conn.execute(sql.TAKE, taken).first() is not None:
                freed[key] = freed.get(key, NOTHING) + amount
            else:  # swept, or its calls used more than it held (images): finish it
                finished[lease_id] = key
        if finished:
            released = {
                hold_id: Amount(tokens, micro_usd)
                for hold_id, tokens, micro_usd in conn.execute(
                    sql.RELEASE, {"ids": list(finished)}
                ).all()
            }
            for hold_id, key in finished.items():
                freed[key] = freed.get(key, NOTHING) + released.get(hold_id, NOTHING)
        if any(freed.values()):
            conn.execute(
                sql.RELEASE_HELD,
                [_released(c, d, n.tokens, n.micro_usd) for (c, d), n in freed.items() if n],
            )
        if any(used.values()):
            conn.execute(
                sql.ADD_USED,
                [
                    {"config_id": c, "day": d, "used": n.tokens, "used_micro_usd": n.micro_usd}
                    for (c, d), n in used.items()
                    if n
                ],
            )

    def renew(self, hold_ids: Sequence[int], until: datetime) -> None:
        """Keep these holds' rows from expiring before `until` (leases.py, the heartbeat)."""
        if hold_ids:
            with write_transaction(self._engine) as conn:
                conn.execute(sql.RENEW, {"ids": list(hold_ids), "until": until})

    def sweep(self, now: datetime) -> int:
        """Release every expired hold (left by a crashed process); returns how many."""
        with write_transaction(self._engine) as conn:
            expired = conn.execute(sql.EXPIRED, {"now": now}).all()
            if expired:
                conn.execute(sql.RELEASE_HELD, [_released(*row) for row in expired])
        return len(expired)

    def standing(self, config_id: int, now: datetime) -> Standing:
        """Used and reserved tokens and micro-dollars today and this month, for explain() and
        the console."""
        return Standing(*(int(value) for value in self._standing_row(_period(config_id, now))))

    def _standing_row(self, params: dict[str, Any]) -> Sequence[Any]:
        with self._engine.connect() as conn:
            return conn.execute(sql.STANDING, params).one()


@dataclass(frozen=True)
class Amount:
    """Tokens and micro-dollars together, as settling adds them up."""

    tokens: int = 0
    micro_usd: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.tokens + other.tokens, self.micro_usd + other.micro_usd)

    def __bool__(self) -> bool:
        return bool(self.tokens or self.micro_usd)


NOTHING = Amount()


def _hold(row: Sequence[Any], demand: Demand, day: date) -> Reservation:
    return Reservation(
        int(row[0]), demand.config_id, day, demand.tokens, micro_usd=demand.micro_usd
    )


def _released(config_id: int, day: date, tokens: int, micro_usd: int) -> dict[str, Any]:
    return {"config_id": config_id, "day": day, "released": tokens, "released_micro_usd": micro_usd}


def _period(config_id: int, now: datetime) -> dict[str, Any]:
    day = now.astimezone(UTC).date()
    return {"config_id": config_id, "day": day, "month_start": month_start(day)}


def _params(demand: Demand, ttl: timedelta, margin: int, margin_micro_usd: int) -> dict[str, Any]:
    if min(demand.tokens, demand.micro_usd, margin, margin_micro_usd) < 0:
        # any of them would let a hold exceed the limit
        raise ValueError(
            f"cannot hold {demand.tokens} tokens and {demand.micro_usd} micro-dollars with a "
            f"margin of {margin} and {margin_micro_usd}"
        )
    # psycopg gets these values as they are (not through UTCDateTime): a naive time would be
    # read in the server's time zone and count the hold against the wrong day or expiry.
    if demand.now.utcoffset() is None:
        raise ValueError("naive datetime given; use an aware UTC datetime (core.models.utcnow)")
    now = demand.now.astimezone(UTC)
    day = now.date()
    limits = demand.limits
    return {
        "config_id": demand.config_id,
        "day": day,
        "tokens": demand.tokens,
        "margin": margin,
        "micro_usd": demand.micro_usd,
        "margin_micro_usd": margin_micro_usd,
        "month_start": month_start(day),
        "daily_limit": _or_unlimited(limits.daily),
        "monthly_limit": _or_unlimited(limits.monthly),
        "daily_budget": _or_unlimited(limits.daily_micro_usd),
        "monthly_budget": _or_unlimited(limits.monthly_micro_usd),
        "expires_at": now + ttl,
        "now": now,
    }


def _or_unlimited(limit: int | None) -> int:
    return UNLIMITED if limit is None else limit
