"""Usage-log writes: one row per provider attempt, with tokens, cost, latency and outcome.

Routers hand finished attempts to a `UsageWriter`. `submit` appends the row to this process's
spool file on local disk (core/usage/spool.py) and returns: from then on the row survives the
process, and logging adds no database round trip to a call. A background thread ships the
spool to the database in batched transactions, each inserting the rows and settling their
quota reservations together, and keeps at it with backoff for as long as the database is away.
A row the database refuses (a DataError or IntegrityError) is split out of its batch and kept
in the spool directory's dead-letter file, so it never holds up or drops the others. The same
thread ships the spools of processes that died, gives back quota leases and sweeps expired
holds. `flush()` waits until everything submitted is stored; `close()` flushes and stops.

The quota guarantee does not depend on the writer: the reservation made before the call
already bounds what the call can use.

`log_provider_usage` (core/usage/seed.py) is the seed's synchronous helper for code that
calls a provider itself.

Analytics live beside it and are never loaded by the router: the seed's three monitoring
queries in core/usage/monitoring.py, the console's in core/usage/queries.py.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from core import metrics
from core.db import write_transaction
from core.models import ProviderConfig, UsageLog, utcnow
from core.quota.leases import QuotaLeases
from core.quota.ledger import QuotaLedger, Reservation, Spend
from core.usage import spool
from core.usage.records import UsageRecord, decode, encode

__all__ = ["UsageRecord", "UsageWriter"]

log = logging.getLogger(__name__)

BATCH_LIMIT = 500
LINGER_S = 0.05  # gather attempts this long before a write: one transaction serves many calls
SWEEP_EVERY = timedelta(seconds=10)  # with HOLD_EXPIRY, a dead process's holds live < 60 s
IDLE_TICK_S = 0.25  # with nothing to write, still wake this often to give back idle leases
ORPHAN_CHECK_S = 10.0  # look for the spools of processes that died this often
BACKOFF_FIRST_S = 0.2  # the database is away: wait this long, doubling, ...
BACKOFF_MAX_S = 5.0  # ...up to this, between tries
SPOOL_WARN_BYTES = 8 * 1024 * 1024  # warn again each time the backlog doubles past this

# What the database refuses row by row (as opposed to not answering): split the batch.
_REFUSED = (IntegrityError, DataError)

_Item = tuple[spool.Line, dict[str, Any], Reservation | None]
_LIVE: weakref.WeakSet[UsageWriter] = weakref.WeakSet()
# Read when Prometheus scrapes: what every writer of this process has spooled and not stored.
metrics.USAGE_SPOOL_BYTES.set_function(lambda: sum(w.pending for w in list(_LIVE)))


class UsageWriter:
    """Spools usage rows and ships them (see the module docstring); one per router."""

    def __init__(
        self,
        engine: Engine,
        ledger: QuotaLedger,
        spool_dir: Path,
        leases: QuotaLeases | None = None,
        sweep_every: timedelta = SWEEP_EVERY,
    ):
        self._engine = engine
        self._ledger = ledger
        self._leases = leases
        self._sweep_every = sweep_every
        spool.prepare(spool_dir)
        self.spool_dir = spool.prepare(spool.database_directory(spool_dir, engine.url))
        self._spool = spool.SpoolFile.create(self.spool_dir)
        self._wake = threading.Event()
        self._stop = threading.Event()
        # flush() callers: (bytes to be stored, turns begun when it was called, its event)
        self._waiters: list[tuple[int, int, threading.Event]] = []
        self._turns = 0
        self._waiters_lock = threading.Lock()
        self._refused: set[str] = set()  # attempt ids dead-lettered (a retried batch skips them)
        self._last_sweep = datetime.min.replace(tzinfo=utcnow().tzinfo)
        self._last_orphan_check = float("-inf")
        self._last_renewal = float("-inf")
        self._renewal_failed = False
        self._failures = 0
        self._warned_at = 0
        self._closed = False
        _LIVE.add(self)
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def submit(self, record: UsageRecord, reservation: Reservation | None = None) -> None:
        """Spool one attempt (and the settlement of its reservation, if any). Once this
        returns the row survives this process, whatever happens to it."""
        self._spool.append(encode(record, reservation))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Bytes of usage rows spooled and not yet stored."""
        return self._spool.pending

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is stored; False on timeout (it stays
        spooled, to be stored later by this process or, once it has ended, by another)."""
        if self._closed:
            return True
        done = threading.Event()
        with self._waiters_lock:
            self._waiters.append((self._spool.appended, self._turns, done))
        self._wake.set()
        return done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Store what is spooled (waiting up to `timeout`), then stop. Idempotent. What could
        not be stored stays in the spool file, which any later router or the console ships."""
        if self._closed:
            return
        stored = self.flush(timeout)
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        if stored and not self._thread.is_alive() and not self._spool.pending:
            self._spool.delete()
        else:
            self._spool.close()
        atexit.unregister(self.close)

    def ship_orphans(self) -> int:
        """Ship the spools of processes that died; how many were stored whole (and deleted).
        Run by the writer's thread every ORPHAN_CHECK_S; callable from any one thread."""
        shipped = 0
        for path in spool.orphans(self.spool_dir, self._spool.path):
            file = spool.SpoolFile.take(path)
            if file is None:
                continue
            if file.pending and not self._ship(file):
                file.close()
                continue
            if file.pending:  # its process died halfway through a line: keep what it wrote
                self._reject(spool.Line(None, file.rest(), file.end), None, "a cut-off line")
            file.delete()
            shipped += 1
            log.info("usage writer: stored the spool of a process that ended (%s)", path.name)
        return shipped

    # --- the thread ---

    def _run(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(IDLE_TICK_S)
            self._wake.clear()
            if woken and not self._waiters:
                # Let a batch gather while we sleep, instead of waking for every call: the
                # callers' threads then never wait on this one for the interpreter lock.
                time.sleep(LINGER_S)
            try:
                self._turn()
            except Exception:  # a bug here must not stop the thread that ships every row
                log.exception("usage writer: unexpected failure; trying again")
                self._failures += 1
                self._stop.wait(self._backoff())

    def _turn(self) -> None:
        with self._waiters_lock:
            self._turns += 1
            turn = self._turns
        while not self._ship(self._spool):
            self._renew_holds()  # the rows may wait on a lock while the database still answers
            if self._stop.wait(self._backoff()):
                return
        self._give_back_leases()
        self._renew_holds()
        self._maybe_sweep()
        if time.monotonic() - self._last_orphan_check >= ORPHAN_CHECK_S:
            self._last_orphan_check = time.monotonic()
            self.ship_orphans()
        # A flush returns after a whole turn: its leases given back and, on a writer's first
        # turn, the spools of processes that ended before it started stored.
        self._wake_waiters(turn)

    def _ship(self, file: spool.SpoolFile) -> bool:
        """Store what `file` holds; False when the database is away (the rest stays)."""
        while file.pending:
            lines = file.lines(BATCH_LIMIT)
            if not lines:
                return True  # only a line still being written
            try:
                holds = self._store(self._items(lines))
            except _Unavailable as exc:
                self._failures += 1
                self._warn_unavailable(file, exc.cause)
                return False
            file.mark_done(lines[-1].end)
            if self._leases is not None and file is self._spool:
                self._leases.settled(holds)
            self._renew_holds()  # a long backlog must not let the running calls' holds expire
            if self._failures:
                log.warning("usage writer: the database is back; storing the spooled rows")
                self._failures = 0
            if len(lines) < BATCH_LIMIT:
                # Caught up. Rows that came in meanwhile wait for the next turn's linger:
                # shipping them at once would store a busy router's calls a few at a time,
                # a transaction each (about 1 ms of this process's CPU per call, measured).
                return True
        return True

    def _items(self, lines: list[spool.Line]) -> list[_Item]:
        items: list[_Item] = []
        for line in lines:
            # Let a caller whose answer has come in have the interpreter between rows: pricing
            # one takes ~0.1 ms, and a batch of them at once held up calls (bench/routing.py,
            # PostgreSQL p99: +1.3-1.6 ms over the bare SDK before, +0.7-1.0 ms after).
            time.sleep(0)
            decoded = decode(line.entry) if line.entry is not None else None
            if decoded is None:
                self._reject(line, None, "not a usage row")
            elif decoded[0]["attempt_id"] not in self._refused:
                items.append((line, *decoded))
        return items

    def _store(self, items: list[_Item], deleted_configs: bool = False) -> list[Reservation | None]:
        """Insert the rows and settle their holds in one transaction; the holds settled. A
        batch the database refuses is tried again with the configs deleted since their calls
        looked up (`deleted_configs`, a query that is rarely needed), then split until the row
        it refuses is alone, and that row is dead-lettered (its hold settled without it).
        _Unavailable: no database."""
        if not items:
            return []
        try:
            with write_transaction(self._engine) as conn:
                stored = self._insert_and_settle(conn, items, deleted_configs)
        except _REFUSED as exc:
            if not deleted_configs:
                return self._store(items, deleted_configs=True)
            if len(items) > 1:
                half = len(items) // 2
                return self._store(items[:half], True) + self._store(items[half:], True)
            line, row, hold = items[0]
            self._reject(line, row["attempt_id"], _reason(exc))
            self._settle_refused(row, hold)
        except Exception as exc:
            raise _Unavailable(exc) from None
        else:
            for row in stored:
                metrics.stored_cost(row["provider_type"], row["cost_micro_usd"])
        return [hold for _, _, hold in items]

    def _insert_and_settle(
        self, conn: Connection, items: list[_Item], deleted_configs: bool
    ) -> list[dict[str, Any]]:
        """The rows inserted (a replayed row is not), their holds settled."""
        rows = [row for _, row, _ in items]
        if deleted_configs:
            rows = _without_deleted_configs(conn, rows)
        inserted = set(conn.scalars(_insert_new(conn), rows))
        self._ledger.settle(
            conn,
            [
                _spend(row, hold)
                for row, (_, _, hold) in zip(rows, items, strict=True)
                if row["attempt_id"] in inserted and row["provider_config_id"] is not None
            ],
        )
        return [row for row in rows if row["attempt_id"] in inserted]

    def _settle_refused(self, row: dict[str, Any], hold: Reservation | None) -> None:
        """Count a refused row's tokens and finish its hold, without the row."""
        if hold is None:
            return
        tokens = row["total_tokens"] if isinstance(row["total_tokens"], int) else 0
        cost = row["cost_micro_usd"] if isinstance(row["cost_micro_usd"], int) else None
        spent = max(cost, 0) if cost is not None else hold.micro_usd if tokens else 0
        try:
            with write_transaction(self._engine) as conn:
                self._ledger.settle(
                    conn, [Spend(hold.config_id, hold.day, max(tokens, 0), hold, spent)]
                )
        except Exception as exc:  # the hold expires and is swept
            log.warning("usage writer: settling a refused row failed (%s)", type(exc).__name__)

    def _reject(self, line: spool.Line, attempt_id: str | None, reason: str) -> None:
        if attempt_id is not None:
            self._refused.add(attempt_id)
        spool.dead_letter(self.spool_dir, line, reason)
        metrics.USAGE_DEAD_LETTERS.inc()
        log.error(
            "usage writer: a usage row was refused (%s); it is kept in %s",
            reason,
            self.spool_dir / spool.DEAD_LETTER,
        )

    def _backoff(self) -> float:
        return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(self._failures - 1, 8))

    def _warn_unavailable(self, file: spool.SpoolFile, cause: BaseException) -> None:
        pending = file.pending
        if self._failures == 1 or pending >= 2 * max(self._warned_at, SPOOL_WARN_BYTES // 2):
            self._warned_at = pending
            log.warning(
                "usage writer: the database is unavailable (%s); %s of usage rows wait in %s "
                "and are stored when it is back",
                type(cause).__name__,
                _size(pending),
                self.spool_dir,
            )

    def _wake_waiters(self, turn: int) -> None:
        """Wake the flush() callers whose rows are stored, if this turn began after they
        called."""
        stored = self._spool.stored
        with self._waiters_lock:
            waiting = self._waiters
            self._waiters = [w for w in waiting if w[0] > stored or w[1] >= turn]
        for target, since, event in waiting:
            if target <= stored and since < turn:
                event.set()

    def _give_back_leases(self) -> None:
        """Release what retired leases hold: all of it once their calls are settled, the part
        promised to no call at once. If that fails the tokens stay held until the lease's last
        give-back, or the sweep of the expired lease."""
        whole, part = self._leases.due() if self._leases is not None else ([], [])
        if not whole and not part:
            return
        try:
            with write_transaction(self._engine) as conn:
                for hold, tokens, micro_usd in part:
                    self._ledger.shrink(conn, hold, tokens, micro_usd)
                self._ledger.settle(conn, [Spend(r.config_id, r.day, 0, r) for r in whole])
        except Exception as exc:
            log.warning(
                "usage writer: giving back %d lease(s) failed (%s)",
                len(whole) + len(part),
                type(exc).__name__,
            )

    def _renew_holds(self) -> None:
        """The heartbeat: every sixth of the hold expiry, push the expiry of this process's
        holds forward (core/quota/leases.py)."""
        if self._leases is None:
            return
        expiry = self._leases.expiry
        if time.monotonic() - self._last_renewal < expiry.total_seconds() / 6:
            return
        self._last_renewal = time.monotonic()
        try:
            self._ledger.renew(self._leases.renewable(), utcnow() + expiry)
        except Exception as exc:  # tried again at the next beat; they expire if it never works
            if not self._renewal_failed:
                log.warning("usage writer: renewing token holds failed (%s)", type(exc).__name__)
            self._renewal_failed = True
        else:
            self._renewal_failed = False

    def _maybe_sweep(self) -> None:
        now = utcnow()
        if now - self._last_sweep < self._sweep_every:
            return
        self._last_sweep = now
        try:
            if released := self._ledger.sweep(now):
                log.warning("released %d expired token reservation(s)", released)
        except Exception as exc:
            log.warning("usage writer: sweeping reservations failed (%s)", type(exc).__name__)


class _Unavailable(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause


def _spend(row: dict[str, Any], hold: Reservation | None) -> Spend:
    """What a stored row spent against its config's day. A call that used tokens the price
    data cannot price counts, under a budget, as the worst case its hold allowed for: unknown
    is not free."""
    cost = row["cost_micro_usd"]
    if cost is None:
        cost = hold.micro_usd if hold is not None and row["total_tokens"] else 0
    return Spend(
        row["provider_config_id"], row["created_at"].date(), row["total_tokens"], hold, cost
    )


def _insert_new(conn: Connection) -> Insert:
    """INSERT the rows whose attempt is not stored yet, RETURNING their attempt ids."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return (
        dialect.insert(UsageLog)
        .on_conflict_do_nothing(index_elements=[UsageLog.attempt_id])
        .returning(UsageLog.attempt_id)
    )


def _without_deleted_configs(conn: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The usage rows, with a config deleted since its call no longer referenced (the row
    keeps its provider and model, as deleting a config does to older rows)."""
    ids = {row["provider_config_id"] for row in rows} - {None}
    if ids:
        live = set(conn.scalars(select(ProviderConfig.id).where(ProviderConfig.id.in_(ids))))
        rows = [
            row
            if row["provider_config_id"] in live or row["provider_config_id"] is None
            else row | {"provider_config_id": None}
            for row in rows
        ]
    return rows


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    first_line = (str(cause).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line[:300]}"


def _size(n: int) -> str:
    return f"{n / 1_048_576:.1f} MiB" if n >= 1_048_576 else f"{n / 1024:.0f} KiB"
