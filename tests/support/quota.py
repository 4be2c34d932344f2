"""Quota helpers shared by test modules."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from core.quota.ledger import Demand, Limits, QuotaLedger, Reservation


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
