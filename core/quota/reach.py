"""Reaching the database from the routing path: bounded waits, failing fast while it is away.

`DatabaseReach` runs one statement for the quota ledger and returns its first row. On PostgreSQL
it goes through a psycopg AsyncConnectionPool per event loop, in autocommit mode (one round trip,
no thread hop); on SQLite through a worker thread. A database that does not answer raises
`LedgerUnavailable`: after at most `timeouts.wait_s` for the first call, then at once for
everyone else until a single call finds it back (one try every `RETRY_AFTER_S`). A call never
waits longer, so a frozen server cannot hold callers. A statement that outlives its caller's wait
is not cancelled (psycopg would wait up to 10 s more on a frozen server for the cancel): it goes
on in its own task, and its `late` handler deals with what it still returns.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import Engine

from core.config import DbTimeouts
from core.db import UNAVAILABLE, failure_reason

log = logging.getLogger(__name__)

ASYNC_POOL_SIZE = 4  # PostgreSQL connections per event loop, for reservations
RETRY_AFTER_S = 1.0  # the database did not answer: one call tries it again this often

# What to do with the result of a statement whose caller stopped waiting (a hold to release).
Late = Callable[[asyncio.Future[Any]], Awaitable[None]]


class LedgerUnavailable(Exception):
    """The database did not answer a reservation (down, restarting, frozen or locked)."""


class DatabaseReach:
    """One statement at a time for the ledger (see the module docstring). Thread-safe."""

    def __init__(
        self,
        engine: Engine,
        timeouts: DbTimeouts | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        # None (the console, tests): wait as long as the driver does; the router passes its own.
        self._timeouts = timeouts
        self._clock = clock
        self._health = threading.Lock()
        self._down_until: float | None = None  # while set, queries fail fast until then
        self._down_reason = ""
        self._late: set[asyncio.Future[None]] = set()  # handling results that came too late
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool] = (
            weakref.WeakKeyDictionary()
        )

    async def query(
        self,
        postgres_sql: str,
        on_sqlite: Callable[[dict[str, Any]], Sequence[Any] | None],
        params: dict[str, Any],
        late: Late | None = None,
    ) -> Sequence[Any] | None:
        """One statement's first row (or None), on PostgreSQL through this loop's pool and
        bounded by the timeouts, on SQLite in a worker thread; LedgerUnavailable if the
        database does not answer, at once while it is known to be away."""
        self._admit()
        try:
            if self._postgres:
                row = await self._bounded(self._fetch_postgres(postgres_sql, params), late)
            else:
                row = await asyncio.to_thread(on_sqlite, params)
        except UNAVAILABLE as exc:
            raise self.went_down(exc) from exc
        self._came_up()
        return row

    def _admit(self) -> None:
        """Fail fast while the database is known to be away; let one call through to try it
        again every RETRY_AFTER_S."""
        with self._health:
            if self._down_until is None:
                return
            now = self._clock()
            if now < self._down_until:
                raise LedgerUnavailable(self._down_reason)
            self._down_until = now + RETRY_AFTER_S  # this call tries; the others fail fast

    def went_down(self, exc: BaseException) -> LedgerUnavailable:
        reason = f"the database did not answer a token reservation ({failure_reason(exc)})"
        with self._health:
            first = self._down_until is None
            self._down_until = self._clock() + RETRY_AFTER_S
            self._down_reason = reason
        if first:
            log.warning("quota: %s; limited calls fail fast until it answers", reason)
        return LedgerUnavailable(reason)

    def _came_up(self) -> None:
        if self._down_until is None:  # the common case: no lock taken
            return
        with self._health:
            self._down_until = None
        log.warning("quota: the database answers token reservations again")

    async def _bounded(
        self,
        statement: Awaitable[Sequence[Any] | None],
        late: Late | None,
    ) -> Sequence[Any] | None:
        """Wait for a statement at most `timeouts.wait_s`. It is not cancelled (psycopg would
        wait up to 10 s more on a frozen server for the cancel): it goes on in its own task,
        and `late` deals with what it still returns (a hold is released as soon as it comes)."""
        if self._timeouts is None:
            return await statement
        task = asyncio.ensure_future(statement)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._timeouts.wait_s)
        except (TimeoutError, asyncio.CancelledError):  # waited too long, or the caller left
            if late is not None:
                follow_up = asyncio.ensure_future(late(task))
                self._late.add(follow_up)
                follow_up.add_done_callback(self._late.discard)
            else:  # of no use any more; retrieved, or asyncio logs its failure with a traceback
                task.add_done_callback(_retrieve)
            raise

    async def _fetch_postgres(self, statement: str, params: dict[str, Any]) -> Sequence[Any] | None:
        # A server that restarted (or failed over) has ended every pooled connection: the first
        # to fail sends the pool to check them all and drop the dead ones, and the statement is
        # tried once more on a live or new connection. It is atomic, so nothing is doubled.
        pool = await self._pool()
        for attempt in (1, 2):
            try:
                async with pool.connection() as conn:
                    return await (await conn.execute(statement, params)).fetchone()
            except psycopg.OperationalError:
                if attempt == 2:
                    raise
                await pool.check()
        return None  # unreachable: the loop returns or raises

    async def _pool(self) -> AsyncConnectionPool:
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            # synchronous_commit=off: a reservation returns without waiting for the WAL flush.
            # Only a crash of the database server itself can lose the last few holds, and the
            # counters then err on the side of the caller (a lost hold settles as released 0).
            url = self._engine.url.set(drivername="postgresql").render_as_string(False)
            options = "-c synchronous_commit=off"
            bounds: dict[str, Any] = {}
            if self._timeouts is not None:
                bounds = self._timeouts.libpq()
                options += " " + str(bounds.pop("options"))
            pool = self._pools[loop] = AsyncConnectionPool(
                url,
                min_size=1,
                max_size=ASYNC_POOL_SIZE,
                kwargs={"autocommit": True, "options": options, **bounds},
                timeout=self._timeouts.wait_s if self._timeouts is not None else 30.0,
                open=False,
            )
        if pool.closed:  # new, or a concurrent first call is still opening it (then a no-op)
            await pool.open()
        return pool

    async def aclose(self) -> None:
        """Close this event loop's connections (PostgreSQL), after releasing the holds the
        server granted late (waiting for them up to twice `timeouts.wait_s`)."""
        loop = asyncio.get_running_loop()
        if late := [task for task in self._late if task.get_loop() is loop]:
            assert self._timeouts is not None
            await asyncio.wait(late, timeout=2 * self._timeouts.wait_s)
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
