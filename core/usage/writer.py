"""Usage-log writes: one row per provider attempt, with tokens, cost, latency and outcome.

Routers hand finished attempts to a `UsageWriter`, a background thread that settles the quota
reservation and inserts the usage row in batched transactions, so logging adds no database
round trip to a call's latency. `flush()` waits until everything handed over is stored; the
router flushes on `aclose()` and at interpreter exit. The quota guarantee does not depend on
the writer: the reservation made before the call already bounds what the call can use.

`log_provider_usage` is the seed's synchronous helper for code that calls a provider itself.

Analytics live beside it and are never loaded by the router: the seed's three monitoring
queries in core/usage/monitoring.py, the console's in core/usage/queries.py.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.orm import Session

from core.db import write_transaction
from core.models import ProviderConfig, UsageLog, utcnow
from core.pricing import estimate_cost_usd, to_micro_usd
from core.quota.leases import QuotaLeases
from core.quota.ledger import QuotaLedger, Reservation, Spend

log = logging.getLogger(__name__)

BATCH_LIMIT = 500
LINGER_S = 0.05  # gather attempts this long before a write: one transaction serves many calls
SWEEP_EVERY = timedelta(seconds=30)
IDLE_TICK_S = 0.25  # with nothing to write, still wake this often to give back idle leases


@dataclass(frozen=True)
class UsageRecord:
    """One attempt, as stored in ai_provider_usage_logs."""

    provider_config_id: int | None
    user_id: int | None
    provider_type: str
    model_name: str
    task_type: str
    status: str
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_micro_usd: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    latency_ms: int = 0
    source: str = "router"
    created_at: datetime = field(default_factory=utcnow)
    attempt_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class _Settlement:
    record: UsageRecord
    reservation: Reservation | None


class UsageWriter:
    """Background writer of usage rows and quota settlements for one engine; it also gives
    back the router's quota leases once their calls are settled."""

    def __init__(
        self,
        engine: Engine,
        ledger: QuotaLedger,
        leases: QuotaLeases | None = None,
        sweep_every: timedelta = SWEEP_EVERY,
    ):
        self._engine = engine
        self._ledger = ledger
        self._leases = leases
        self._sweep_every = sweep_every
        self._queue: queue.SimpleQueue[_Settlement | threading.Event | None] = queue.SimpleQueue()
        self._last_sweep = datetime.min.replace(tzinfo=utcnow().tzinfo)
        self._thread = threading.Thread(target=self._run, name="usage-writer", daemon=True)
        self._closed = False
        self._thread.start()
        atexit.register(self.close)

    def submit(self, record: UsageRecord, reservation: Reservation | None = None) -> None:
        """Queue one attempt (and the settlement of its reservation, if any)."""
        self._queue.put(_Settlement(record, reservation))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written; False on timeout."""
        if self._closed:
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        """Write what is queued, then stop the thread. Idempotent."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)
        atexit.unregister(self.close)

    # --- the thread ---

    def _run(self) -> None:
        while True:
            try:
                first: _Settlement | threading.Event | None = self._queue.get(timeout=IDLE_TICK_S)
            except queue.Empty:
                self._give_back_leases()
                self._maybe_sweep()
                continue
            if isinstance(first, _Settlement):
                # Let a batch gather while we sleep, instead of waking for every call: the
                # callers' threads then never wait on this one for the interpreter lock.
                time.sleep(LINGER_S)
            batch: list[_Settlement] = []
            waiters: list[threading.Event] = []
            stop = False
            item: _Settlement | threading.Event | None = first
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    batch.append(item)
                if len(batch) >= BATCH_LIMIT:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch and self._write(batch) and self._leases is not None:
                self._leases.settled(item.reservation for item in batch)
            self._give_back_leases()
            self._maybe_sweep()
            for waiter in waiters:
                waiter.set()
            if stop:
                return

    def _write(self, batch: list[_Settlement]) -> bool:
        for attempt in range(3):
            try:
                with write_transaction(self._engine) as conn:
                    rows = _rows_for(conn, batch)
                    self._ledger.settle(
                        conn,
                        [
                            Spend(
                                row["provider_config_id"],
                                row["created_at"].date(),
                                row["total_tokens"],
                                item.reservation,
                            )
                            for item, row in zip(batch, rows, strict=True)
                            if row["provider_config_id"] is not None
                        ],
                    )
                    conn.execute(insert(UsageLog), rows)
                return True
            except Exception as exc:  # the database is down or refused the batch
                log.warning(
                    "usage writer: writing %d row(s) failed (%s), attempt %d of 3",
                    len(batch),
                    type(exc).__name__,
                    attempt + 1,
                )
                time.sleep(0.2 * 5**attempt)
        log.error("usage writer: dropped %d usage row(s) after 3 failed attempts", len(batch))
        return False

    def _give_back_leases(self) -> None:
        """Release what retired leases hold: all of it once their calls are settled, the part
        promised to no call at once. If that fails the tokens stay held until the lease's last
        give-back, or the sweep of the expired lease."""
        whole, part = self._leases.due() if self._leases is not None else ([], [])
        if not whole and not part:
            return
        try:
            with write_transaction(self._engine) as conn:
                for hold, tokens in part:
                    self._ledger.shrink(conn, hold, tokens)
                self._ledger.settle(conn, [Spend(r.config_id, r.day, 0, r) for r in whole])
        except Exception as exc:
            log.warning(
                "usage writer: giving back %d lease(s) failed (%s)",
                len(whole) + len(part),
                type(exc).__name__,
            )

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


def _rows_for(conn: Connection, batch: list[_Settlement]) -> list[dict[str, Any]]:
    """The usage rows to insert; a config deleted since its call is no longer referenced (the
    row keeps its provider and model, as deleting a config does to older rows)."""
    rows = [asdict(item.record) for item in batch]
    ids = {row["provider_config_id"] for row in rows} - {None}
    if ids:
        live = set(conn.scalars(select(ProviderConfig.id).where(ProviderConfig.id.in_(ids))))
        for row in rows:
            if row["provider_config_id"] not in live:
                row["provider_config_id"] = None
    return rows


def log_provider_usage(
    session: Session,
    config_id: int | None,
    user_id: int | None,
    task: str,
    *,
    provider_type: str | None = None,
    model_name: str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    total_tokens: int | None = None,
    cost_usd: Decimal | None = None,
    status: str = "success",
    error_message: str | None = None,
    latency_ms: int = 0,
    estimated_cost_usd: Decimal | None = None,
) -> UsageLog:
    """Add a usage row to `session` (the seed's helper); provider and model default to the
    config's, and cost to genai-prices' figure for the tokens."""
    config = session.get(ProviderConfig, config_id) if config_id is not None else None
    provider_type = provider_type or (config.provider_type if config else None)
    model_name = model_name or (config.model_name if config else None)
    if not provider_type or not model_name:
        raise ValueError("give provider_type and model_name, or the id of a stored config")
    cost_usd = cost_usd if cost_usd is not None else estimated_cost_usd
    if cost_usd is None:
        cost_usd = estimate_cost_usd(provider_type, model_name, input_tokens, output_tokens)
    row = UsageLog(
        provider_config_id=config_id,
        user_id=user_id,
        provider_type=provider_type,
        model_name=model_name,
        task_type=task,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens if total_tokens is None else total_tokens,
        cost_micro_usd=to_micro_usd(cost_usd),
        status=status,
        error_message=error_message,
        latency_ms=latency_ms,
    )
    session.add(row)
    return row
