"""Demo usage: realistic sample calls, so a new console shows populated charts at once.

`add_demo_data` stores six inactive provider configs (named "Demo · …", serving no task, with
a placeholder key) and N usage rows over the last D days with source 'demo': business-hours
traffic, per-provider latency distributions, errors, timeouts and over-limit rejections, an
afternoon-long incident, and costs from genai-prices (core.pricing). It also records the demo
configs' token use in the quota counters, so their limit columns show something.
`purge_demo_data` deletes every demo row (the rollup triggers subtract them; for days
before the retention watermark, whose rows may have been pruned, it deletes the demo rollup
rows itself) and the demo configs (their counters go with them). Rows are written with COPY
on PostgreSQL and batched executemany on SQLite (`load`, which the bench uses too).

The rows themselves are made in core/usage/demo_rows.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.admin import ProviderAdmin, ProviderInput
from core.models import (
    ProviderConfig,
    QuotaCounter,
    UsageLog,
    UsageSource,
    usage_daily,
    usage_hourly,
    utcnow,
)
from core.usage.demo_rows import COLUMNS, MODELS, generate
from core.usage.rollup import pruned_before

DEMO_DESCRIPTION = "Demo data from `python -m core demo-data`; `--purge` removes it."


DEMO_KEY = "demo-placeholder-not-a-key"


# Built from the constants above only.
_COPY = f"COPY ai_provider_usage_logs ({', '.join(COLUMNS)}) FROM STDIN (FORMAT csv)"


_INSERT = (
    f"INSERT INTO ai_provider_usage_logs ({', '.join(COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' for _ in COLUMNS)})"
)


@dataclass(frozen=True)
class DemoSummary:
    rows: int
    configs_created: int
    start: datetime
    end: datetime


@dataclass(frozen=True)
class PurgeSummary:
    rows: int
    configs_removed: int
    configs_kept: int  # demo configs that non-demo usage refers to


def load(conn: Connection, frame: pd.DataFrame) -> int:
    """Insert the rows of `frame` (COLUMNS) in the caller's transaction: COPY on PostgreSQL,
    executemany on SQLite. The rollup triggers fold them in as they land."""
    if frame.empty:
        return 0
    if conn.dialect.name == "postgresql":
        copy_csv(conn, to_csv(frame))
        return len(frame)
    # SQLAlchemy's own text format for SQLite datetimes (what UTCDateTime reads back).
    frame = frame.assign(created_at=frame["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S.%f"))
    rows = list(map(tuple, frame.astype(object).where(frame.notna(), None).to_numpy().tolist()))
    conn.exec_driver_sql(_INSERT, rows)
    return len(frame)


def to_csv(frame: pd.DataFrame) -> bytes:
    """The rows as COPY's CSV: NULL is an empty unquoted field, text is quoted, timestamps are
    ISO 8601 UTC. Arrow's multithreaded writer is about five times faster than pandas'."""
    sink = io.BytesIO()
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pa_csv.write_csv(table, sink, pa_csv.WriteOptions(include_header=False))
    return sink.getvalue()


def copy_csv(conn: Connection, csv: bytes) -> None:
    """COPY `to_csv` text into the usage table, in the caller's (PostgreSQL) transaction."""
    raw = conn.connection.driver_connection  # psycopg's, inside SQLAlchemy's transaction
    with raw.cursor() as cursor, cursor.copy(_COPY) as copy:  # type: ignore[union-attr]
        copy.write(csv)


def add_demo_data(
    engine: Engine,
    admin: ProviderAdmin,
    actor: Actor,
    days: float,
    calls: int,
    now: datetime | None = None,
    seed: int | None = None,
) -> DemoSummary:
    """Add `calls` demo rows over the last `days` days (creating the demo configs if needed)."""
    if days <= 0 or calls <= 0:
        raise ValueError("days and calls must be positive")
    now = now or utcnow()
    config_ids, created = ensure_demo_configs(engine, admin, actor)
    used: dict[tuple[int, date], tuple[int, int]] = {}
    with engine.begin() as conn:
        for frame in generate(days, calls, config_ids, now, seed):
            load(conn, frame)
            _count_use(frame, now, used)
        _record_quota(conn, used)
        # A demo config has "existed" since its first demo call: forecasts take the rate
        # since a config's creation when that is within the last 7 days, and a config made
        # a minute ago with weeks of calls would look as if it burned them in that minute.
        table = ProviderConfig.__table__
        conn.execute(
            update(table)
            .where(
                table.c.id.in_([i for i in config_ids.values() if i is not None]),
                table.c.created_at > now - timedelta(days=days),
            )
            .values(created_at=now - timedelta(days=days))
        )
        with Session(bind=conn) as session:
            audit.record(
                session,
                actor,
                "usage.demo_data",
                target_type="usage",
                details={"rows": calls, "days": days, "configs_created": created},
            )
            session.flush()
    return DemoSummary(calls, created, now - timedelta(days=days), now)


def ensure_demo_configs(
    engine: Engine, admin: ProviderAdmin, actor: Actor
) -> tuple[dict[str, int | None], int]:
    """The demo configs' ids by model (inactive, serving no task); creates missing ones."""
    with Session(engine) as session:
        existing = {
            c.model_name: c.id
            for c in session.scalars(
                select(ProviderConfig).where(ProviderConfig.description == DEMO_DESCRIPTION)
            )
        }
    created = 0
    ids: dict[str, int | None] = {}
    for model in MODELS:
        if model.model_name not in existing:
            view = admin.create(
                actor,
                ProviderInput(
                    provider_type=model.provider_type,
                    model_name=model.model_name,
                    display_name=model.name,
                    api_key=DEMO_KEY,
                    description=DEMO_DESCRIPTION,
                    daily_token_limit=model.daily_limit,
                    monthly_token_limit=model.monthly_limit,
                    is_active=False,
                ),
                validate=False,
            )
            existing[model.model_name] = view.id
            created += 1
        ids[model.model_name] = existing[model.model_name]
    return ids, created


def _count_use(
    frame: pd.DataFrame, now: datetime, used: dict[tuple[int, date], tuple[int, int]]
) -> None:
    """Tokens and micro-dollars per config and UTC day of the current month (what the quota
    counters hold), so token limits and dollar budgets set on demo configs see their use."""
    month = pd.Timestamp(now.replace(day=1, hour=0, minute=0, second=0, microsecond=0))
    recent = frame[(frame["created_at"] >= month) & frame["provider_config_id"].notna()]
    sums = recent.groupby([recent["provider_config_id"], recent["created_at"].dt.date])[
        ["total_tokens", "cost_micro_usd"]
    ].sum(min_count=0)
    for (config_id, day), row in sums.iterrows():
        key = (int(config_id), day)
        tokens, micro_usd = used.get(key, (0, 0))
        used[key] = (tokens + int(row["total_tokens"]), micro_usd + int(row["cost_micro_usd"]))


def _record_quota(conn: Connection, used: dict[tuple[int, date], tuple[int, int]]) -> None:
    if not used:
        return
    table = QuotaCounter.__table__
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(table)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.config_id, table.c.day],
        set_={
            "used_tokens": table.c.used_tokens + statement.excluded.used_tokens,
            "used_micro_usd": table.c.used_micro_usd + statement.excluded.used_micro_usd,
        },
    )
    conn.execute(
        statement,
        [
            {
                "config_id": c,
                "day": d,
                "used_tokens": t,
                "reserved_tokens": 0,
                "used_micro_usd": m,
                "reserved_micro_usd": 0,
            }
            for (c, d), (t, m) in used.items()
        ],
    )


def _purge_pruned_rollups(conn: Connection) -> None:
    """Delete the demo sums of the hours and days before the retention watermark: their raw
    rows were pruned (or, if not, their deletion subtracted nothing)."""
    since = pruned_before(conn)
    if since is None:
        return
    demo = UsageSource.DEMO.value
    hourly, daily = usage_hourly.c, usage_daily.c
    conn.execute(delete(usage_hourly).where(hourly.source == demo, hourly.hour < since))
    conn.execute(delete(usage_daily).where(daily.source == demo, daily.day < since.date()))


def purge_demo_data(engine: Engine, admin: ProviderAdmin, actor: Actor) -> PurgeSummary:
    """Delete every demo row, then the demo configs no other usage refers to."""
    usage = UsageLog.__table__
    with engine.begin() as conn:
        rows = conn.execute(delete(usage).where(usage.c.source == UsageSource.DEMO.value)).rowcount
        _purge_pruned_rollups(conn)
        with Session(bind=conn) as session:
            audit.record(
                session, actor, "usage.demo_purge", target_type="usage", details={"rows": rows}
            )
            session.flush()
    with Session(engine) as session:
        demo = session.scalars(
            select(ProviderConfig.id).where(ProviderConfig.description == DEMO_DESCRIPTION)
        ).all()
        referenced = set(
            session.scalars(
                select(usage.c.provider_config_id)
                .where(usage.c.provider_config_id.in_(demo))
                .group_by(usage.c.provider_config_id)
                .having(func.count() > 0)
            )
        )
    removed = 0
    for config_id in demo:
        if config_id not in referenced:
            admin.delete(actor, config_id)
            removed += 1
    return PurgeSummary(rows, removed, len(referenced))
