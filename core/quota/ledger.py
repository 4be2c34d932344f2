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
- Leases (core/quota_leases.py) take the database round trip off most calls: a router holds a
  larger block, a lease of about 32 calls' worth, and hands it out to its calls in memory. The
  lease is one reservation row like any other; each settled call draws its real usage down from
  it (reserved -> used in the same transaction), and what is left is given back after a few
  seconds. The guarantee is unchanged, because a call draws only what the lease still covers.
  A lease is granted only with the `margin`: it must leave at least 15 times its size for
  everyone else, so each lease is at most a sixteenth of what remained when it was granted,
  and near a limit every call reserves exactly, one round trip each.
- A process that dies mid-call leaves its reservation (or lease) behind; `sweep` (run by every
  router in the background) deletes expired reservations and releases their tokens, so nothing
  dangles for longer than the reservation's lifetime (longer than any call can last).
"""

from __future__ import annotations

import asyncio
import re
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy import BigInteger, Connection, Date, Engine, Integer, bindparam, text

from core.db import write_transaction
from core.models import UTCDateTime

UNLIMITED = 2**62
MESSAGE_OVERHEAD_TOKENS = 32  # role markers and per-message framing the providers add
IMAGE_TOKENS_ESTIMATE = 2_000  # generous; providers charge ~250–1,600 for a typical image

# (CAST: psycopg sends a small number as int2 or int4, and PostgreSQL would add two of them
# in that type and overflow.)
_COUNT = """
INSERT INTO ai_provider_quota_counters AS c (config_id, day, used_tokens, reserved_tokens)
SELECT :config_id, :day, 0, :tokens
WHERE CAST(:tokens AS BIGINT) + CAST(:margin AS BIGINT) <= :daily_limit
  AND CAST(:tokens AS BIGINT) + CAST(:margin AS BIGINT) + (
      SELECT COALESCE(SUM(used_tokens + reserved_tokens), 0) FROM ai_provider_quota_counters
      WHERE config_id = :config_id AND day >= :month_start AND day < :day
  ) <= :monthly_limit
ON CONFLICT (config_id, day) DO UPDATE
SET reserved_tokens = c.reserved_tokens + excluded.reserved_tokens
WHERE c.used_tokens + c.reserved_tokens + excluded.reserved_tokens + CAST(:margin AS BIGINT)
      <= :daily_limit
  AND c.used_tokens + c.reserved_tokens + excluded.reserved_tokens + CAST(:margin AS BIGINT) + (
      SELECT COALESCE(SUM(used_tokens + reserved_tokens), 0) FROM ai_provider_quota_counters
      WHERE config_id = :config_id AND day >= :month_start AND day < :day
  ) <= :monthly_limit
RETURNING config_id
"""
_HOLD_COLUMNS = (
    "INSERT INTO ai_provider_quota_reservations (config_id, day, tokens, expires_at, created_at)"
)
_TIMES = (bindparam("expires_at", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))
# SQLite: two statements in one transaction (the first takes the database's write lock).
_COUNT_SQLITE = text(_COUNT)
_HOLD_SQLITE = text(
    _HOLD_COLUMNS + " VALUES (:config_id, :day, :tokens, :expires_at, :now) RETURNING id"
).bindparams(*_TIMES)
# PostgreSQL: one statement, so one round trip in autocommit mode; the hold is inserted only if
# the counter took the tokens.
_RESERVE_PG = (
    "WITH taken AS ("
    + _COUNT
    + ")\n"
    + _HOLD_COLUMNS
    + "\nSELECT config_id, :day, :tokens, :expires_at, :now FROM taken RETURNING id"
)
_RESERVE_PG_SQLALCHEMY = text(_RESERVE_PG).bindparams(*_TIMES)
_RESERVE_PG_PSYCOPG = re.sub(r":(\w+)", r"%(\1)s", _RESERVE_PG)
_RELEASE = text(
    "DELETE FROM ai_provider_quota_reservations WHERE id IN :ids RETURNING id, tokens"
).bindparams(bindparam("ids", expanding=True))
# Taking tokens out of a hold, only if it is still there and holds that many: a call's draw on a
# lease (they move to used) or a lease giving back what no call was promised (they are freed).
_TAKE = text(
    "UPDATE ai_provider_quota_reservations SET tokens = tokens - :tokens "
    "WHERE id = :id AND tokens >= :tokens RETURNING id"
)
_SHRINK_PG_PSYCOPG = """
WITH shrunk AS (
    UPDATE ai_provider_quota_reservations SET tokens = tokens - %(tokens)s
    WHERE id = %(id)s AND tokens >= %(tokens)s RETURNING config_id, day
)
UPDATE ai_provider_quota_counters AS c SET reserved_tokens = c.reserved_tokens - %(tokens)s
FROM shrunk WHERE c.config_id = shrunk.config_id AND c.day = shrunk.day
RETURNING c.config_id
"""
_RELEASE_HELD = text("""
UPDATE ai_provider_quota_counters SET reserved_tokens = reserved_tokens - :released
WHERE config_id = :config_id AND day = :day
""")
# Usage is counted for every config, limited or not, so a limit set later in the day or month
# already sees what was used before it. (A config deleted meanwhile is skipped.)
_ADD_USED = text("""
INSERT INTO ai_provider_quota_counters AS c (config_id, day, used_tokens, reserved_tokens)
SELECT :config_id, :day, :used, 0
WHERE EXISTS (SELECT 1 FROM ai_provider_configs WHERE id = :config_id)
ON CONFLICT (config_id, day) DO UPDATE SET used_tokens = c.used_tokens + excluded.used_tokens
""")
_EXPIRED = (
    text(
        "DELETE FROM ai_provider_quota_reservations WHERE expires_at < :now "
        "RETURNING config_id, day, tokens"
    )
    .bindparams(bindparam("now", type_=UTCDateTime()))
    .columns(config_id=Integer(), day=Date(), tokens=BigInteger())
)
_STANDING = text("""
SELECT
  COALESCE(SUM(CASE WHEN day = :day THEN used_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN day = :day THEN reserved_tokens ELSE 0 END), 0),
  COALESCE(SUM(used_tokens), 0),
  COALESCE(SUM(reserved_tokens), 0)
FROM ai_provider_quota_counters WHERE config_id = :config_id AND day >= :month_start AND day <= :day
""")


@dataclass(frozen=True)
class Reservation:
    """Tokens held on a config's day. `draw` marks one call's share of a lease: settling it
    draws the call's usage down from the lease's row instead of finishing the row."""

    id: int
    config_id: int
    day: date
    tokens: int
    draw: bool = False


@dataclass(frozen=True)
class Spend:
    """What one finished call used, against its config's day (and the hold it had, if any)."""

    config_id: int
    day: date
    tokens: int
    reservation: Reservation | None = None


@dataclass(frozen=True)
class Standing:
    """A config's tokens in the current UTC day and month (used = settled, reserved = in flight)."""

    day_used: int
    day_reserved: int
    month_used: int
    month_reserved: int


def reservation_size(
    prompt: str, system_prompt: str | None, max_output_tokens: int, images: int = 0
) -> int:
    """An upper bound on the tokens a text call can use (see the module docstring)."""
    prompt_bytes = len(prompt.encode()) + len((system_prompt or "").encode())
    overhead = MESSAGE_OVERHEAD_TOKENS * (2 if system_prompt else 1)
    return prompt_bytes + overhead + images * IMAGE_TOKENS_ESTIMATE + max_output_tokens


def month_start(day: date) -> date:
    return day.replace(day=1)


class QuotaLedger:
    """Reservations and counters for every config, in the database behind `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _AsyncConnections] = (
            weakref.WeakKeyDictionary()
        )

    def reserve(
        self,
        config_id: int,
        tokens: int,
        daily_limit: int | None,
        monthly_limit: int | None,
        now: datetime,
        ttl: timedelta,
        margin: int = 0,
    ) -> Reservation | None:
        """Hold `tokens` against the config's limits, if `margin` more tokens would still fit;
        None when they would not."""
        params = _params(config_id, tokens, daily_limit, monthly_limit, now, ttl, margin)
        with write_transaction(self._engine) as conn:
            if self._postgres:
                hold_id = conn.execute(_RESERVE_PG_SQLALCHEMY, params).scalar()
            elif conn.execute(_COUNT_SQLITE, params).first() is None:
                hold_id = None
            else:
                hold_id = conn.execute(_HOLD_SQLITE, params).scalar_one()
        return None if hold_id is None else Reservation(hold_id, config_id, params["day"], tokens)

    async def reserve_async(
        self,
        config_id: int,
        tokens: int,
        daily_limit: int | None,
        monthly_limit: int | None,
        now: datetime,
        ttl: timedelta,
        margin: int = 0,
    ) -> Reservation | None:
        """`reserve` for the event loop. On PostgreSQL it runs the one-statement reservation
        over psycopg's native async connections, skipping both a thread hop and the ORM, so a
        call that a lease cannot serve pays one round trip (~0.1 ms)."""
        if not self._postgres:
            return await asyncio.to_thread(
                self.reserve, config_id, tokens, daily_limit, monthly_limit, now, ttl, margin
            )
        params = _params(config_id, tokens, daily_limit, monthly_limit, now, ttl, margin)
        hold_id = await self._connections().fetch_value(_RESERVE_PG_PSYCOPG, params)
        return None if hold_id is None else Reservation(hold_id, config_id, params["day"], tokens)

    async def give_back_async(self, hold: Reservation, tokens: int) -> bool:
        """Release `tokens` of a lease that no call will draw on, keeping the rest held;
        False if the lease was already given back whole."""
        params = {"id": hold.id, "tokens": tokens}
        if self._postgres:
            return await self._connections().fetch_value(_SHRINK_PG_PSYCOPG, params) is not None
        return await asyncio.to_thread(self._give_back, hold, tokens)

    def _give_back(self, hold: Reservation, tokens: int) -> bool:
        with write_transaction(self._engine) as conn:
            return self.shrink(conn, hold, tokens)

    @staticmethod
    def shrink(conn: Connection, hold: Reservation, tokens: int) -> bool:
        """`give_back_async` inside the caller's transaction."""
        row = conn.execute(_TAKE, {"id": hold.id, "tokens": tokens}).first()
        if row is not None:
            conn.execute(
                _RELEASE_HELD, {"config_id": hold.config_id, "day": hold.day, "released": tokens}
            )
        return row is not None

    def _connections(self) -> _AsyncConnections:
        loop = asyncio.get_running_loop()
        pool = self._async.get(loop)
        if pool is None:
            url = self._engine.url.set(drivername="postgresql")
            pool = self._async[loop] = _AsyncConnections(url.render_as_string(False))
        return pool

    async def aclose(self) -> None:
        """Close this event loop's async connections (PostgreSQL)."""
        pool = self._async.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

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
        used: dict[tuple[int, date], int] = {}
        freed: dict[tuple[int, date], int] = {}
        drawn: dict[int, tuple[tuple[int, date], int]] = {}
        finished: dict[int, tuple[int, date]] = {}
        for spend in items:
            hold = spend.reservation
            key = (hold.config_id, hold.day) if hold is not None else (spend.config_id, spend.day)
            used[key] = used.get(key, 0) + spend.tokens
            if hold is None:
                continue
            if hold.draw:
                drawn[hold.id] = (key, drawn.get(hold.id, (key, 0))[1] + spend.tokens)
            else:
                finished[hold.id] = key
        for lease_id, (key, tokens) in drawn.items():
            if not tokens:
                continue
            if conn.execute(_TAKE, {"id": lease_id, "tokens": tokens}).first() is not None:
                freed[key] = freed.get(key, 0) + tokens
            else:  # swept, or its calls used more than it held (images): finish it
                finished[lease_id] = key
        if finished:
            released = dict(conn.execute(_RELEASE, {"ids": list(finished)}).all())  # type: ignore[arg-type]
            for hold_id, key in finished.items():
                freed[key] = freed.get(key, 0) + released.get(hold_id, 0)
        if any(freed.values()):
            conn.execute(
                _RELEASE_HELD,
                [{"config_id": c, "day": d, "released": n} for (c, d), n in freed.items() if n],
            )
        if any(used.values()):
            conn.execute(
                _ADD_USED,
                [{"config_id": c, "day": d, "used": n} for (c, d), n in used.items() if n],
            )

    def sweep(self, now: datetime) -> int:
        """Release every expired hold (left by a crashed process); returns how many."""
        with write_transaction(self._engine) as conn:
            expired = conn.execute(_EXPIRED, {"now": now}).all()
            if expired:
                conn.execute(
                    _RELEASE_HELD,
                    [{"config_id": c, "day": d, "released": n} for c, d, n in expired],
                )
        return len(expired)

    def standing(self, config_id: int, now: datetime) -> Standing:
        """Used and reserved tokens today and this month, for explain() and the console."""
        day = now.date()
        with self._engine.connect() as conn:
            row = conn.execute(
                _STANDING,
                {"config_id": config_id, "day": day, "month_start": month_start(day)},
            ).one()
        return Standing(*(int(value) for value in row))


def _params(
    config_id: int,
    tokens: int,
    daily_limit: int | None,
    monthly_limit: int | None,
    now: datetime,
    ttl: timedelta,
    margin: int,
) -> dict[str, Any]:
    if tokens < 0 or margin < 0:  # either would let a hold exceed the limit
        raise ValueError(f"cannot hold {tokens} tokens with a margin of {margin}")
    day = now.date()
    return {
        "config_id": config_id,
        "day": day,
        "tokens": tokens,
        "margin": margin,
        "month_start": month_start(day),
        "daily_limit": UNLIMITED if daily_limit is None else daily_limit,
        "monthly_limit": UNLIMITED if monthly_limit is None else monthly_limit,
        "expires_at": now + ttl,
        "now": now,
    }


class _AsyncConnections:
    """A few autocommit psycopg AsyncConnections for one event loop, reused call after call."""

    def __init__(self, conninfo: str, size: int = 4) -> None:
        self._conninfo = conninfo
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._slots = asyncio.Semaphore(size)

    async def fetch_value(self, query: str, params: dict[str, Any]) -> Any:
        """The first column of the first row (or None); retried once on a dropped connection."""
        async with self._slots:
            for attempt in (1, 2):
                conn = self._idle.pop() if self._idle else await self._connect()
                try:
                    row = await (await conn.execute(query, params)).fetchone()
                except psycopg.OperationalError:
                    await conn.close()
                    if attempt == 2:
                        raise
                    continue
                self._idle.append(conn)
                return None if row is None else row[0]
        return None  # unreachable: the loop returns or raises

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        # synchronous_commit=off: a reservation returns without waiting for the WAL flush. Only
        # a crash of the database server itself can lose the last few holds, and the counters
        # then err on the side of the caller (a lost hold is settled as released = 0).
        return await psycopg.AsyncConnection.connect(
            self._conninfo, autocommit=True, options="-c synchronous_commit=off"
        )

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()
