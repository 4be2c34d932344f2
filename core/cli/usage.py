"""Usage commands: `usage prune` (raw usage rows past their retention; core/usage/retention.py)."""

from __future__ import annotations

import argparse

from core.access import Actor
from core.cli.common import CliError, migrated_engine
from core.config import RETENTION_VARIABLE, Settings
from core.models import utcnow

MAX_BATCH_SIZE = 1_000_000


def cmd_usage_prune(settings: Settings, args: argparse.Namespace) -> None:
    from core.usage import retention

    days = _days(settings, args.older_than)
    batch_size = _batch_size(args.batch_size)
    now = utcnow()
    cutoff = retention.cutoff_for(days, now)
    engine = migrated_engine(settings)
    result = retention.prune(
        engine, cutoff, actor=Actor.cli(), now=now, dry_run=args.dry_run, batch_size=batch_size
    )
    before = f"created before {cutoff:%Y-%m-%d %H:%M} UTC (older than {days} days)"
    if result.dry_run:
        print(
            f"Would delete {result.rows:,} usage row(s) {before}; nothing was changed "
            "(--dry-run). The Usage page's totals for those days stay in the rollups."
        )
        return
    print(
        f"Deleted {result.rows:,} usage row(s) {before} in {result.batches} batch(es). The "
        "Usage page keeps their totals (rollups); their latency percentiles are now estimated."
    )


def _days(settings: Settings, older_than: str | None) -> int:
    from core.usage.retention import parse_age

    if older_than is None:
        if settings.usage_retention_days is None:
            raise CliError(
                f"--older-than is missing and {RETENTION_VARIABLE} is not set: give an age, "
                "e.g. --older-than 400d"
            )
        return settings.usage_retention_days
    try:
        return parse_age(older_than)
    except ValueError as exc:
        raise CliError(f"--older-than {exc}") from None


def _batch_size(raw: str) -> int:
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_BATCH_SIZE:
        raise CliError(
            f"--batch-size must be a whole number from 1 to {MAX_BATCH_SIZE:,}, not {raw!r}"
        )
    return size
