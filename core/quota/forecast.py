"""When a config's limits will be reached at the rate of its last 7 days (cards and Usage page).

The rate is what the quota counters say the config used (settled tokens and micro-dollars) in
the last 7 whole UTC days and today so far, over that time (or since the config was created, if
later). A limit already used up is "reached"; otherwise, at that rate, the moment what is left
runs out, if it falls within the period ("daily budget reached about 17:40 UTC", "monthly token
limit reached about Dec 23"), else "not reached this month at the last 7 days' rate".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.models import ProviderConfig, QuotaCounter
from core.pricing import format_usd
from core.quota.ledger import month_start

WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class Forecast:
    """One limit of one config: where it stands now and when it will be reached."""

    period: Literal["day", "month"]
    unit: Literal["tokens", "usd"]
    limit: int  # tokens or micro-dollars
    used: int
    reached_at: datetime | None  # None: not within this period at the current rate

    @property
    def reached(self) -> bool:
        return self.used >= self.limit

    @property
    def name(self) -> str:
        """E.g. "daily budget", "monthly token limit"."""
        return f"{'daily' if self.period == 'day' else 'monthly'} " + (
            "token limit" if self.unit == "tokens" else "budget"
        )

    @property
    def used_text(self) -> str:
        if self.unit == "tokens":
            return f"{self.used:,} of {self.limit:,} tokens"
        return f"{format_usd(self.used)} of {format_usd(self.limit)}"

    @property
    def sentence(self) -> str:
        """str(self) as a sentence: "Monthly budget reached about Dec 23"."""
        text = str(self)
        return text[:1].upper() + text[1:]

    def __str__(self) -> str:
        if self.reached:
            return f"{self.name} reached"
        if self.reached_at is None:
            this = "today" if self.period == "day" else "this month"
            return f"{self.name}: not reached {this} at the last 7 days' rate"
        when = (
            f"{self.reached_at:%H:%M} UTC"
            if self.period == "day"
            else f"{self.reached_at:%b} {self.reached_at.day}"
        )
        return f"{self.name} reached about {when}"


def forecasts(
    session: Session, configs: Iterable[ProviderConfig], now: datetime
) -> dict[int, list[Forecast]]:
    """Each limited config's forecasts (token limits, then budgets; day, then month)."""
    limited = {c.id: c for c in configs if _limits(c)}
    if not limited:
        return {}
    now = now.astimezone(UTC)
    today = now.date()
    first = min(today - WINDOW, month_start(today))
    rows = session.execute(
        select(
            QuotaCounter.config_id,
            QuotaCounter.day,
            func.sum(QuotaCounter.used_tokens),
            func.sum(QuotaCounter.used_micro_usd),
        )
        .where(QuotaCounter.config_id.in_(limited), QuotaCounter.day >= first)
        .group_by(QuotaCounter.config_id, QuotaCounter.day)
    ).all()
    used: dict[int, dict[date, tuple[int, int]]] = {}
    for config_id, day, tokens, micro_usd in rows:
        used.setdefault(config_id, {})[day] = (int(tokens or 0), int(micro_usd or 0))
    return {
        config_id: _forecast(config, used.get(config_id, {}), now)
        for config_id, config in limited.items()
    }


def _forecast(
    config: ProviderConfig, days: dict[date, tuple[int, int]], now: datetime
) -> list[Forecast]:
    today = now.date()
    midnight = datetime.combine(today, time(), UTC)
    start = max(midnight - WINDOW, config.created_at.astimezone(UTC))
    elapsed = (now - start).total_seconds()
    out = []
    for unit, index, (daily, monthly) in _limits(config):
        in_window = sum(v[index] for d, v in days.items() if d >= start.date())
        rate = in_window / elapsed if elapsed > 0 else 0.0  # per second
        this_month = sum(v[index] for d, v in days.items() if d >= month_start(today))
        ends = {"day": midnight + timedelta(days=1), "month": _next_month(midnight)}
        periods = (("day", daily, days.get(today, (0, 0))[index]), ("month", monthly, this_month))
        for period, limit, spent in periods:
            if limit is None:
                continue
            reached_at = None
            if rate > 0 and spent < limit:
                at = now + timedelta(seconds=(limit - spent) / rate)
                reached_at = at if at < ends[period] else None
            out.append(Forecast(period, unit, limit, spent, reached_at))  # type: ignore[arg-type]
    return out


def _limits(config: ProviderConfig) -> list[tuple[str, int, tuple[int | None, int | None]]]:
    pairs = [
        ("tokens", 0, (config.daily_token_limit, config.monthly_token_limit)),
        ("usd", 1, (config.daily_budget_micro_usd, config.monthly_budget_micro_usd)),
    ]
    return [pair for pair in pairs if any(limit is not None for limit in pair[2])]


def _next_month(midnight: datetime) -> datetime:
    first = midnight.replace(day=1)
    return (first + timedelta(days=32)).replace(day=1)
