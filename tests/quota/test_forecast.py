"""Forecasts on fixed data, on SQLite and PostgreSQL: when each limit is reached at the rate of
the last 7 days, or that it is not this period."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from core.models import ProviderConfig, QuotaCounter
from core.quota.forecast import forecasts
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


def spend(db: MigratedDatabase, config_id: int, days: dict[date, tuple[int, int]]) -> None:
    with db.session() as session, session.begin():
        for day, (tokens, micro_usd) in days.items():
            session.add(
                QuotaCounter(
                    config_id=config_id, day=day, used_tokens=tokens, used_micro_usd=micro_usd
                )
            )


def outlook(db: MigratedDatabase) -> dict[int, list[str]]:
    with db.session() as session:
        configs = session.query(ProviderConfig).all()
        return {k: [str(f) for f in v] for k, v in forecasts(session, configs, NOW).items()}


def test_each_limit_is_forecast_from_the_last_seven_days(
    db: MigratedDatabase, fake_providers: FakeProviderServer
) -> None:
    steady = add_config(
        db,
        fake_providers,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
        daily_token_limit=80_000,
        monthly_token_limit=10_000_000,
        daily_budget_micro_usd=400_000,
        monthly_budget_micro_usd=20_000_000,
    )
    # $1 and 100,000 tokens a day since Dec 1 (and a busy November, outside the window and
    # the month), half of that so far today.
    days = {date(2026, 12, d): (100_000, 1_000_000) for d in range(1, 10)}
    days |= {date(2026, 11, 20): (9_000_000, 90_000_000), date(2026, 12, 10): (50_000, 500_000)}
    spend(db, steady, days)
    new = add_config(
        db, fake_providers, created_at=NOW - timedelta(hours=6), daily_token_limit=25_000
    )
    spend(db, new, {NOW.date(): (10_000, 0)})  # 10,000 in its first 6 hours
    idle = add_config(db, fake_providers, monthly_budget_micro_usd=5_000_000)
    add_config(db, fake_providers)  # no limits: no forecast

    assert outlook(db) == {
        steady: [
            # 100,000 a day: the 30,000 left today last 7.2 hours
            "daily token limit reached about 19:12 UTC",
            "monthly token limit: not reached this month at the last 7 days' rate",
            "daily budget reached",  # $0.50 spent of $0.40 (a budget lowered today)
            "monthly budget reached about Dec 21",  # $9.50 spent, $10.50 left at $1 a day
        ],
        new: ["daily token limit reached about 21:00 UTC"],  # 15,000 left at 10,000 per 6 h
        idle: ["monthly budget: not reached this month at the last 7 days' rate"],
    }
