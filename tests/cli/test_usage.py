"""`python -m core usage prune`: deletes raw usage rows past an age (or the retention setting),
says how many and before when, audits it; a dry run only counts; bad flags are one line."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
import time_machine
from sqlalchemy import select

from core.cli import main
from core.models import AdminActionLog
from tests.support.database import MigratedDatabase
from tests.support.usage import (
    T0,
    add_configs,
    insert_out_of_order,
    random_rows,
    raw_rows,
    rollup_contents,
)

D = timedelta(days=1)
NOW = T0 + 400 * D + timedelta(hours=13, minutes=5)  # --older-than 400d cuts at T0
CUTOFF = "2026-03-10 00:00 UTC"  # T0


@pytest.fixture
def loaded(db: MigratedDatabase) -> int:
    """Rows around T0; returns how many are older than it."""
    rows = random_rows(random.Random(31), 120, T0 - 3 * D, T0 + 2 * D, add_configs(db))
    insert_out_of_order(db, rows)
    return sum(r["created_at"] < T0 for r in raw_rows(db))


def prune(db: MigratedDatabase, *args: str, retention_days: int | None = None) -> int:
    settings = replace(db.settings, usage_retention_days=retention_days)
    with time_machine.travel(NOW, tick=False):
        return main(["usage", "prune", *args], settings=settings)


def audited(db: MigratedDatabase) -> list[AdminActionLog]:
    with db.session() as session:
        return list(session.scalars(select(AdminActionLog)))


def test_a_dry_run_says_how_many_and_deletes_nothing(
    db: MigratedDatabase, loaded: int, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = raw_rows(db)
    assert prune(db, "--older-than", "400d", "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"Would delete {loaded:,} usage row(s) created before {CUTOFF}" in out
    assert "nothing was changed (--dry-run)" in out
    assert raw_rows(db) == rows and audited(db) == []


def test_prune_deletes_the_old_rows_and_audits_it(
    db: MigratedDatabase, loaded: int, capsys: pytest.CaptureFixture[str]
) -> None:
    daily = rollup_contents(db, hourly=False)
    assert prune(db, "--older-than", "400d", "--batch-size", "25") == 0
    out = capsys.readouterr().out
    batches = -(-loaded // 25)
    assert f"Deleted {loaded:,} usage row(s) created before {CUTOFF}" in out
    assert f"in {batches} batch(es)" in out
    assert all(r["created_at"] >= T0 for r in raw_rows(db))
    assert rollup_contents(db, hourly=False) == daily
    [row] = audited(db)
    assert row.action == "usage.pruned" and row.actor_label.startswith("cli:")
    assert row.actor_id is None
    assert row.details == {
        "rows": loaded,
        "batches": batches,
        "cutoff": "2026-03-10T00:00:00+00:00",
    }


def test_without_an_age_it_uses_the_retention_setting(
    db: MigratedDatabase, loaded: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert prune(db, "--dry-run", retention_days=401) == 0
    assert f"created before {T0 - D:%Y-%m-%d} 00:00 UTC (older than 401 days)" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "400"], "--older-than expected a number of days like 400d, not '400'"),
        (["--older-than", "1y"], "--older-than expected a number of days like 400d, not '1y'"),
        (["--older-than=-3d"], "--older-than expected a number of days like 400d, not '-3d'"),
        (["--older-than", "0d"], "--older-than must be at least 1d, not '0d'"),
        (
            ["--older-than", "9d", "--batch-size", "0"],
            "--batch-size must be a whole number from 1 to 1,000,000, not '0'",
        ),
        (
            ["--older-than", "9d", "--batch-size", "lots"],
            "--batch-size must be a whole number from 1 to 1,000,000, not 'lots'",
        ),
        (
            [],
            "--older-than is missing and AI_CONSOLE_USAGE_RETENTION_DAYS is not set: give an "
            "age, e.g. --older-than 400d",
        ),
    ],
)
def test_bad_flags_are_one_line_and_change_nothing(
    db: MigratedDatabase,
    loaded: int,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    rows = raw_rows(db)
    assert prune(db, *args) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {message}"]
    assert raw_rows(db) == rows and audited(db) == []


def test_the_cutoff_is_a_utc_midnight_at_least_the_age_back() -> None:
    from core.usage.retention import cutoff_for

    assert cutoff_for(400, NOW) == T0
    assert cutoff_for(1, datetime(2026, 3, 11, 0, 0, 1, tzinfo=T0.tzinfo)) == T0
