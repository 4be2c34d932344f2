"""The usage spool: rows survive a process and a database that is away, a row the database
refuses never takes others with it, and a replay stores each row once."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import make_url, text

from core.db import write_transaction
from core.pricing import Priced, estimate_cost_usd, to_micro_usd
from core.quota.ledger import QuotaLedger
from core.usage import records, spool
from core.usage.records import UsageRecord
from core.usage.writer import UsageWriter
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config, allow_planted_keys, usage_rows
from tests.support.spool import good, plant, spool_line
from tests.support.usage_worker import call_then_wait


def writer_for(db: MigratedDatabase) -> UsageWriter:
    return UsageWriter(db.engine, QuotaLedger(db.engine), db.settings.usage_spool_dir)


def sample(name: str) -> float:
    """What Prometheus would scrape for `name` now."""
    return REGISTRY.get_sample_value(name) or 0.0


def ship_orphans(db: MigratedDatabase) -> None:
    """What another router does: its writer ships orphans when it starts (its thread's first
    turn) and every ORPHAN_CHECK_S; here also at once, whichever comes first."""
    other = writer_for(db)
    other.ship_orphans()
    other.close()
    assert spool_files(db) == []


def spool_files(db: MigratedDatabase) -> list[Path]:
    return sorted(db.settings.usage_spool_dir.glob(f"*/*{spool.SUFFIX}"))


@contextmanager
def usage_table_locked(db: MigratedDatabase) -> Iterator[None]:
    """Hold a lock that keeps every writer from inserting usage rows until the block ends."""
    if db.backend == "postgresql":
        with db.engine.connect() as conn, conn.begin():
            conn.execute(text("LOCK TABLE ai_provider_usage_logs IN EXCLUSIVE MODE"))
            yield
    else:
        with write_transaction(db.engine):  # WAL: readers go on, writers wait and give up
            yield


def test_a_row_the_database_refuses_is_dead_lettered_and_the_others_are_stored(
    db: MigratedDatabase,
) -> None:
    before = sample("ai_console_usage_dead_letters_total")
    writer = writer_for(db)
    poison = good(13, total_tokens=-1)  # refused by a CHECK constraint
    for n in range(200):
        writer.submit(good(n))
        if n == 99:
            writer.submit(poison)
    writer.close()
    assert sorted(row.user_id for row in usage_rows(db)) == list(range(200))
    [kept] = (writer.spool_dir / spool.DEAD_LETTER).read_text().splitlines()
    record = json.loads(kept)
    assert "IntegrityError" in record["reason"] and "tokens_non_negative" in record["reason"]
    assert json.loads(record["line"])["attempt_id"] == poison.attempt_id
    assert sample("ai_console_usage_dead_letters_total") == before + 1
    assert spool_files(db) == []  # shipped whole: the closed writer's file is gone


def test_a_row_too_absurd_to_price_is_dead_lettered_and_the_others_are_stored(
    db: MigratedDatabase,
) -> None:
    """Pricing happens in the writer: a row it cannot price must not stop it."""
    writer = writer_for(db)
    huge = 10**40
    absurd = replace(
        good(13, input_tokens=huge, total_tokens=huge + 5),
        priced=Priced("openai", ("gpt-4o-mini",), huge, 5, good().created_at),
    )
    writer.submit(good(1))
    writer.submit(absurd)
    writer.submit(good(2))
    assert writer.flush(timeout=10)
    writer.close()
    assert sorted(row.user_id for row in usage_rows(db)) == [1, 2]
    [kept] = (writer.spool_dir / spool.DEAD_LETTER).read_text().splitlines()
    assert json.loads(json.loads(kept)["line"])["attempt_id"] == absurd.attempt_id


def test_a_replayed_spool_stores_each_row_once(db: MigratedDatabase) -> None:
    writer = writer_for(db)
    for n in range(30):
        writer.submit(good(n))
    assert writer.flush()
    [path] = spool_files(db)
    # As if the process had died between a commit and the cursor write: nothing marked done.
    path.with_suffix(spool.CURSOR_SUFFIX).write_bytes((0).to_bytes(8, "little"))
    copy = path.with_name("1-replayed" + spool.SUFFIX)
    plant(copy, path.read_bytes())  # and a second copy of the same rows, orphaned
    writer.close()
    ship_orphans(db)
    assert sorted(row.user_id for row in usage_rows(db)) == list(range(30))


def test_rows_wait_in_the_spool_while_the_database_is_away(db: MigratedDatabase) -> None:
    writer = writer_for(db)
    with usage_table_locked(db):
        for n in range(50):
            writer.submit(good(n))
        assert not writer.flush(timeout=0.5)  # no database: the rows stay spooled...
        assert usage_rows(db) == []
        assert sample("ai_console_usage_spool_bytes") > 0
    assert writer.flush()  # ...and are stored once it is back, nothing lost
    writer.close()
    assert sorted(row.user_id for row in usage_rows(db)) == list(range(50))


def test_the_spool_is_for_this_user_only(db: MigratedDatabase) -> None:
    db.settings.usage_spool_dir.mkdir(mode=0o755)
    writer = writer_for(db)
    writer.submit(good())
    for directory in (db.settings.usage_spool_dir, writer.spool_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    [path] = spool_files(db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    writer.close()


@pytest.mark.parametrize("ending", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_the_spool_of_a_killed_process_is_shipped_by_another(
    db: MigratedDatabase, fake_providers: FakeProviderServer, ending: signal.Signals
) -> None:
    """A crash, or a deploy's SIGTERM to a service with no shutdown hook: the rows are on disk
    and another process ships them. (Its holds: tests/quota/test_concurrency.py.)"""
    allow_planted_keys(fake_providers)
    config = add_config(db, fake_providers, "openai", tasks=["extraction"])
    calls = 20
    with usage_table_locked(db):  # the child's writer cannot store a single row
        seen, child_end = multiprocessing.get_context("spawn").Pipe(duplex=False)
        child = multiprocessing.get_context("spawn").Process(
            target=call_then_wait, args=(db.settings, calls, child_end)
        )
        child.start()
        try:
            answered = seen.recv()  # every call returned to its caller
        finally:
            os.kill(child.pid, ending)  # type: ignore[arg-type]
            child.join()
        assert child.exitcode == -ending
        assert answered == calls  # (else the child's error)
        assert len(spool_files(db)) == 1
    assert usage_rows(db) == []
    # Another process (here: a writer of this test's) finds the dead process's spool.
    ship_orphans(db)
    rows = usage_rows(db)
    assert [(r.provider_config_id, r.status) for r in rows] == [(config, "success")] * calls
    assert len({r.attempt_id for r in rows}) == calls
    assert spool_files(db) == []
    # The dead process spooled its rows unpriced; the shipper priced them as it would have.
    for r in rows:
        cost = estimate_cost_usd("openai", r.model_name, r.input_tokens, r.output_tokens)
        assert r.cost_micro_usd is not None and r.cost_micro_usd == to_micro_usd(cost)


def test_a_row_is_priced_as_it_is_stored_at_the_price_when_its_call_started(
    db: MigratedDatabase,
) -> None:
    """The router spools a call's row unpriced (pricing is slow); the writer prices it by the
    first model the price data knows, at the time the call started, as the result's
    cost_usd is."""
    writer = writer_for(db)
    started = good().created_at
    calls = {
        1: ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),  # a dated answer genai-prices knows
        2: ("ft:gpt-4o-mini:acme::abc", "gpt-4o-mini"),  # unknown: the configured model's
        3: ("no-such-model", "nor-this"),  # unpriced: None, not 0
    }
    priced = {}
    for user, models in calls.items():
        priced[user] = Priced("openai", models, 1200, 340, started)
        row = UsageRecord(None, user, "openai", models[0], "extraction", "success", 1200, 340)
        writer.submit(replace(row, total_tokens=1540, created_at=started, priced=priced[user]))
    writer.close()
    stored = {r.user_id: r.cost_micro_usd for r in usage_rows(db)}
    expected = to_micro_usd(estimate_cost_usd("openai", "gpt-4o-mini", 1200, 340, started))
    assert expected and stored == {1: expected, 2: expected, 3: None}
    assert [to_micro_usd(priced[user].usd) for user in calls] == [expected, expected, None]


def test_an_entry_spooled_by_the_version_before_is_stored_and_priced(
    db: MigratedDatabase,
) -> None:
    """A deploy can leave rows spooled by the version before (no cache or reasoning columns,
    no service or tags) for the new one to ship: they are stored, with those columns NULL (or
    unattributed), and priced."""
    started = good().created_at
    before = replace(good(2), priced=Priced("openai", ("gpt-4o-mini",), 10, 5, started))
    entry = records.encode(before, None)
    for name in records.LATER:
        del entry[name]
    writer = writer_for(db)
    plant(writer.spool_dir / f"1-before{spool.SUFFIX}", json.dumps(entry).encode() + b"\n")
    writer.close()
    ship_orphans(db)
    [row] = usage_rows(db)
    assert (row.user_id, row.input_tokens, row.output_tokens) == (2, 10, 5)
    assert (row.cached_input_tokens, row.cache_write_tokens, row.reasoning_tokens) == (None,) * 3
    assert row.cache_savings_micro_usd is None
    assert (row.service, row.tags) == ("", "")  # unattributed, not NULL
    assert row.cost_micro_usd == to_micro_usd(estimate_cost_usd("openai", "gpt-4o-mini", 10, 5))
    assert not (writer.spool_dir / spool.DEAD_LETTER).exists()


def test_a_live_process_spool_is_left_to_it(db: MigratedDatabase) -> None:
    alive = writer_for(db)
    with usage_table_locked(db):
        alive.submit(good())
        other = writer_for(db)
        assert other.ship_orphans() == 0  # its owner holds the lock: not an orphan
        other.close()
    alive.close()
    assert len(usage_rows(db)) == 1


@pytest.mark.parametrize("garbage", [b"{not json\n", b'{"attempt_id": 1}\n', b"[1, 2]\n"])
def test_a_line_that_is_no_usage_row_is_dead_lettered(db: MigratedDatabase, garbage: bytes) -> None:
    writer = writer_for(db)
    writer.submit(good())
    assert writer.flush()
    orphan = writer.spool_dir / f"1-garbage{spool.SUFFIX}"
    plant(orphan, garbage + spool_line(good(2)))
    writer.close()
    ship_orphans(db)
    assert sorted(row.user_id for row in usage_rows(db)) == [2, 7]
    [kept] = (writer.spool_dir / spool.DEAD_LETTER).read_text().splitlines()
    assert json.loads(kept)["line"] == garbage.decode().rstrip("\n")


def test_a_line_cut_off_by_a_dying_process_is_dead_lettered(db: MigratedDatabase) -> None:
    writer = writer_for(db)
    orphan = writer.spool_dir / f"1-cut{spool.SUFFIX}"
    whole = spool_line(good(2))
    cut = spool_line(good(3))[:40]
    plant(orphan, whole + cut)
    writer.close()
    ship_orphans(db)
    assert [row.user_id for row in usage_rows(db)] == [2]
    [kept] = (writer.spool_dir / spool.DEAD_LETTER).read_text().splitlines()
    assert json.loads(kept)["line"] == cut.decode()


def test_each_database_has_its_own_spool(tmp_path: Path) -> None:
    """A dead process's rows are shipped only to the database they were made for."""
    url = make_url("postgresql+psycopg://app:secret@db:5432/console")
    place = spool.database_directory(tmp_path, url)
    assert place == spool.database_directory(tmp_path, url.set(password="rotated"))
    assert "secret" not in str(place)
    others = [url.set(database="other"), url.set(host="db2"), make_url("sqlite:///x.db")]
    assert place not in {spool.database_directory(tmp_path, other) for other in others}
