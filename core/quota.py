"""Daily and monthly token limits that hold across processes: reservations in the database.

Mechanism (the same SQL on PostgreSQL and SQLite):

- One counter row per config and UTC day (`ai_provider_quota_counters`: used and reserved
  tokens). A month's total is the sum of its day rows, so a call is counted in the day and month
  in which it started.
- Before a call, `reserve` runs one atomic conditional upsert: insert today's row, or add to its
  `reserved_tokens`, only if used + reserved + this call stays within the daily limit and the
  month's other days + today + this call within the monthly limit. On PostgreSQL the upsert
  takes the row lock and re-checks the condition against the newest row version; on SQLite the
  statement holds the database's write lock. Either way concurrent callers, in any number of
  processes, are serialised on that one row and cannot both take the last tokens. A reservation
  row (`ai_provider_quota_reservations`) with an expiry records each hold.
- The reservation is an upper bound: prompt bytes (a token never covers less than one byte of
  UTF-8 text) plus a per-message allowance plus max_output_tokens. After the call, `settle`
  deletes the reservation and moves the real usage from reserved to used. So for text prompts
  the tokens recorded against a config in a period never exceed its limit. (Images have no such
  bound; their estimate is generous but not a proof.)
- A process that dies mid-call leaves its reservation behind; `sweep` (run by every router in
  the background) deletes expired reservations and releases their tokens, so nothing dangles
  for longer than the reservation's lifetime (longer than any call can last).
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

_COUNT = """
INSERT INTO ai_provider_quota_counters AS c (config_id, day, used_tokens, reserved_tokens)
SELECT :config_id, :day, 0, :tokens
WHERE :tokens <= :daily_limit
  AND :tokens + (
      SELECT COALESCE(SUM(used_tokens + reserved_tokens), 0) FROM ai_provider_quota_counters
      WHERE config_id = :config_id AND day >= :month_start AND day < :day
  ) <= :monthly_limit
ON CONFLICT (config_id, day) DO UPDATE
SET reserved_tokens = c.reserved_tokens + excluded.reserved_tokens
WHERE c.used_tokens + c.reserved_tokens + excluded.reserved_tokens <= :daily_limit
  AND c.used_tokens + c.reserved_tokens + excluded.reserved_tokens + (
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
    id: int
    config_id: int
    day: date
    tokens: int


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
    ) -> Reservation | None:
        """Hold `tokens` against the config's limits; None when that would exceed one."""
        params = _params(config_id, tokens, daily_limit, monthly_limit, now, ttl)
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
    ) -> Reservation | None:
        """`reserve` for the event loop. On PostgreSQL it runs the one-statement reservation
        over psycopg's native async connections, skipping both a thread hop and the ORM: it is
        on every limited call's path, and this keeps it to one round trip (~0.1 ms)."""
        if not self._postgres:
            return await asyncio.to_thread(
                self.reserve, config_id, tokens, daily_limit, monthly_limit, now, ttl
            )
        params = _params(config_id, tokens, daily_limit, monthly_limit, now, ttl)
        hold_id = await self._connections().fetch_value(_RESERVE_PG_PSYCOPG, params)
        return None if hold_id is None else Reservation(hold_id, config_id, params["day"], tokens)

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
        """Record what calls really used and release their holds, inside the caller's
        transaction, in a few statements however many calls there are. A hold that a sweep
        already released (an overdue call) only adds its usage."""
        items = list(spends)
        ids = [spend.reservation.id for spend in items if spend.reservation is not None]
        released: dict[int, int] = (
            dict(conn.execute(_RELEASE, {"ids": ids}).all())  # type: ignore[arg-type]
            if ids
            else {}
        )
        freed: dict[tuple[int, date], int] = {}
        used: dict[tuple[int, date], int] = {}
        for spend in items:
            key = (spend.config_id, spend.day)
            if spend.reservation is not None:
                key = (spend.reservation.config_id, spend.reservation.day)
                freed[key] = freed.get(key, 0) + released.get(spend.reservation.id, 0)
            used[key] = used.get(key, 0) + spend.tokens
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
) -> dict[str, Any]:
    day = now.date()
    return {
        "config_id": config_id,
        "day": day,
        "tokens": tokens,
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
