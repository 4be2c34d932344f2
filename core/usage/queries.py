"""Usage analytics for the console: totals, trends and per-config figures for a time range.

Every function takes the caller's Session and Actor, checks the role (super-admin or analyst)
in the database, and aggregates in the database over the rollups and at most two hours of raw
rows (core/usage/rollup.py explains how; percentiles.py the latency percentiles). Ranges are
[start, end) in UTC; days are UTC days.
What they return, and what the figures mean, is in core/usage/report.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, case, func, select
from sqlalchemy.orm import Session

from core.access import Actor, require_role
from core.models import (
    LATENCY_COLUMNS,
    UNMEASURED_STATUSES,
    ProviderConfig,
    ProviderType,
    QuotaCounter,
    TaskType,
    UsageSource,
    UsageStatus,
    UserRole,
    usage_daily,
    utcnow,
)
from core.pricing import from_micro_usd
from core.quota.forecast import forecasts
from core.quota.ledger import month_start
from core.usage.attribution import tag_pairs
from core.usage.percentiles import (
    EXACT_MAX_CALLS,
    HISTOGRAM_ERROR,
    exact_allowed,
    exact_percentiles,
    histogram,
    histogram_percentiles,
)
from core.usage.report import (
    APPROXIMATE_NOTE,
    NO_CONFIG,
    PRUNED_NOTE,
    CallsPoint,
    ConfigUsage,
    CostPoint,
    FilterOptions,
    GroupCost,
    Headline,
    LatencyPoint,
    Percentiles,
    TaskTokens,
    Totals,
    UsageQuery,
    UsageReport,
)
from core.usage.rollup import (
    DETAILS,
    aggregate,
    connection,
    floor_day,
    floor_hour,
    pruned_before,
    run,
)

READERS = (UserRole.SUPER_ADMIN, UserRole.ANALYST)


FAILED = (UsageStatus.ERROR.value, UsageStatus.TIMEOUT.value)


OK, REJECTED = UsageStatus.SUCCESS.value, UsageStatus.REJECTED.value
CANCELLED = UsageStatus.CANCELLED.value
COUNTS = ("calls", "priced_calls", "cost_micro_usd", "input_tokens", "output_tokens")
COUNTS += ("total_tokens", *DETAILS)


def totals(session: Session, actor: Actor, query: UsageQuery) -> Totals:
    """Counts, cost, tokens, rates and latency for the range."""
    require_role(session, actor, *READERS)
    return _totals(connection(session), query)


def _totals(conn: Connection, query: UsageQuery) -> Totals:
    measures = (*COUNTS, "latency_ms_sum", *LATENCY_COLUMNS)
    by = ("status", "source")
    rows = run(conn, aggregate(query.start, query.end, query.bucket, by, measures, query.where))
    sums: dict[str, int] = defaultdict(int)
    hist = [0] * len(LATENCY_COLUMNS)
    for row in rows:
        for name in COUNTS:
            sums[name] += row[name]
        status = row["status"]
        sums["succeeded"] += row["calls"] if status == OK else 0
        sums["failed"] += row["calls"] if status in FAILED else 0
        sums["rejected"] += row["calls"] if status == REJECTED else 0
        sums["cancelled"] += row["calls"] if status == CANCELLED else 0
        sums["demo_calls"] += row["calls"] if row["source"] == UsageSource.DEMO else 0
        if status not in UNMEASURED_STATUSES:
            sums["measured_calls"] += row["calls"]
            sums["latency_ms_sum"] += row["latency_ms_sum"]
            hist = [a + b for a, b in zip(hist, histogram(row), strict=True)]
    if exact_allowed(conn, sums["measured_calls"], query.start):
        found = exact_percentiles(conn, query.start, query.end, query.bucket, (), query.where)
        latency = Percentiles(*found.get((), (None, None, None)), exact=True)
    else:
        latency = Percentiles(*histogram_percentiles(hist), exact=False)
    return Totals(**sums, latency=latency)


def headline(session: Session, actor: Actor, query: UsageQuery) -> Headline:
    """Totals for the range and for the period of equal length before it."""
    require_role(session, actor, *READERS)
    conn = connection(session)
    return Headline(_totals(conn, query), _totals(conn, query.previous()))


def cost_by_provider(session: Session, actor: Actor, query: UsageQuery) -> list[CostPoint]:
    """Cost and calls per hour or day and provider, in time order."""
    require_role(session, actor, *READERS)
    measures = ("cost_micro_usd", "calls", "priced_calls")
    select_ = aggregate(
        query.start, query.end, query.bucket, ("t", "provider_type"), measures, query.where
    )
    rows = run(connection(session), select_)
    points = [
        CostPoint(
            r["t"],
            r["provider_type"],
            from_micro_usd(r["cost_micro_usd"]) or Decimal(0),
            r["calls"],
            r["priced_calls"],
        )
        for r in rows
    ]
    return sorted(points, key=lambda p: (p.t, p.provider_type))


def calls_over_time(session: Session, actor: Actor, query: UsageQuery) -> list[CallsPoint]:
    """Calls by outcome per hour or day; every period of the range is listed, idle ones as 0."""
    require_role(session, actor, *READERS)
    select_ = aggregate(
        query.start, query.end, query.bucket, ("t", "status"), ("calls",), query.where
    )
    counts: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in run(connection(session), select_):
        counts[row["t"]][row["status"]] += row["calls"]
    points = []
    for t in _periods(query):
        by_status = counts.get(t, {})
        points.append(
            CallsPoint(
                t,
                sum(by_status.values()),
                by_status.get(OK, 0),
                sum(by_status.get(s, 0) for s in FAILED),
                by_status.get(REJECTED, 0),
            )
        )
    return points


def _periods(query: UsageQuery) -> list[date | datetime]:
    if query.bucket == "hour":
        step, t = timedelta(hours=1), floor_hour(query.start)
        out: list[date | datetime] = []
        while t < query.end:
            out.append(t)
            t += step
        return out
    first, last = floor_day(query.start).date(), (query.end - timedelta(microseconds=1)).date()
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def latency_by_provider(session: Session, actor: Actor, query: UsageQuery) -> list[LatencyPoint]:
    """Average and p50/p95/p99 latency per hour or day and provider (calls that reached a
    provider); exact for small ranges, histogram estimates otherwise (see each point)."""
    require_role(session, actor, *READERS)
    conn = connection(session)
    by = ("t", "provider_type")
    measures = ("calls", "latency_ms_sum", *LATENCY_COLUMNS)
    rows = run(
        conn,
        aggregate(
            query.start, query.end, query.bucket, by, measures, query.where, measured_only=True
        ),
    )
    exact = exact_allowed(conn, sum(r["calls"] for r in rows), query.start)
    found = (
        exact_percentiles(conn, query.start, query.end, query.bucket, by, query.where)
        if exact
        else {}
    )
    points = []
    for r in rows:
        if exact:
            latency = Percentiles(*found.get((r["t"], r["provider_type"]), ()), exact=True)
        else:
            latency = Percentiles(*histogram_percentiles(histogram(r)), exact=False)
        average = r["latency_ms_sum"] / r["calls"] if r["calls"] else None
        points.append(LatencyPoint(r["t"], r["provider_type"], r["calls"], average, latency))
    return sorted(points, key=lambda p: (p.t, p.provider_type))


def tokens_by_task(session: Session, actor: Actor, query: UsageQuery) -> list[TaskTokens]:
    """Input, output and total tokens per task over the range, biggest first."""
    require_role(session, actor, *READERS)
    measures = ("calls", "input_tokens", "output_tokens", "total_tokens")
    select_ = aggregate(query.start, query.end, query.bucket, ("task_type",), measures, query.where)
    rows = run(connection(session), select_)
    out = [TaskTokens(r["task_type"], *(r[m] for m in measures)) for r in rows]
    return sorted(out, key=lambda t: (-t.total_tokens, t.task_type))


def cost_by_service(session: Session, actor: Actor, query: UsageQuery) -> list[GroupCost]:
    """Calls, cost and tokens per calling service over the range, dearest first."""
    require_role(session, actor, *READERS)
    measures = ("calls", "cost_micro_usd", "total_tokens")
    select_ = aggregate(query.start, query.end, query.bucket, ("service",), measures, query.where)
    rows = run(connection(session), select_)
    return _dearest_first(
        GroupCost(r["service"], r["calls"], _usd(r["cost_micro_usd"]), r["total_tokens"])
        for r in rows
    )


def cost_by_tag(session: Session, actor: Actor, query: UsageQuery) -> list[GroupCost]:
    """Calls, cost and tokens per "key=value" tag over the range, dearest first: a call with
    two tags counts for each (so the figures do not add up to the total); untagged calls are
    not listed."""
    require_role(session, actor, *READERS)
    measures = ("calls", "cost_micro_usd", "total_tokens")
    select_ = aggregate(query.start, query.end, query.bucket, ("tags",), measures, query.where)
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in run(connection(session), select_):
        for pair in tag_pairs(row["tags"]):
            for n, measure in enumerate(measures):
                sums[pair][n] += row[measure]
    return _dearest_first(
        GroupCost(pair, calls, _usd(cost), tokens) for pair, (calls, cost, tokens) in sums.items()
    )


def _usd(micro_usd: int) -> Decimal:
    return from_micro_usd(micro_usd) or Decimal(0)


def _dearest_first(groups: Iterable[GroupCost]) -> list[GroupCost]:
    return sorted(groups, key=lambda g: (-g.cost_usd, -g.calls, g.name))


def config_usage(
    session: Session, actor: Actor, query: UsageQuery, now: datetime | None = None
) -> list[ConfigUsage]:
    """Per config: calls, success, cost and latency in the range, plus its daily and monthly
    token limits with the tokens used in the current UTC day and month (quota counters), and
    when each limit and budget will be reached (core/quota/forecast.py).
    Stored configs matching the provider/config/model filters are listed even when idle."""
    require_role(session, actor, *READERS)
    measures = ("calls", "cost_micro_usd", "latency_ms_sum")
    select_ = aggregate(
        query.start, query.end, query.bucket, ("config_id", "status"), measures, query.where
    )
    usage: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for row in run(connection(session), select_):
        bucket = usage[row["config_id"]]
        bucket["calls"] += row["calls"]
        bucket["cost"] += row["cost_micro_usd"]
        bucket["succeeded"] += row["calls"] if row["status"] == OK else 0
        if row["status"] not in UNMEASURED_STATUSES:
            bucket["measured"] += row["calls"]
            bucket["latency"] += row["latency_ms_sum"]
    stored = {c.id: c for c in session.scalars(select(ProviderConfig))}
    today = (now or utcnow()).date()
    used = {
        config_id: (int(day_used or 0), int(month_used or 0))
        for config_id, day_used, month_used in session.execute(
            select(
                QuotaCounter.config_id,
                func.sum(case((QuotaCounter.day == today, QuotaCounter.used_tokens), else_=0)),
                func.sum(QuotaCounter.used_tokens),
            )
            .where(QuotaCounter.day >= month_start(today), QuotaCounter.day <= today)
            .group_by(QuotaCounter.config_id)
        )
    }
    ids = set(usage) | {c.id for c in stored.values() if _matches(c, query)}
    outlook = forecasts(session, [stored[i] for i in ids if i in stored], now or utcnow())
    rows = []
    for config_id in ids:
        config, figures = stored.get(config_id), usage.get(config_id, {})
        day_used, month_used = used.get(config_id, (0, 0))
        rows.append(
            ConfigUsage(
                config_id=config_id,
                name=config.display_name if config else "(no stored config)",
                provider_type=config.provider_type if config else "",
                model_name=config.model_name if config else "",
                is_active=config.is_active if config else None,
                calls=figures.get("calls", 0),
                succeeded=figures.get("succeeded", 0),
                cost_usd=from_micro_usd(figures.get("cost", 0)) or Decimal(0),
                measured_calls=figures.get("measured", 0),
                latency_ms_sum=figures.get("latency", 0),
                daily_token_limit=config.daily_token_limit if config else None,
                monthly_token_limit=config.monthly_token_limit if config else None,
                used_today=day_used,
                used_this_month=month_used,
                forecasts=tuple(outlook.get(config_id, ())),
            )
        )
    return sorted(rows, key=lambda r: (-r.cost_usd, -r.calls, r.config_id))


def _matches(config: ProviderConfig, query: UsageQuery) -> bool:
    return (
        query.provider_type in (None, config.provider_type)
        and query.config_id in (None, config.id)
        and query.model_name in (None, config.model_name)
    )


def filter_options(session: Session, actor: Actor) -> FilterOptions:
    """The values the page's filters offer: every stored config and every model ever used."""
    require_role(session, actor, *READERS)
    used = session.execute(
        select(usage_daily.c.config_id, usage_daily.c.model_name).distinct()
    ).all()
    configs = {c.id: c for c in session.scalars(select(ProviderConfig))}
    labels = [(i, f"{c.display_name} (#{i})") for i, c in sorted(configs.items())]
    if any(config_id == NO_CONFIG for config_id, _ in used):
        labels.append((NO_CONFIG, "(no stored config)"))
    models = {model for _, model in used} | {c.model_name for c in configs.values()}
    attributed = session.execute(select(usage_daily.c.service, usage_daily.c.tags).distinct()).all()
    return FilterOptions(
        providers=[p.value for p in ProviderType],
        configs=labels,
        models=sorted(models),
        tasks=[t.value for t in TaskType],
        statuses=[s.value for s in UsageStatus],
        services=sorted({service for service, _ in attributed}),
        tags=sorted({pair for _, tags in attributed for pair in tag_pairs(tags)}),
    )


PAGE_QUERIES: dict[str, Callable[[Session, Actor, UsageQuery], Any]] = {
    "headline": headline,
    "cost_by_provider": cost_by_provider,
    "calls_over_time": calls_over_time,
    "latency_by_provider": latency_by_provider,
    "tokens_by_task": tokens_by_task,
    "configs": config_usage,
    "cost_by_service": cost_by_service,
    "cost_by_tag": cost_by_tag,
}


def usage_report(session: Session, actor: Actor, query: UsageQuery) -> UsageReport:
    """Every figure the usage page shows, for `query` (the bench times exactly this)."""
    require_role(session, actor, *READERS)
    parts = {name: fn(session, actor, query) for name, fn in PAGE_QUERIES.items()}
    report = UsageReport(query=query, notes=[], **parts)
    approximate = not report.headline.current.latency.exact or any(
        not p.latency.exact for p in report.latency_by_provider
    )
    watermark = pruned_before(session)
    if watermark is not None and query.start < watermark:
        report.notes.append(PRUNED_NOTE.format(watermark.date(), HISTOGRAM_ERROR))
    elif approximate:
        limit = EXACT_MAX_CALLS.get(session.get_bind().dialect.name, 0)
        report.notes.append(APPROXIMATE_NOTE.format(HISTOGRAM_ERROR, limit))
    if report.headline.current.demo_calls:
        report.notes.append(
            f"{report.headline.current.demo_calls:,} of these calls are demo data; "
            "`python -m core demo-data --purge` removes them."
        )
    return report
