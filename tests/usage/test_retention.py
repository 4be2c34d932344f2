"""Usage retention: pruning raw rows leaves every rollup sum as it was (to the micro-dollar and
the latency bucket), deletes exactly the rows before the cutoff, in batches, once; rows that
come late for pruned days still count; deleting recent rows still subtracts; a rebuild keeps
the pruned days; the report's totals stay and its percentiles for pruned days are marked as
histogram estimates."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, text

from core.access import Actor
from core.cli import main
from core.config import Settings
from core.models import AdminActionLog, QuotaCounter, UsageLog, User, utcnow
from core.usage.queries import totals, usage_report
from core.usage.report import UsageQuery
from core.usage.retention import apply_retention, cutoff_for, parse_age, prune
from core.usage.rollup import pruned_before, rebuild
from tests.support.database import MigratedDatabase
from tests.support.usage import (
    T0,
    add_configs,
    expected_rollup,
    insert_out_of_order,
    random_rows,
    raw_rows,
    rollup_contents,
)

D = timedelta(days=1)
NOW = T0 + 30 * D  # the cutoff T0 is well over a day old
CLI = Actor(label="cli:tester", is_operator=True)


def rollups(db: MigratedDatabase) -> tuple[dict[Any, Any], dict[Any, Any]]:
    return rollup_contents(db, hourly=True), rollup_contents(db, hourly=False)


def actions(db: MigratedDatabase) -> list[AdminActionLog]:
    with db.session() as session:
        return list(session.scalars(select(AdminActionLog).order_by(AdminActionLog.id)))


@pytest.fixture
def loaded(db: MigratedDatabase) -> dict[str, int]:
    """Rows from five days before T0 (a UTC midnight) to two days after, on the boundaries."""
    configs = add_configs(db)
    rows = random_rows(random.Random(21), 300, T0 - 5 * D, T0 + 2 * D, configs)
    insert_out_of_order(db, rows)
    return configs


def test_prune_deletes_exactly_the_old_rows_and_keeps_every_rollup_sum(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    before = rollups(db)
    old = {r["id"] for r in raw_rows(db) if r["created_at"] < T0}
    young = {r["id"] for r in raw_rows(db) if r["created_at"] >= T0}
    assert old and young and any(r["created_at"] == T0 for r in raw_rows(db))

    result = prune(db.engine, T0, actor=CLI, now=NOW)

    assert (result.rows, result.cutoff, result.dry_run) == (len(old), T0, False)
    assert {r["id"] for r in raw_rows(db)} == young
    assert rollups(db) == before  # every sum and latency bucket, to the micro-dollar
    with db.engine.connect() as conn:
        assert pruned_before(conn) == T0
    audit = [a for a in actions(db) if a.action == "usage.pruned"]
    assert len(audit) == 1 and audit[0].actor_label == "cli:tester"
    assert audit[0].details == {"rows": len(old), "batches": 1, "cutoff": T0.isoformat()}

    again = prune(db.engine, T0, actor=CLI, now=NOW)  # nothing left to do
    assert (again.rows, again.batches) == (0, 0)
    earlier = prune(db.engine, T0 - 2 * D, actor=CLI, now=NOW)  # the watermark stays
    assert earlier.rows == 0
    assert rollups(db) == before
    with db.engine.connect() as conn:
        assert pruned_before(conn) == T0
    assert [a.action for a in actions(db)].count("usage.pruned") == 1  # a no-op is not audited


def test_a_dry_run_counts_and_changes_nothing(db: MigratedDatabase, loaded: dict[str, int]) -> None:
    before, rows = rollups(db), raw_rows(db)
    result = prune(db.engine, T0, actor=CLI, now=NOW, dry_run=True)
    assert result.rows == sum(r["created_at"] < T0 for r in rows) > 0
    assert result.dry_run and result.batches == 0
    assert raw_rows(db) == rows and rollups(db) == before
    with db.engine.connect() as conn:
        assert pruned_before(conn) is None
    assert actions(db) == []


def test_small_batches_delete_every_old_row(db: MigratedDatabase) -> None:
    configs = add_configs(db)
    old = random_rows(random.Random(22), 50, T0 - 3 * D + timedelta(hours=1), T0 - 2 * D, configs)
    old = old[:50]
    young = random_rows(random.Random(23), 20, T0 + timedelta(hours=1), T0 + D, configs)[:20]
    insert_out_of_order(db, [*old, *young])
    before = rollups(db)

    result = prune(db.engine, T0, actor=CLI, now=NOW, batch_size=7)

    assert (result.rows, result.batches) == (50, 8)  # 7 batches of 7, then 1
    assert len(raw_rows(db)) == 20 and rollups(db) == before


def test_late_rows_for_pruned_days_still_count_and_stay_counted(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    prune(db.engine, T0, actor=CLI, now=NOW)
    before = rollups(db)
    late = random_rows(random.Random(24), 12, T0 - 4 * D, T0 - 3 * D, loaded)[:12]
    insert_out_of_order(db, late, batches=2)  # a spool replayed long after

    stored = raw_rows(db)
    late_rows = [r for r in stored if r["created_at"] < T0]  # the old ones were pruned
    assert len(late_rows) == len(late)
    added = (expected_rollup(late_rows, hourly=True), expected_rollup(late_rows, hourly=False))
    after = rollups(db)
    for was, grew, now in zip(before, added, after, strict=True):
        assert now == _plus(was, grew)

    result = prune(db.engine, T0 + D, actor=CLI, now=NOW)  # a later prune deletes them
    assert result.rows >= len(late)
    assert not [r for r in raw_rows(db) if r["created_at"] < T0 + D]
    assert rollups(db) == after  # and subtracts nothing, theirs included


def test_deleting_rows_after_the_watermark_still_subtracts(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    prune(db.engine, T0, actor=CLI, now=NOW)
    daily = rollups(db)[1]
    usage = UsageLog.__table__
    with db.engine.begin() as conn:  # what the demo purge does to recent demo rows
        conn.execute(delete(usage).where(usage.c.source == "demo"))
    remaining = raw_rows(db)
    assert remaining and all(r["source"] == "router" for r in remaining)
    new_hourly, new_daily = rollups(db)
    assert {k: v for k, v in new_daily.items() if k[0] >= T0.date()} == expected_rollup(
        remaining, hourly=False
    )
    assert {k: v for k, v in new_hourly.items() if k[0] >= T0} == expected_rollup(
        remaining, hourly=True
    )
    # Pruned days keep their sums, demo included (the purge itself clears those: see below).
    assert {k: v for k, v in new_daily.items() if k[0] < T0.date()} == {
        k: v for k, v in daily.items() if k[0] < T0.date()
    }


def test_the_demo_purge_removes_demo_sums_of_pruned_days_too(
    db: MigratedDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    now = utcnow()
    real = {"provider_type": "openai", "model_name": "gpt-4o-mini", "task_type": "extraction",
            "status": "success", "latency_ms": 812, "cost_micro_usd": 1234}  # fmt: skip
    with db.engine.begin() as conn:
        conn.execute(insert(UsageLog), real | {"created_at": now - 8 * D})  # will be pruned
        conn.execute(insert(UsageLog), real | {"created_at": now - timedelta(hours=3)})
    settings = db.settings
    assert main(["demo-data", "--days", "10", "--calls", "400", "--seed", "1"], settings) == 0
    prune(db.engine, cutoff_for(5, now), actor=CLI, now=now)
    assert main(["demo-data", "--purge"], settings) == 0

    for table in rollups(db):
        assert {key[6] for key in table} == {"router"}  # source: no demo sums left
        assert sum(v["calls"] for v in table.values()) == 2
        assert sum(v["cost_micro_usd"] for v in table.values()) == 2468


def test_rebuild_after_a_prune_keeps_the_pruned_days(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    prune(db.engine, T0, actor=CLI, now=NOW)
    before = rollups(db)
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM ai_provider_usage_daily WHERE day >= :d"), {"d": T0.date()})
        rebuild(conn)
    assert rollups(db) == before


def test_prune_leaves_the_quota_counters_alone(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    with db.session() as session, session.begin():
        session.add(
            QuotaCounter(config_id=loaded["openai"], day=(T0 - 2 * D).date(), used_tokens=5)
        )
        session.add(QuotaCounter(config_id=loaded["openai"], day=T0.date(), used_tokens=7))
    prune(db.engine, T0 + D, actor=CLI, now=NOW)
    with db.session() as session:
        kept = session.execute(select(QuotaCounter.day, QuotaCounter.used_tokens)).all()
    assert sorted(kept) == [((T0 - 2 * D).date(), 5), (T0.date(), 7)]


def test_the_report_keeps_old_totals_and_estimates_pruned_percentiles(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    with db.session() as session, session.begin():
        analyst = User(username="ana", password_hash="x", role="analyst")
        session.add(analyst)
        session.flush()
        actor = Actor(label="ana", user_id=analyst.id)
    old_range = UsageQuery(T0 - 5 * D, T0 + D)  # reaches before the watermark
    new_range = UsageQuery(T0, T0 + 2 * D)  # starts on it
    with db.session() as session:
        old_before = totals(session, actor, old_range)
        new_before = totals(session, actor, new_range)
    assert old_before.latency.exact and new_before.latency.exact

    prune(db.engine, T0, actor=CLI, now=NOW)

    with db.session() as session:
        old_after = totals(session, actor, old_range)
        new_after = totals(session, actor, new_range)
        report = usage_report(session, actor, old_range)
        recent = usage_report(session, actor, new_range)
    figures = ("calls", "succeeded", "failed", "cost_micro_usd", "total_tokens", "latency_ms_sum")
    for name in figures:
        assert getattr(old_after, name) == getattr(old_before, name), name
    assert not old_after.latency.exact and old_after.latency.p95 is not None
    assert new_after == new_before  # exact as before: its raw rows are all there
    assert not report.headline.current.latency.exact
    assert all(not p.latency.exact for p in report.latency_by_provider)
    assert f"Raw rows before {T0.date()} were pruned" in " ".join(report.notes)
    assert not any("pruned" in note for note in recent.notes)
    assert recent.headline.current.latency.exact


def test_apply_retention_prunes_to_the_setting_and_does_nothing_when_unset(
    db: MigratedDatabase, loaded: dict[str, int]
) -> None:
    rows = raw_rows(db)
    assert apply_retention(db.engine, db.settings, NOW) is None
    assert raw_rows(db) == rows
    keep_days = Settings(database_url=db.url, usage_retention_days=(NOW - T0).days)
    result = apply_retention(db.engine, keep_days, NOW + timedelta(hours=5))
    assert result is not None and result.cutoff == T0
    assert {r["id"] for r in raw_rows(db)} == {r["id"] for r in rows if r["created_at"] >= T0}
    assert [a.actor_label for a in actions(db)] == ["system:usage-retention"]


def test_ages_cutoffs_and_their_refusals() -> None:
    assert parse_age("400d") == 400 and parse_age(" 1d ") == 1
    for bad in ("400", "400 days", "1w", "-3d", "0d", "d", ""):
        with pytest.raises(ValueError, match=r"days like 400d|at least 1d"):
            parse_age(bad)
    assert cutoff_for(400, datetime(2026, 12, 7, 13, 5, tzinfo=T0.tzinfo)) == datetime(
        2025, 11, 2, tzinfo=T0.tzinfo
    )
    with pytest.raises(ValueError, match="at least 1 day"):
        cutoff_for(0, NOW)


def test_prune_refuses_a_young_or_ragged_cutoff(db: MigratedDatabase) -> None:
    for cutoff in (NOW, NOW - timedelta(hours=12), T0 + timedelta(hours=3)):
        with pytest.raises(ValueError, match=r"midnight|day"):
            prune(db.engine, cutoff, actor=CLI, now=NOW)
    with pytest.raises(ValueError, match="batch size"):
        prune(db.engine, T0, actor=CLI, now=NOW, batch_size=0)
    with db.engine.connect() as conn:
        assert pruned_before(conn) is None
        assert conn.execute(select(func.count()).select_from(AdminActionLog)).scalar_one() == 0


def _plus(a: dict[Any, dict[str, int]], b: dict[Any, dict[str, int]]) -> dict[Any, Any]:
    out: dict[Any, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for side in (a, b):
        for key, sums in side.items():
            for name, value in sums.items():
                out[key][name] += value
    return {k: dict(v) for k, v in out.items()}
