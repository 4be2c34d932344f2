"""Usage analytics at scale: ingest rate, and the Usage page's query times at 1M and 10M rows.

    .venv/bin/python bench/analytics.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--pg-sizes 1000000,10000000] [--sqlite-sizes 1000000] [--days 180] [--rebuild]

For each size and database: a throwaway database (PostgreSQL: created next to --pg's and
dropped afterwards; SQLite: a temporary file), migrated; N demo-like usage rows over the last
--days days (core.demo_data's generator) loaded with COPY on PostgreSQL and executemany on
SQLite, the rollup triggers folding every batch in as it lands; ANALYZE. Then every query of
the Usage page (core.usage_queries.PAGE_QUERIES plus the filter options) for the last 30 and 90
days: the first run and the median of five, per query and in total; and the plan (EXPLAIN
ANALYZE on PostgreSQL, EXPLAIN QUERY PLAN on SQLite) of the slowest SQL statement.
Targets (issue 7, this 2-core machine): the page's queries together ≤ 1 s at 10M rows on
PostgreSQL and at 1M on SQLite; ingest ≥ 50,000 rows/s into PostgreSQL. Not part of make test.
"""

from __future__ import annotations

import argparse
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, event, func, select

from core.access import Actor
from core.admin import ProviderAdmin
from core.config import Settings
from core.crypto import SecretBox, generate_key
from core.db import make_engine, make_session_factory, upgrade
from core.models import usage_daily, usage_hourly, utcnow
from core.usage.demo import copy_csv, ensure_demo_configs, load, to_csv
from core.usage.demo_rows import generate
from core.usage.queries import PAGE_QUERIES, filter_options
from core.usage.report import UsageQuery
from core.usage.rollup import rebuild
from tests.support.database import PostgresServer

ACTOR = Actor.cli()
T = TypeVar("T")
WINDOWS = (30, 90)
RUNS = 5


def ingest(engine: Engine, rows: int, days: int) -> None:
    """Load `rows` demo-like rows in time order, one transaction per ~250k rows; the next batch
    is generated (and, for COPY, turned into CSV) in a thread while the database takes this one.
    Prints the end-to-end rate: from random numbers to committed rows with their rollups."""
    admin = ProviderAdmin(make_session_factory(engine), SecretBox([generate_key()]))
    config_ids, _ = ensure_demo_configs(engine, admin, ACTOR)
    postgres = engine.dialect.name == "postgresql"
    frames = generate(days, rows, config_ids, utcnow(), seed=7, chunk=250_000)
    batches = ((len(f), to_csv(f) if postgres else f) for f in frames)
    started = time.perf_counter()
    loaded = 0
    for size, batch in prefetched(batches):
        with engine.begin() as conn:
            if isinstance(batch, bytes):
                copy_csv(conn, batch)
            else:
                load(conn, batch)
        loaded += size
    took = time.perf_counter() - started
    how = "COPY" if postgres else "executemany"
    print(
        f"  ingest: {loaded:,} rows in {took:.1f} s = {loaded / took:,.0f} rows/s ({how}, rollups"
    )
    print("          kept by the triggers; generating the rows is inside the time, overlapped)")
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
    print(f"  ANALYZE: {time.perf_counter() - started:.1f} s")
    with engine.connect() as conn:
        hourly = conn.scalar(select(func.count()).select_from(usage_hourly))
        daily = conn.scalar(select(func.count()).select_from(usage_daily))
    print(f"  rollups: {hourly:,} hourly rows, {daily:,} daily rows")


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """`items`, produced one step ahead in a background thread."""
    ready: queue.Queue[tuple[T] | None] = queue.Queue(maxsize=1)

    def produce() -> None:
        for item in items:
            ready.put((item,))
        ready.put(None)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    while (got := ready.get()) is not None:
        yield got[0]
    worker.join()


@contextmanager
def statements(engine: Engine) -> Iterator[list[tuple[float, str, Any]]]:
    """Record (seconds, SQL, parameters) of every statement run on `engine` meanwhile."""
    seen: list[tuple[float, str, Any]] = []

    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        conn.info["bench_started"] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append((time.perf_counter() - conn.info["bench_started"], statement, parameters))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def page_queries(days: int) -> dict[str, Callable[[Any], Any]]:
    query = UsageQuery.last(timedelta(days=days))
    calls: dict[str, Callable[[Any], Any]] = {
        name: (lambda session, fn=fn: fn(session, ACTOR, query))
        for name, fn in PAGE_QUERIES.items()
    }
    calls["filter_options"] = lambda session: filter_options(session, ACTOR)
    return calls


def time_page(engine: Engine, days: int) -> None:
    sessions = make_session_factory(engine)
    first: dict[str, float] = {}
    runs: dict[str, list[float]] = {}
    queries = page_queries(days)
    with statements(engine) as seen:
        for attempt in range(RUNS + 1):
            for name, call in queries.items():
                with sessions() as session:
                    started = time.perf_counter()
                    call(session)
                    took = time.perf_counter() - started
                if attempt == 0:
                    first[name] = took
                else:
                    runs.setdefault(name, []).append(took)
    median = {name: statistics.median(values) for name, values in runs.items()}
    print(f"  last {days} days:")
    for name in median:
        print(
            f"    {name:<22} first {first[name] * 1000:7.1f} ms   "
            f"median {median[name] * 1000:7.1f} ms"
        )
    print(
        f"    {'ALL PAGE QUERIES':<22} first {sum(first.values()) * 1000:7.1f} ms   "
        f"median {sum(median.values()) * 1000:7.1f} ms"
    )
    slowest = max(seen, key=lambda item: item[0])
    explain(engine, slowest[1], slowest[2], slowest[0])


def explain(engine: Engine, statement: str, parameters: Any, seconds: float) -> None:
    postgres = engine.dialect.name == "postgresql"
    prefix = "EXPLAIN (ANALYZE, BUFFERS) " if postgres else "EXPLAIN QUERY PLAN "
    with engine.connect() as conn:
        plan = conn.exec_driver_sql(prefix + statement, parameters).all()
    print(f"    slowest statement ({seconds * 1000:.1f} ms):")
    print("      " + " ".join(statement.split())[:600])
    print("    its plan:")
    for row in plan:
        print("      " + " | ".join(str(v) for v in row))


def run_one(label: str, url: str, rows: int, days: int, rebuild_too: bool) -> None:
    print(f"\n== {label}: {rows:,} usage rows over {days} days ==")
    engine = make_engine(Settings(database_url=url))
    try:
        upgrade(engine)
        ingest(engine, rows, days)
        if rebuild_too:
            started = time.perf_counter()
            with engine.begin() as conn:
                rebuild(conn)
            print(f"  full rollup rebuild from raw rows: {time.perf_counter() - started:.1f} s")
        for window in WINDOWS:
            time_page(engine, window)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--pg-sizes", default="1000000,10000000")
    parser.add_argument("--sqlite-sizes", default="1000000")
    parser.add_argument("--days", type=int, default=180, help="spread of the rows (≥ 2 × 90)")
    parser.add_argument("--rebuild", action="store_true", help="also time a full rollup rebuild")
    args = parser.parse_args()
    sizes = [int(s) for s in args.pg_sizes.split(",") if s]
    for path in ("/work", "/var/lib/postgresql", tempfile.gettempdir()):
        if Path(path).exists():
            usage = shutil.disk_usage(path)
            print(f"free disk at {path}: {usage.free / 1e9:.0f} GB")
    server = PostgresServer(args.pg)
    for rows in sizes:
        url = server.create()
        try:
            run_one("PostgreSQL", url, rows, args.days, args.rebuild)
        finally:
            server.drop(url)
    for rows in [int(s) for s in args.sqlite_sizes.split(",") if s]:
        with tempfile.TemporaryDirectory() as folder:
            run_one("SQLite", f"sqlite:///{folder}/bench.db", rows, args.days, args.rebuild)
    server.admin.dispose()


if __name__ == "__main__":
    main()
