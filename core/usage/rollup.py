"""Usage rollups: how the analytics read ten million usage rows in milliseconds.

Mechanism
---------
`ai_provider_usage_hourly` and `ai_provider_usage_daily` (core.models) hold, per UTC hour or UTC
day and per key (provider_type, config_id, model_name, task_type, status, source, service,
tags), the number of
calls, priced calls, cost, input/output/total tokens, the latency sum, a 48-bucket latency
histogram, and the cached, cache-write and reasoning tokens and what the cache saved. Database
triggers on ai_provider_usage_logs (installed by migration 215e8de742e8, made again with more
sums by 3b8e1f0c6a27 and keyed by service and tags by 5a7c2e9d1f03; their SQL is
migrations/rollup_triggers.py) keep them equal to the raw
rows inside the transaction that changes the raw rows:

- every INSERT adds the new rows, every DELETE subtracts the old ones, every UPDATE does both
  (a config deleted later turns its rows' config into "none" through ON DELETE SET NULL, and
  its rollup rows move with them); PostgreSQL's TRUNCATE empties the rollups;
- on PostgreSQL the triggers are statement-level with transition tables, so the usage writer's
  batch, a backfill or a COPY is folded in with one aggregated upsert per statement, taking the
  rollup rows' locks in key order; on SQLite they are row-level (the only kind it has).

Because a row is counted by its own created_at (when the attempt started, UTC) and not by when
it arrived, rows that come late, out of order, from a backfill or from demo data land in the
right hour and day; there is no watermark to fall behind and nothing to refresh.

Reading a range [start, end)
----------------------------
A range is cut into at most five spans (`plan`): raw rows for the partial hours at either end,
hourly rollups for the partial days, daily rollups for the whole days in between (hourly only,
when the chart wants hours). Every query reads the union of those spans and aggregates it in
the database. A 90-day range at 10 million rows reads about 90 daily rows per key, a few
thousand hourly rows and at most two hours of raw rows.

Percentiles are computed in percentiles.py, from the raw rows or these histograms.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Date,
    FromClause,
    Integer,
    Select,
    and_,
    case,
    delete,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from core.models import (
    LATENCY_BUCKETS_MS,
    LATENCY_COLUMNS,
    UNMEASURED_STATUSES,
    UsageLog,
    UsageRetention,
    UTCDateTime,
    usage_daily,
    usage_hourly,
)

Grain = Literal["hour", "day"]
RAW = UsageLog.__table__
KEY = (
    "provider_type", "config_id", "model_name", "task_type", "status", "source", "service", "tags",
)  # fmt: skip
# Of input tokens: cached and cache-write; of output: reasoning; and what the cache saved.
DETAILS = (
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_savings_micro_usd",
)
SUMS = (
    "calls", "priced_calls", "cost_micro_usd", "input_tokens", "output_tokens", "total_tokens",
    "latency_ms_sum", *LATENCY_COLUMNS, *DETAILS,
)  # fmt: skip


# --- UTC hour and day of a timestamp column, on both databases --------------------------------


class utc_hour(FunctionElement[datetime]):
    """The UTC hour a timestamp falls in (timestamptz on PostgreSQL, text on SQLite)."""

    type = UTCDateTime()
    inherit_cache = True


class utc_day(FunctionElement[date]):
    """The UTC calendar day a timestamp falls in."""

    type = Date()
    inherit_cache = True


def _arg(element: FunctionElement[Any], compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(next(iter(element.clauses)), **kw)


@compiles(utc_hour, "postgresql")
def _pg_hour(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    at = _arg(element, compiler, **kw)
    return f"(date_trunc('hour', {at} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


@compiles(utc_hour, "sqlite")
def _sqlite_hour(element: utc_hour, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLAlchemy stores SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' text.
    return f"(substr({_arg(element, compiler, **kw)}, 1, 13) || ':00:00.000000')"


@compiles(utc_day, "postgresql")
def _pg_day(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({_arg(element, compiler, **kw)} AT TIME ZONE 'UTC' AS DATE)"


@compiles(utc_day, "sqlite")
def _sqlite_day(element: utc_day, compiler: SQLCompiler, **kw: Any) -> str:
    return f"substr({_arg(element, compiler, **kw)}, 1, 10)"


# --- what to read for a range ------------------------------------------------------------------


@dataclass(frozen=True)
class UsageFilter:
    """Optional filters; config_id 0 selects calls without a stored config."""

    provider_type: str | None = None
    config_id: int | None = None
    model_name: str | None = None
    task_type: str | None = None
    status: str | None = None
    service: str | None = None  # "" selects calls that named none
    tag: str | None = None  # "key=value" (core/usage/attribution.py)


@dataclass(frozen=True)
class Span:
    source: Literal["raw", "hourly", "daily"]
    start: datetime
    end: datetime


def floor_hour(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(t: datetime) -> datetime:
    floor = floor_hour(t)
    return floor if floor == t else floor + timedelta(hours=1)


def floor_day(t: datetime) -> datetime:
    return datetime.combine(t.astimezone(UTC).date(), time.min, tzinfo=UTC)


def ceil_day(t: datetime) -> datetime:
    floor = floor_day(t)
    return floor if floor == t else floor + timedelta(days=1)


def plan(start: datetime, end: datetime, grain: Grain) -> list[Span]:
    """The raw, hourly and daily spans that together cover [start, end) exactly once."""
    if start >= end:
        return []
    h0, h1 = ceil_hour(start), floor_hour(end)
    if h0 >= h1:
        return [Span("raw", start, end)]
    spans = [Span("raw", start, h0)] if start < h0 else []
    d0, d1 = ceil_day(h0), floor_day(h1)
    if grain == "hour" or d0 >= d1:
        spans.append(Span("hourly", h0, h1))
    else:
        spans += [Span("hourly", h0, d0)] if h0 < d0 else []
        spans.append(Span("daily", d0, d1))
        spans += [Span("hourly", d1, h1)] if d1 < h1 else []
    if h1 < end:
        spans.append(Span("raw", h1, end))
    return spans


# --- one aggregate over the union of spans -------------------------------------------------


def _in_bucket(k: int, x: ColumnElement[int]) -> ColumnElement[bool]:
    bounds = LATENCY_BUCKETS_MS
    if k == len(bounds) - 1:
        return x >= bounds[k]
    return x < bounds[1] if k == 0 else and_(x >= bounds[k], x < bounds[k + 1])


@cache  # expressions are immutable: build each once
def _raw_measure(name: str) -> ColumnElement[Any]:
    c = RAW.c
    if name == "calls":
        return literal_column("1", Integer())
    if name == "priced_calls":
        return case((c.cost_micro_usd.is_(None), 0), else_=1)
    if name == "cost_micro_usd":
        return func.coalesce(c.cost_micro_usd, 0)
    if name == "latency_ms_sum":
        return c.latency_ms
    if name in LATENCY_COLUMNS:
        return case((_in_bucket(LATENCY_COLUMNS.index(name), c.latency_ms), 1), else_=0)
    if name in DETAILS:  # NULL on rows stored before they were recorded
        return func.coalesce(c[name], 0)
    return c[name]


def part(
    span: Span,
    grain: Grain,
    by: Sequence[str],
    measures: Sequence[str],
    where: UsageFilter,
    measured_only: bool,
) -> Select[Any]:
    table: FromClause
    if span.source == "raw":
        table, moment = RAW, RAW.c.created_at
        config = func.coalesce(RAW.c.provider_config_id, 0)
        period = utc_hour(moment) if grain == "hour" else utc_day(moment)
        bounds = [moment >= span.start, moment < span.end]
        values = [_raw_measure(m) for m in measures]
    else:
        table = usage_hourly if span.source == "hourly" else usage_daily
        config = table.c.config_id
        if span.source == "hourly":
            moment = table.c.hour
            period = moment if grain == "hour" else utc_day(moment)
            bounds = [moment >= span.start, moment < span.end]
        else:
            period = table.c.day
            bounds = [period >= span.start.date(), period < span.end.date()]
        values = [table.c[m] for m in measures]
    dims = {"t": period, "config_id": config}
    columns = [(dims.get(d) if d in dims else table.c[d]).label(d) for d in by]
    conditions = [*bounds]
    for name in ("provider_type", "model_name", "task_type", "status", "service"):
        if (value := getattr(where, name)) is not None:
            conditions.append(table.c[name] == value)
    if where.tag is not None:  # one of the row's pairs: ",a=1,b=2," contains ",b=2,"
        pairs = literal(",") + table.c.tags + literal(",")
        conditions.append(pairs.contains(f",{where.tag},", autoescape=True))
    if where.config_id is not None:
        conditions.append(config == where.config_id)
    if measured_only:
        conditions.append(table.c.status.not_in(UNMEASURED_STATUSES))
    return select(*columns, *(v.label(m) for v, m in zip(values, measures, strict=True))).where(
        *conditions
    )


def aggregate(
    start: datetime,
    end: datetime,
    grain: Grain,
    by: Sequence[str],
    measures: Sequence[str],
    where: UsageFilter = UsageFilter(),
    *,
    measured_only: bool = False,
) -> Select[Any] | None:
    """SELECT `by` dimensions ("t" is the hour or day) with SUM of each of `measures` over
    [start, end), grouped by `by`; None for an empty range. `measured_only` leaves out
    rejected and cancelled attempts (their latency is not a provider's answer time)."""
    spans = plan(start, end, grain)
    if not spans:
        return None
    parts = [part(span, grain, by, measures, where, measured_only) for span in spans]
    union = union_all(*parts).subquery("spans")
    time_type = UTCDateTime() if grain == "hour" else Date()
    dims = [(type_coerce(union.c[d], time_type) if d == "t" else union.c[d]).label(d) for d in by]
    sums = [func.sum(union.c[m]).label(m) for m in measures]
    return select(*dims, *sums).group_by(*(union.c[d] for d in by))


def connection(session: Session) -> Connection:
    """The session's connection, set up for these small reads: on PostgreSQL no parallel
    workers for the rest of the transaction (starting them costs more than the read itself)."""
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    return conn


def run(conn: Connection, query: Select[Any] | None) -> list[dict[str, Any]]:
    """Rows of an `aggregate` query as dicts, sums as ints (PostgreSQL returns some as Decimal)."""
    if query is None:
        return []
    rows = []
    for row in conn.execute(query).mappings():
        rows.append({k: int(v or 0) if k in SUMS else v for k, v in row.items()})
    return rows


def pruned_before(conn: Connection | Session) -> datetime | None:
    """The retention watermark (a UTC midnight): raw rows created before it may have been
    pruned (core/usage/retention.py), so only the rollups have those days whole. None: no
    prune ever ran."""
    return conn.execute(select(UsageRetention.pruned_before)).scalar_one_or_none()


# --- repair ------------------------------------------------------------------------------


def rebuild(conn: Connection) -> None:
    """Recompute both rollups from the raw rows, inside the caller's transaction (a repair after
    loading rows with triggers disabled; the triggers make it unnecessary otherwise). Only the
    hours and days from the retention watermark on: before it the raw rows were pruned and
    the rollups are all there is."""
    if conn.dialect.name == "postgresql":  # no writer may slip a row in between
        conn.execute(text(f"LOCK TABLE {RAW.name} IN SHARE MODE"))
    since = pruned_before(conn)
    h = usage_hourly.c
    conn.execute(delete(usage_hourly).where(*([h.hour >= since] if since else [])))
    d = usage_daily.c
    conn.execute(delete(usage_daily).where(*([d.day >= since.date()] if since else [])))
    c = RAW.c
    sums = [
        func.count(),
        func.count(c.cost_micro_usd),
        func.coalesce(func.sum(c.cost_micro_usd), 0),
        func.sum(c.input_tokens),
        func.sum(c.output_tokens),
        func.sum(c.total_tokens),
        func.sum(c.latency_ms),
        *(func.sum(case((_in_bucket(k, c.latency_ms), 1), else_=0)) for k in _buckets()),
        *(func.coalesce(func.sum(c[name]), 0) for name in DETAILS),
    ]
    keys = [c.provider_type, func.coalesce(c.provider_config_id, 0), c.model_name]
    keys += [c.task_type, c.status, c.source, c.service, c.tags]
    hour = utc_hour(c.created_at)
    recent = [c.created_at >= since] if since else []
    conn.execute(
        insert(usage_hourly).from_select(
            ["hour", *KEY, *SUMS],
            select(hour, *keys, *sums).where(*recent).group_by(hour, *keys),
        )
    )
    day = utc_day(h.hour)
    rollup_keys = [h[k] for k in KEY]
    sums_by_day = select(day, *rollup_keys, *(func.sum(h[s]) for s in SUMS))
    conn.execute(
        insert(usage_daily).from_select(
            ["day", *KEY, *SUMS],
            sums_by_day.where(*([h.hour >= since] if since else [])).group_by(day, *rollup_keys),
        )
    )


def _buckets() -> Iterable[int]:
    return range(len(LATENCY_BUCKETS_MS))
