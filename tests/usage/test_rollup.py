"""The usage rollups: the triggers keep them equal to the raw rows through inserts in any
order, updates, a deleted config, deletes and emptying the table; the range plan covers every
instant once; the histogram estimate stays within its stated tolerance."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, insert, inspect, text, update

from core.models import LATENCY_BUCKETS_MS, LATENCY_COLUMNS, ProviderConfig, UsageLog
from core.quota.ledger import QuotaLedger
from core.usage.percentiles import QUANTILES, bucket_of, histogram_percentiles
from core.usage.rollup import plan, rebuild
from core.usage.writer import UsageRecord, UsageWriter
from tests.support.database import MigratedDatabase
from tests.support.usage import (
    T0,
    add_configs,
    assert_rollups_match,
    insert_out_of_order,
    percentile_cont,
    random_rows,
    raw_rows,
    rollup_contents,
    within_histogram_tolerance,
)

TRIGGERS = {"ai_usage_rollup_insert", "ai_usage_rollup_delete", "ai_usage_rollup_update"}


def test_the_rollup_triggers_are_installed(db: MigratedDatabase) -> None:
    with db.engine.connect() as conn:
        if db.backend == "postgresql":
            query = (
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'ai_provider_usage_logs'::regclass"
            )
            expected = TRIGGERS | {"ai_usage_rollup_truncate"}
        else:
            query = (
                "SELECT name FROM sqlite_master "
                "WHERE type = 'trigger' AND tbl_name = 'ai_provider_usage_logs'"
            )
            expected = TRIGGERS
        assert set(conn.scalars(text(query))) >= expected
    assert {"ai_provider_usage_hourly", "ai_provider_usage_daily"} <= set(
        inspect(db.engine).get_table_names()
    )


def test_rows_written_out_of_order_land_in_their_own_hour_and_day(db: MigratedDatabase) -> None:
    configs = add_configs(db)
    rows = random_rows(
        random.Random(1), 400, T0 - timedelta(days=3), T0 + timedelta(days=2), configs
    )
    insert_out_of_order(db, rows)
    assert_rollups_match(db)
    # A backfill of old rows later on, and a late row for an hour that is already summed.
    late = random_rows(
        random.Random(2), 50, T0 - timedelta(days=40), T0 - timedelta(days=39), configs
    )
    insert_out_of_order(db, [*late, rows[0] | {"latency_ms": 5}], batches=2)
    assert_rollups_match(db)


def test_updates_deletes_and_a_deleted_config_move_the_sums(db: MigratedDatabase) -> None:
    configs = add_configs(db)
    rows = random_rows(
        random.Random(3), 200, T0 - timedelta(days=2), T0 + timedelta(days=1), configs
    )
    insert_out_of_order(db, rows)
    usage = UsageLog.__table__
    with db.engine.begin() as conn:
        conn.execute(update(usage).where(usage.c.status == "error").values(status="timeout"))
        conn.execute(
            update(usage)
            .where(usage.c.task_type == "validation")
            .values(created_at=T0 + timedelta(days=5, minutes=3), latency_ms=usage.c.latency_ms + 7)
        )
        conn.execute(delete(usage).where(usage.c.provider_type == "gemini"))
    assert_rollups_match(db)
    with db.session() as session, session.begin():  # ON DELETE SET NULL updates the usage rows
        session.delete(session.get(ProviderConfig, configs["openai"]))
    assert_rollups_match(db)
    assert all(key[2] != configs["openai"] for key in rollup_contents(db, hourly=False))


def test_emptying_the_usage_table_empties_the_rollups(db: MigratedDatabase) -> None:
    configs = add_configs(db)
    insert_out_of_order(db, random_rows(random.Random(4), 60, T0, T0 + timedelta(days=1), configs))
    with db.engine.begin() as conn:
        statement = "TRUNCATE" if db.backend == "postgresql" else "DELETE FROM"
        conn.execute(text(f"{statement} ai_provider_usage_logs"))
    assert rollup_contents(db, hourly=True) == {}
    assert rollup_contents(db, hourly=False) == {}


def test_rows_from_the_usage_writer_are_summed_however_late(db: MigratedDatabase) -> None:
    configs = add_configs(db)
    writer = UsageWriter(db.engine, QuotaLedger(db.engine), db.settings.usage_spool_dir)
    rng = random.Random(5)
    for minutes in rng.sample(range(0, 3000), 40):  # attempts that started in any order
        writer.submit(
            UsageRecord(
                provider_config_id=configs["claude"],
                user_id=None,
                provider_type="claude",
                model_name="claude-3-5-haiku-latest",
                task_type="extraction",
                status="success",
                input_tokens=100,
                output_tokens=20,
                total_tokens=120,
                cost_micro_usd=180,
                latency_ms=rng.randint(100, 5000),
                created_at=T0 - timedelta(minutes=minutes),
            )
        )
    writer.close()
    assert len(raw_rows(db)) == 40
    assert_rollups_match(db)


def test_rebuild_recomputes_the_same_rollups(db: MigratedDatabase) -> None:
    configs = add_configs(db)
    insert_out_of_order(db, random_rows(random.Random(6), 150, T0, T0 + timedelta(days=3), configs))
    before = (rollup_contents(db, True), rollup_contents(db, False))
    with db.engine.begin() as conn:
        conn.execute(text("DELETE FROM ai_provider_usage_daily"))  # damage it
        rebuild(conn)
    assert (rollup_contents(db, True), rollup_contents(db, False)) == before


def test_the_triggers_bucket_latencies_as_core_does(db: MigratedDatabase) -> None:
    """The migration's frozen copy of the bucket bounds agrees with core.models."""
    latencies = sorted({max(0, b + d) for b in LATENCY_BUCKETS_MS for d in (-1, 0, 1)})
    row = {"provider_type": "openai", "model_name": "m", "task_type": "extraction"}
    with db.engine.begin() as conn:
        conn.execute(
            insert(UsageLog),
            [row | {"status": "success", "latency_ms": ms, "created_at": T0} for ms in latencies],
        )
    (sums,) = rollup_contents(db, hourly=False).values()
    expected = [0] * len(LATENCY_COLUMNS)
    for ms in latencies:
        expected[bucket_of(ms)] += 1
    assert [sums[c] for c in LATENCY_COLUMNS] == expected


# --- no database: the range plan and the histogram estimate ---------------------------------


@pytest.mark.parametrize("grain", ["hour", "day"])
def test_the_plan_covers_every_instant_of_the_range_exactly_once(grain: str) -> None:
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    moments = [base + timedelta(hours=h) for h in (0, 1, 23, 24, 48, 24 * 9)]
    moments += [base + timedelta(seconds=rng.randint(0, 86_400 * 10)) for _ in range(40)]
    for start in moments:
        for end in moments:
            spans = plan(start, end, grain)  # type: ignore[arg-type]
            if start >= end:
                assert spans == []
                continue
            assert spans[0].start == start and spans[-1].end == end
            assert all(a.end == b.start for a, b in itertools.pairwise(spans))
            for span in spans:
                assert span.start < span.end
                if span.source == "daily":
                    assert grain == "day" and span.start.hour == 0 and span.end.hour == 0
                if span.source != "raw":
                    assert span.start.minute == span.start.second == span.start.microsecond == 0
                    assert span.end.minute == span.end.second == span.end.microsecond == 0
                else:
                    assert span.end - span.start < timedelta(hours=2)  # edges only


def test_histogram_estimates_stay_within_their_bucket() -> None:
    rng = random.Random(8)
    for trial in range(200):
        n = rng.choice([1, 2, 3, 10, 99, 1000])
        values = [int(rng.lognormvariate(6.5, 1.2)) for _ in range(n)]
        if trial % 10 == 0:
            values = [rng.choice([0, 400_000, 61_000]) for _ in range(n)]
        counts = [0] * len(LATENCY_BUCKETS_MS)
        for value in values:
            counts[bucket_of(value)] += 1
        for q, estimate in zip(QUANTILES, histogram_percentiles(counts), strict=True):
            assert estimate is not None
            assert within_histogram_tolerance(estimate, values, q), (q, estimate, sorted(values))
            exact = percentile_cont(values, q)
            assert exact is not None
            if 50 <= exact <= 120_000 and n >= 99:  # dense data in the 1.2× buckets: within 20%
                assert abs(estimate - exact) <= 0.2 * exact + 1
