"""The seed's three monitoring queries, with the seed's fixed windows.

They read the rollups (core/usage/rollup.py), so they answer in milliseconds at any table size
and give the same answers on PostgreSQL and SQLite. The console's Usage page draws the same
figures for any range through core.usage.queries.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from core.access import Actor, require_role
from core.models import UsageStatus
from core.usage.queries import READERS, cost_by_provider, latency_by_provider
from core.usage.report import CostPoint, LatencyPoint, UsageQuery
from core.usage.rollup import aggregate, connection, run


@dataclass(frozen=True)
class ProviderErrorRate:
    provider_type: str
    error_rate_pct: float  # failed (error or timeout) calls per 100 calls
    total_calls: int
    failed_calls: int
    rejected_calls: int  # over a token limit, never sent; counted in total_calls


def daily_cost_by_provider(
    session: Session, actor: Actor, days: int = 30, now: datetime | None = None
) -> list[CostPoint]:
    """Cost (USD) and calls per UTC day and provider over [now - days, now), newest day
    first, then costliest provider first. The seed's query::

        SELECT DATE(created_at) AS date, provider_type, SUM(estimated_cost_usd)/100.0 AS cost_usd,
               COUNT(*) AS api_calls
        FROM ai_provider_usage_logs WHERE created_at >= NOW() - INTERVAL '30 days'
        GROUP BY date, provider_type ORDER BY date DESC, cost_usd DESC;
    """
    query = UsageQuery.last(timedelta(days=days), now, grain="day")
    points = cost_by_provider(session, actor, query)
    return sorted(points, key=lambda p: (p.t, p.cost_usd), reverse=True)


def error_rate_by_provider(
    session: Session, actor: Actor, days: int = 7, now: datetime | None = None
) -> list[ProviderErrorRate]:
    """Per provider over [now - days, now): the share of calls that failed, by provider name.
    The seed counted status 'error' only; a timeout is a failed call too, so it counts here::

        SELECT provider_type, COUNT(*) AS total_calls,
               COUNT(CASE WHEN status = 'error' THEN 1 END)::float / COUNT(*) * 100
                 AS error_rate_pct
        FROM ai_provider_usage_logs WHERE created_at >= NOW() - INTERVAL '7 days'
        GROUP BY provider_type;
    """
    require_role(session, actor, *READERS)
    query = UsageQuery.last(timedelta(days=days), now, grain="day")
    by_status = aggregate(
        query.start, query.end, "day", ("provider_type", "status"), ("calls",), query.where
    )
    counts: dict[str, dict[str, int]] = {}
    for row in run(connection(session), by_status):
        counts.setdefault(row["provider_type"], {})[row["status"]] = row["calls"]
    out = []
    for provider, statuses in sorted(counts.items()):
        total = sum(statuses.values())
        failed = statuses.get(UsageStatus.ERROR, 0) + statuses.get(UsageStatus.TIMEOUT, 0)
        rejected = statuses.get(UsageStatus.REJECTED, 0)
        out.append(ProviderErrorRate(provider, 100 * failed / total, total, failed, rejected))
    return out


def latency_trend(
    session: Session, actor: Actor, days: int = 7, now: datetime | None = None
) -> list[LatencyPoint]:
    """p50/p95/p99 latency per UTC day and provider over [now - days, now), oldest first, for
    calls that reached a provider; each point says whether its percentiles are exact or
    histogram estimates (core/usage/percentiles.py). The seed's query::

        SELECT DATE(created_at) AS date, provider_type,
               PERCENTILE_CONT(0.50) WITHIN GROUP (ORDER BY latency_ms) AS p50,
               PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY latency_ms) AS p95,
               PERCENTILE_CONT(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99
        FROM ai_provider_usage_logs WHERE created_at >= NOW() - INTERVAL '7 days'
        GROUP BY date, provider_type;
    """
    query = UsageQuery.last(timedelta(days=days), now, grain="day")
    return latency_by_provider(session, actor, query)
