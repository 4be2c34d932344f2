"""Usage retention at scale: how long `usage prune` takes and how long each batch holds its locks.

    .venv/bin/python bench/retention.py [--pg postgresql+psycopg://postgres@127.0.0.1:5432/test]
        [--rows 1000000] [--days 60] [--older-than 30] [--batch-size 5000]

For each database (a throwaway PostgreSQL database next to --pg's, and a temporary SQLite
file), migrated: N demo-like rows over the last --days days (core.usage.demo_rows), then
core.usage.retention.prune for rows older than --older-than days, timing every batch's
transaction (the longest is how long a writer can wait on it). Checks that the daily and hourly
rollups are the same before and after, to the micro-dollar. Not part of make test.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import Engine, event, func, select

from bench.analytics import ingest
from core.access import Actor
from core.config import Settings
from core.db import make_engine, upgrade
from core.models import UsageLog, usage_daily, usage_hourly, utcnow
from core.usage.retention import cutoff_for, prune
from tests.support.database import PostgresServer


def snapshot(engine: Engine) -> tuple[list[Any], list[Any]]:
    with engine.connect() as conn:
        return (
            sorted(tuple(r) for r in conn.execute(select(usage_hourly))),
            sorted(tuple(r) for r in conn.execute(select(usage_daily))),
        )


def run(engine: Engine, label: str, args: argparse.Namespace) -> None:
    upgrade(engine)
    ingest(engine, args.rows, args.days)
    before = snapshot(engine)
    started: list[float] = []
    batches: list[float] = []
    # Each batch is one transaction: begin ... commit, timed from the engine's events.
    event.listen(engine, "begin", lambda conn: started.append(time.perf_counter()))
    event.listen(engine, "commit", lambda conn: batches.append(time.perf_counter() - started[-1]))
    now = utcnow()
    t0 = time.perf_counter()
    result = prune(
        engine,
        cutoff_for(args.older_than, now),
        actor=Actor.cli(),
        now=now,
        batch_size=args.batch_size,
    )
    total = time.perf_counter() - t0
    with engine.connect() as conn:
        left = conn.execute(select(func.count()).select_from(UsageLog)).scalar_one()
    same = snapshot(engine) == before
    print(
        f"{label}: pruned {result.rows:,} of {args.rows:,} rows in {total:.1f} s "
        f"({result.rows / total:,.0f} rows/s), {result.batches} batches of {args.batch_size}; "
        f"transactions: median {statistics.median(batches) * 1000:.0f} ms, "
        f"longest {max(batches) * 1000:.0f} ms; {left:,} rows left; rollups unchanged: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pg", help="a PostgreSQL URL; throwaway databases are made beside it")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--older-than", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=5_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    try:
        engine = make_engine(Settings(database_url=f"sqlite:///{folder / 'bench.db'}"))
        run(engine, "SQLite", args)
        engine.dispose()
    finally:
        shutil.rmtree(folder)
    if args.pg:
        server = PostgresServer(args.pg)
        url = server.create()
        try:
            engine = make_engine(Settings(database_url=url))
            run(engine, "PostgreSQL", args)
            engine.dispose()
        finally:
            server.drop(url)


if __name__ == "__main__":
    main()
