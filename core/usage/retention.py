"""Usage retention: delete raw usage rows older than a cutoff, keeping their rollups.

The rollups (rollup.py) hold every figure the Usage page shows for a day, so raw rows can go
once they are old: `prune` deletes the rows created before a UTC midnight and the hourly and
daily sums stay exactly as they were. How: it first moves the watermark
(`ai_provider_usage_retention.pruned_before`, one row, only ever forward) to the cutoff, and the
rollup triggers do not subtract a deleted row created before the watermark (migration
8d4f2b6e1a37). A row that arrives later for a pruned day (a late spool replay) is added to the
rollups as usual, and a later prune deletes it without subtracting it: the rollups keep it.
Deleting rows after the watermark (the demo purge) still subtracts them.

Rows go in batches (default 5,000) by id range, each batch its own short transaction, so
writers and readers never wait on one long delete. Latency percentiles of a range reaching
before the watermark come from the rollups' histograms (percentiles.py; the page marks them ≈).
Quota counters are separate tables and are not touched.

`apply_retention` applies AI_CONSOLE_USAGE_RETENTION_DAYS (unset: keep everything); the CLI's
`usage prune` calls `prune` directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, and_, delete, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.config import MIN_RETENTION_DAYS, Settings
from core.models import UsageLog, UsageRetention, utcnow
from core.usage.rollup import floor_day, pruned_before

DEFAULT_BATCH_SIZE = 5_000
RAW = UsageLog.__table__
WATERMARK = UsageRetention.__table__
RETENTION_ACTOR = Actor(label="system:usage-retention", is_operator=True)
_AGE = re.compile(r"([0-9]+)d")


@dataclass(frozen=True)
class PruneResult:
    """What a prune did: `rows` deleted (or that would be, on a dry run) in `batches`
    statements, all created before `cutoff` (a UTC midnight)."""

    cutoff: datetime
    rows: int
    batches: int
    dry_run: bool


def parse_age(text: str) -> int:
    """Days from an age like "400d"; ValueError (saying what is accepted) otherwise."""
    found = _AGE.fullmatch(text.strip())
    if found is None:
        raise ValueError(f"expected a number of days like 400d, not {text!r}")
    days = int(found.group(1))
    if days < MIN_RETENTION_DAYS:
        raise ValueError(f"must be at least {MIN_RETENTION_DAYS}d, not {text!r}")
    return days


def cutoff_for(days: int, now: datetime) -> datetime:
    """The UTC midnight at or before `now` − `days`: rows created before it are older than
    `days` days (a row up to a day older may be kept, never a younger one deleted)."""
    if days < MIN_RETENTION_DAYS:
        raise ValueError(f"retention must be at least {MIN_RETENTION_DAYS} day(s), not {days}")
    return floor_day(now - timedelta(days=days))


def prune(
    engine: Engine,
    cutoff: datetime,
    *,
    actor: Actor,
    now: datetime | None = None,
    dry_run: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> PruneResult:
    """Delete the raw usage rows created before `cutoff` (a UTC midnight at least a day
    before `now`) in batches of `batch_size`, leaving the rollups unchanged; audited as
    `usage.pruned` when it deleted rows or moved the watermark. A dry run only counts them."""
    if cutoff.tzinfo is None or cutoff != floor_day(cutoff):
        raise ValueError(f"the cutoff must be a UTC midnight, not {cutoff.isoformat()}")
    if cutoff > (now or utcnow()) - timedelta(days=MIN_RETENTION_DAYS):
        raise ValueError(f"the cutoff must be at least {MIN_RETENTION_DAYS} day(s) in the past")
    if batch_size < 1:
        raise ValueError(f"the batch size must be at least 1, not {batch_size}")
    old = RAW.c.created_at < cutoff
    if dry_run:
        with engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(RAW).where(old)).scalar_one()
        return PruneResult(cutoff, count, 0, dry_run=True)
    with engine.begin() as conn:  # before any delete: from now on they subtract nothing
        moved = _raise_watermark(conn, cutoff)
    rows = batches = 0
    while True:
        with engine.begin() as conn:
            ids = select(RAW.c.id).where(old).order_by(RAW.c.id).limit(batch_size).subquery()
            low, high = conn.execute(select(func.min(ids.c.id), func.max(ids.c.id))).one()
            if low is None:
                break
            batch = delete(RAW).where(and_(RAW.c.id >= low, RAW.c.id <= high, old))
            rows += conn.execute(batch).rowcount
            batches += 1
    if rows or moved:
        with Session(engine) as session, session.begin():
            audit.record(
                session,
                actor,
                "usage.pruned",
                target_type="usage",
                details={"rows": rows, "batches": batches, "cutoff": cutoff.isoformat()},
            )
    return PruneResult(cutoff, rows, batches, dry_run=False)


def apply_retention(
    engine: Engine, settings: Settings, now: datetime, *, actor: Actor = RETENTION_ACTOR
) -> PruneResult | None:
    """Prune to AI_CONSOLE_USAGE_RETENTION_DAYS at `now`; None when it is unset (keep all)."""
    days = settings.usage_retention_days
    if days is None:
        return None
    return prune(engine, cutoff_for(days, now), actor=actor, now=now)


def _raise_watermark(conn: Connection, cutoff: datetime) -> bool:
    """Move the watermark forward to `cutoff` (never back); whether it moved."""
    before = pruned_before(conn)
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(WATERMARK).values(id=1, pruned_before=cutoff, updated_at=utcnow())
    later = statement.excluded.pruned_before > WATERMARK.c.pruned_before
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[WATERMARK.c.id],
            set_={"pruned_before": cutoff, "updated_at": statement.excluded.updated_at},
            where=later,
        )
    )
    return before is None or before < cutoff
