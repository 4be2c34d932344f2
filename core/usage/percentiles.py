"""Latency percentiles of a range: exact from the raw rows, or estimated from the rollups'
latency histograms (rollup.py).

Percentiles
-----------
Exact (PostgreSQL percentile_cont; on SQLite a window-function rank of the same definition)
when the range holds at most EXACT_MAX_CALLS calls that reached a provider; beyond that,
estimated from the summed histograms: the estimate lies in the same histogram bucket as the
true order statistic, and from 50 ms to two minutes a bucket's upper bound is 1.2 times its
lower one, so the estimate is within 20% (usually far closer). A range reaching before the
retention watermark (retention.py: its raw rows may be pruned) is always estimated. Results
say which they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Integer, case, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import array as pg_array

from core.models import LATENCY_BUCKETS_MS, LATENCY_COLUMNS
from core.usage.rollup import Grain, Span, UsageFilter, part, pruned_before

QUANTILES = (0.5, 0.95, 0.99)
# Exact percentiles up to this many measured calls in a range (a sort of that many latencies
# stays well under 100 ms); histogram estimates above it.
EXACT_MAX_CALLS = {"postgresql": 200_000, "sqlite": 20_000}
HISTOGRAM_ERROR = 0.2  # the estimate's worst relative error from 50 ms to two minutes


def histogram_percentiles(
    counts: Sequence[int], quantiles: Sequence[float] = QUANTILES
) -> tuple[float | None, ...]:
    """percentile_cont-style estimates from bucket counts: find the bucket holding the rank
    q·(n−1) and place the value inside it as if the bucket's calls were spread evenly."""
    n = sum(counts)
    if n == 0:
        return tuple(None for _ in quantiles)
    bounds = LATENCY_BUCKETS_MS
    out: list[float | None] = []
    for q in quantiles:
        rank = q * (n - 1)
        seen = 0
        for k, count in enumerate(counts):
            if count and seen + count > rank:
                low = float(bounds[k])
                if k + 1 == len(bounds):  # open-ended: all we know is "at least"
                    out.append(low)
                else:
                    share = (rank - seen + 0.5) / count
                    out.append(low + min(share, 1.0) * (bounds[k + 1] - low))
                break
            seen += count
    return tuple(out)


def bucket_of(latency_ms: float) -> int:
    """The histogram bucket holding `latency_ms`."""
    k = 0
    while k + 1 < len(LATENCY_BUCKETS_MS) and latency_ms >= LATENCY_BUCKETS_MS[k + 1]:
        k += 1
    return k


def exact_percentiles(
    conn: Connection,
    start: datetime,
    end: datetime,
    grain: Grain,
    by: Sequence[str],
    where: UsageFilter,
) -> dict[tuple[Any, ...], tuple[float | None, ...]]:
    """Exact p50/p95/p99 (percentile_cont's definition) of measured calls from the raw rows,
    per `by` group. Callers keep the range small (see EXACT_MAX_CALLS)."""
    if start >= end:
        return {}
    raw = part(Span("raw", start, end), grain, by, ["latency_ms_sum"], where, True)
    rows = raw.subquery("measured")
    dims = [rows.c[d] for d in by]
    x = rows.c.latency_ms_sum
    if conn.dialect.name == "postgresql":
        fractions = pg_array([literal_column(repr(q)) for q in QUANTILES])
        query = select(*dims, func.percentile_cont(fractions).within_group(x)).group_by(*dims)
        return {
            tuple(r[:-1]): tuple(float(v) for v in r[-1])
            for r in conn.execute(query)
            if r[-1] is not None  # no rows at all: one row of NULL
        }
    ranked = select(
        *dims,
        x.label("x"),
        (func.row_number().over(partition_by=dims or None, order_by=x) - 1).label("rn"),
        func.count().over(partition_by=dims or None).label("n"),
    ).subquery("ranked")
    picks = []
    for q in QUANTILES:
        index = cast(literal_column(repr(q)) * (ranked.c.n - 1), Integer)
        picks.append(func.max(case((ranked.c.rn == index, ranked.c.x))))
        picks.append(func.max(case((ranked.c.rn == index + 1, ranked.c.x))))
    group = [ranked.c[d] for d in by]
    query = select(*group, func.max(ranked.c.n), *picks).group_by(*group)
    out: dict[tuple[Any, ...], tuple[float | None, ...]] = {}
    for row in conn.execute(query):
        key, n, values = tuple(row[: len(by)]), row[len(by)], row[len(by) + 1 :]
        if n is None:  # no rows at all: one row of NULL
            continue
        out[key] = tuple(
            _interpolate(q, n, values[2 * i], values[2 * i + 1]) for i, q in enumerate(QUANTILES)
        )
    return out


def _interpolate(q: float, n: int, low: float, high: float | None) -> float:
    position = q * (n - 1)
    share = position - int(position)
    return float(low) if high is None or share == 0 else low + share * (high - low)


def exact_allowed(conn: Connection, measured_calls: int, start: datetime) -> bool:
    """Whether a range from `start` holding `measured_calls` gets exact percentiles: it is
    small enough, and its raw rows are all there (it starts at or after the retention
    watermark; before it they may have been pruned and only the histograms are whole)."""
    if measured_calls > EXACT_MAX_CALLS.get(conn.dialect.name, 0):
        return False
    watermark = pruned_before(conn)
    return watermark is None or start >= watermark


def histogram(row: Mapping[str, Any]) -> list[int]:
    """The latency bucket counts of an aggregate row."""
    return [int(row.get(name) or 0) for name in LATENCY_COLUMNS]
