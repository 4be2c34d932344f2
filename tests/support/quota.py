"""Quota helpers shared by test modules."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from sqlalchemy import select

from core.models import QuotaCounter, QuotaReservation
from core.quota.ledger import Demand, Limits, QuotaLedger, Reservation
from tests.support.database import MigratedDatabase


def demand(
    config_id: int, tokens: int, daily: int | None, monthly: int | None, now: datetime
) -> Demand:
    return Demand(config_id, tokens, Limits(daily, monthly), now)


def reserve_now(
    ledger: QuotaLedger,
    config_id: int,
    tokens: int,
    daily: int | None,
    monthly: int | None,
    now: datetime,
    ttl: timedelta,
    margin: int = 0,
) -> Reservation | None:
    """One reservation from synchronous test code, in an event loop of its own."""

    async def reserve() -> Reservation | None:
        try:
            return await ledger.reserve(demand(config_id, tokens, daily, monthly, now), ttl, margin)
        finally:
            await ledger.aclose()

    return asyncio.run(reserve())


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def holds(db: MigratedDatabase) -> list[tuple[int, int]]:
    with db.session() as session:
        rows = session.scalars(select(QuotaReservation).order_by(QuotaReservation.id))
        return [(row.id, row.tokens) for row in rows]


def counter(db: MigratedDatabase, config_id: int) -> tuple[int, int]:
    """(used, reserved) today for the config, summed over its days."""
    with db.session() as session:
        rows = session.scalars(select(QuotaCounter).where(QuotaCounter.config_id == config_id))
        found = list(rows)
    return sum(r.used_tokens for r in found), sum(r.reserved_tokens for r in found)
