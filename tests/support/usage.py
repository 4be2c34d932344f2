"""Helpers for the usage analytics tests: random usage rows written out of order, and the
brute-force answers (plain Python over every raw row) that the database's answers must match."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from core.models import (
    LATENCY_BUCKETS_MS,
    LATENCY_COLUMNS,
    ProviderConfig,
    UsageLog,
    usage_daily,
    usage_hourly,
)
from tests.support.database import MigratedDatabase

T0 = datetime(2026, 3, 10, tzinfo=UTC)  # a UTC midnight; the data spans the days around it
MODELS = {
    "openai": "gpt-4o-mini",
    "claude": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.5-flash",
}
TASKS = ("extraction", "cv_draft", "cover_letter", "validation")
STATUSES = ("success",) * 6 + ("error", "timeout", "rejected", "cancelled")


def add_configs(db: MigratedDatabase) -> dict[str, int]:
    """One stored config per provider; returns provider -> id."""
    ids = {}
    with db.session() as session, session.begin():
        for kind, model in MODELS.items():
            row = ProviderConfig(
                provider_type=kind,
                model_name=model,
                display_name=f"{kind} config",
                api_key_encrypted="x" * 20,
                key_last4="xxxx",
                daily_token_limit=1_000_000 if kind == "openai" else None,
                monthly_token_limit=9_000_000 if kind == "openai" else None,
            )
            session.add(row)
            session.flush()
            ids[kind] = row.id
    return ids


def random_rows(
    rng: random.Random, n: int, start: datetime, end: datetime, config_ids: dict[str, int]
) -> list[dict[str, Any]]:
    """`n` usage rows with created_at in [start, end), plus rows exactly on UTC midnights and
    hour marks inside the span (the boundaries the queries must get right)."""
    span = (end - start).total_seconds()
    moments = [start + timedelta(seconds=rng.random() * span) for _ in range(n)]
    day = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    while day < end:
        moments += [day, day, day + timedelta(hours=7), day - timedelta(microseconds=1)]
        day += timedelta(days=1)
    rows = []
    for moment in moments:
        kind = rng.choice(list(MODELS))
        status = rng.choice(STATUSES)
        ok = status == "success"
        tokens_in, tokens_out = (rng.randint(10, 3000), rng.randint(1, 900)) if ok else (0, 0)
        rows.append(
            {
                "provider_config_id": None if rng.random() < 0.15 else config_ids[kind],
                "provider_type": kind,
                "model_name": MODELS[kind] if rng.random() < 0.9 else "some-other-model",
                "task_type": rng.choice(TASKS),
                "status": status,
                "input_tokens": tokens_in,
                "output_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
                "cost_micro_usd": rng.randint(1, 50_000) if ok and rng.random() < 0.9 else None,
                "latency_ms": 0 if status == "rejected" else _latency(rng, kind, status),
                "source": "router" if rng.random() < 0.8 else "demo",
                "user_id": rng.randint(1, 50),
                "created_at": moment,
                "service": rng.choice(SERVICES),
                "tags": rng.choice(TAGS),
            }
        )
    return rows


# Attribution as services write it (core/usage/attribution.py): "" for none.
SERVICES = ("", "billing-api", "cv-builder", "cv-builder")
TAGS = ("", "feature=cv", "feature=cover_letter,team=growth", "team=growth")


def _latency(rng: random.Random, kind: str, status: str) -> int:
    if status == "timeout":
        return 60_000 + rng.randint(0, 999)
    scale = {"openai": 900, "claude": 1400, "gemini": 600}[kind]
    value = int(rng.lognormvariate(0, 0.6) * scale)
    return rng.choice([value, value, value, *LATENCY_BUCKETS_MS[1:]])  # some exactly on a bound


def insert_out_of_order(
    db: MigratedDatabase, rows: Sequence[dict[str, Any]], batches: int = 4
) -> None:
    """Insert `rows` shuffled, in several transactions and statements of several sizes."""
    shuffled = list(rows)
    random.Random(len(rows)).shuffle(shuffled)
    size = max(1, len(shuffled) // batches)
    for first in range(0, len(shuffled), size):
        batch = shuffled[first : first + size]
        half = len(batch) // 2
        with db.engine.begin() as conn:
            if batch[:half]:
                conn.execute(insert(UsageLog), batch[:half])
            for row in batch[half : half + 5]:  # a few single-row statements too
                conn.execute(insert(UsageLog), row)
            if batch[half + 5 :]:
                conn.execute(insert(UsageLog), batch[half + 5 :])


def raw_rows(db: MigratedDatabase) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(UsageLog.__table__)).mappings()]


def in_range(
    rows: Iterable[dict[str, Any]], start: datetime, end: datetime, **filters: Any
) -> list[dict[str, Any]]:
    """Rows with start <= created_at < end matching every filter (config_id 0 = no config)."""
    out = []
    tag = filters.pop("tag", None)  # one of the row's "key=value" pairs
    for row in rows:
        if not start <= row["created_at"] < end:
            continue
        if any(_value(row, name) != value for name, value in filters.items() if value is not None):
            continue
        if tag is not None and tag not in row["tags"].split(","):
            continue
        out.append(row)
    return out


def _value(row: dict[str, Any], name: str) -> Any:
    if name == "config_id":
        return row["provider_config_id"] or 0
    return row[name]


def percentile_cont(values: Sequence[float], q: float) -> float | None:
    """PostgreSQL's percentile_cont, in plain Python."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = int(position)
    if low + 1 >= len(ordered):
        return float(ordered[low])
    return ordered[low] + (position - low) * (ordered[low + 1] - ordered[low])


def bucket_bounds(value: float) -> tuple[float, float]:
    """The [low, high] of the histogram bucket holding `value` (high = low when open-ended)."""
    k = max(i for i, bound in enumerate(LATENCY_BUCKETS_MS) if bound <= value)
    high = LATENCY_BUCKETS_MS[k + 1] if k + 1 < len(LATENCY_BUCKETS_MS) else LATENCY_BUCKETS_MS[k]
    return LATENCY_BUCKETS_MS[k], high


def within_histogram_tolerance(estimate: float, values: Sequence[float], q: float) -> bool:
    """The stated tolerance: the estimate lies in the bucket of the order statistic at rank
    floor(q·(n−1)), the one percentile_cont starts from."""
    ordered = sorted(values)
    low, high = bucket_bounds(ordered[int(q * (len(ordered) - 1))])
    return low <= estimate <= high


def rollup_contents(db: MigratedDatabase, hourly: bool) -> dict[tuple[Any, ...], dict[str, int]]:
    table = usage_hourly if hourly else usage_daily
    with db.engine.connect() as conn:
        rows = conn.execute(select(table)).mappings().all()
    period = "hour" if hourly else "day"
    key = (period, *ROLLUP_KEY)
    return {tuple(r[k] for k in key): {k: r[k] for k in r if k not in key} for r in rows}


def expected_rollup(
    rows: Iterable[dict[str, Any]], hourly: bool
) -> dict[tuple[Any, ...], dict[str, int]]:
    """What the rollup table must hold for these raw rows, computed in Python."""
    period: Callable[[datetime], datetime | date] = (
        (lambda t: t.replace(minute=0, second=0, microsecond=0)) if hourly else (lambda t: t.date())
    )
    out: dict[tuple[Any, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for r in rows:
        key = (
            period(r["created_at"]),
            r["provider_type"],
            r["provider_config_id"] or 0,
            r["model_name"],
            r["task_type"],
            r["status"],
            r["source"],
            r["service"],
            r["tags"],
        )
        sums = out[key]
        sums["calls"] += 1
        sums["priced_calls"] += r["cost_micro_usd"] is not None
        sums["cost_micro_usd"] += r["cost_micro_usd"] or 0
        for name in ("input_tokens", "output_tokens", "total_tokens"):
            sums[name] += r[name]
        for name in DETAILS:
            sums[name] += r[name] or 0
        sums["latency_ms_sum"] += r["latency_ms"]
        low, _ = bucket_bounds(r["latency_ms"])
        sums[LATENCY_COLUMNS[LATENCY_BUCKETS_MS.index(low)]] += 1
    return {
        key: {name: sums.get(name, 0) for name in ("calls", "priced_calls", "cost_micro_usd",
              "input_tokens", "output_tokens", "total_tokens", "latency_ms_sum", *LATENCY_COLUMNS,
              *DETAILS)}
        for key, sums in out.items()
    }  # fmt: skip


ROLLUP_KEY = (
    "provider_type", "config_id", "model_name", "task_type", "status", "source", "service", "tags",
)  # fmt: skip
# The usage columns summed as they are (NULL adds 0).
DETAILS = (
    "cached_input_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cache_savings_micro_usd",
)


def assert_rollups_match(db: MigratedDatabase) -> None:
    rows = raw_rows(db)
    for hourly in (True, False):
        assert rollup_contents(db, hourly) == expected_rollup(rows, hourly)
