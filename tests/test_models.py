"""Every model round-trips on both databases, and the database itself refuses bad rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlalchemy.orm.exc import StaleDataError

from core.models import AdminActionLog, ProviderConfig, UsageLog, User
from tests.support.database import MigratedDatabase

WHEN = datetime(2026, 3, 31, 23, 59, 59, 999000, tzinfo=UTC)


def a_user(**overrides: Any) -> User:
    fields: dict[str, Any] = {
        "username": "ada",
        "display_name": "Ada Admin",
        "email": "ada@example.com",
        "password_hash": "$2b$12$hash",
        "role": "super_admin",
        "totp_secret_encrypted": "gAAAA-token",
        "totp_last_step": 59_000_123,
        "failed_logins": 2,
        "locked_until": WHEN,
    }
    return User(**(fields | overrides))


def a_config(**overrides: Any) -> ProviderConfig:
    fields: dict[str, Any] = {
        "provider_type": "gemini",
        "api_key_encrypted": "gAAAA-encrypted",
        "key_last4": "9xYz",
        "model_name": "gemini-2.5-flash",
        "display_name": "Gemini Fast (Budget)",
        "description": "extraction and validation",
        "base_url": "http://127.0.0.1:9999",
        "default_for_extraction": True,
        "default_for_validation": True,
        "priority": 10,
        "daily_token_limit": 1_000_000,
        "monthly_token_limit": 20_000_000_000,  # beyond 32 bits
        "last_tested_at": WHEN,
        "last_test_success": True,
        "last_test_message": "ok",
    }
    return ProviderConfig(**(fields | overrides))


def a_usage(config: ProviderConfig | None, **overrides: Any) -> UsageLog:
    fields: dict[str, Any] = {
        "provider_config_id": config.id if config else None,
        "provider_type": "gemini",
        "model_name": "gemini-2.5-flash",
        "task_type": "extraction",
        "input_tokens": 120,
        "output_tokens": 30,
        "total_tokens": 150,
        "cost_micro_usd": 87,
        "status": "success",
        "latency_ms": 412,
        "created_at": WHEN,
    }
    return UsageLog(**(fields | overrides))


def test_round_trip_of_every_model(db: MigratedDatabase) -> None:
    with db.session() as session:
        user = a_user()
        session.add(user)
        session.flush()
        config = a_config(created_by_id=user.id, is_default=True)
        session.add(config)
        session.flush()
        session.add(
            a_usage(
                config,
                user_id=user.id,
                status="error",
                error_type="RateLimited",
                error_message="429 from provider",
                cost_micro_usd=None,
            )
        )
        session.add(
            AdminActionLog(
                actor_id=user.id,
                actor_label="ada",
                action="provider.create",
                target_type="provider_config",
                target_id=str(config.id),
                details={"display_name": "Gemini", "tasks": ["extraction"]},
                ip_address="2001:db8::1",
                user_agent="Firefox",
            )
        )
        session.commit()
        ids = (user.id, config.id)

    with db.session() as session:
        user = session.get(User, ids[0])
        config = session.get(ProviderConfig, ids[1])
        usage = session.scalars(select(UsageLog)).one()
        log = session.scalars(select(AdminActionLog)).one()
    assert user is not None and config is not None
    assert (user.username, user.role, user.totp_last_step, user.locked_until) == (
        "ada",
        "super_admin",
        59_000_123,
        WHEN,
    )
    assert user.is_active and user.created_at.tzinfo is UTC
    assert config.monthly_token_limit == 20_000_000_000
    assert config.last_tested_at == WHEN and config.last_tested_at.tzinfo is UTC
    assert (config.is_active, config.is_default, config.version) == (True, True, 1)
    assert config.serves("extraction") and not config.serves("cv_draft")
    assert config.created_by_id == user.id
    assert (usage.status, usage.cost_micro_usd, usage.created_at) == ("error", None, WHEN)
    assert log.details == {"display_name": "Gemini", "tasks": ["extraction"]}
    assert log.ip_address == "2001:db8::1" and log.created_at.tzinfo is UTC


def test_times_from_other_zones_are_stored_as_utc(db: MigratedDatabase) -> None:
    berlin = datetime(2026, 4, 1, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))  # 01:30 UTC
    with db.session() as session:
        session.add(a_usage(None, created_at=berlin))
        session.commit()
        stored = session.scalars(select(UsageLog.created_at)).one()
    assert stored == datetime(2026, 4, 1, 1, 30, tzinfo=UTC)


def test_naive_datetimes_are_refused(db: MigratedDatabase) -> None:
    with db.session() as session:
        session.add(a_usage(None, created_at=datetime(2026, 1, 1)))  # noqa: DTZ001
        with pytest.raises(StatementError, match="naive datetime"):
            session.flush()


@pytest.mark.parametrize(
    "bad",
    [
        {"provider_type": "mistral"},
        {"daily_token_limit": -1},
        {"monthly_token_limit": -5},
        {"priority": -1},
        {"model_name": ""},
    ],
    ids=[
        "unknown-provider",
        "negative-daily",
        "negative-monthly",
        "negative-priority",
        "empty-model",
    ],
)
def test_bad_provider_configs_are_refused(db: MigratedDatabase, bad: dict[str, Any]) -> None:
    with db.session() as session:
        session.add(a_config(**bad))
        with pytest.raises(IntegrityError):
            session.commit()
    with db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []


@pytest.mark.parametrize(
    "bad",
    [
        {"status": "maybe"},
        {"task_type": "poetry"},
        {"input_tokens": -1},
        {"cost_micro_usd": -3},
        {"latency_ms": -1},
    ],
    ids=["status", "task", "tokens", "cost", "latency"],
)
def test_bad_usage_rows_are_refused(db: MigratedDatabase, bad: dict[str, Any]) -> None:
    with db.session() as session:
        session.add(a_usage(None, **bad))
        with pytest.raises(IntegrityError):
            session.commit()


def test_bad_user_rows_are_refused(db: MigratedDatabase) -> None:
    with db.session() as session:
        session.add(a_user(role="root"))
        with pytest.raises(IntegrityError):
            session.commit()
    with db.session() as session:
        session.add_all([a_user(), a_user(display_name="twin")])
        with pytest.raises(IntegrityError):
            session.commit()


def test_only_one_config_can_be_the_default(db: MigratedDatabase) -> None:
    with db.session() as session:
        session.add_all(
            [a_config(is_default=True), a_config(is_default=False), a_config(is_default=False)]
        )
        session.commit()
        session.add(a_config(is_default=True))
        with pytest.raises(IntegrityError):
            session.commit()


def test_deleting_a_config_keeps_its_usage_history(db: MigratedDatabase) -> None:
    with db.session() as session:
        config = a_config()
        session.add(config)
        session.flush()
        session.add(a_usage(config))
        session.commit()
        session.delete(config)
        session.commit()
        usage = session.scalars(select(UsageLog)).one()
    assert usage.provider_config_id is None
    assert (usage.provider_type, usage.model_name, usage.total_tokens) == (
        "gemini",
        "gemini-2.5-flash",
        150,
    )


def test_a_stale_edit_is_refused_not_merged(db: MigratedDatabase) -> None:
    with db.session() as session:
        session.add(a_config())
        session.commit()
    first, second = db.session(), db.session()
    mine = first.scalars(select(ProviderConfig)).one()  # the form I opened...
    first.commit()  # ...in an earlier request; its values stay loaded
    theirs = second.scalars(select(ProviderConfig)).one()
    theirs.daily_token_limit = 5
    second.commit()
    mine.model_name = "gemini-2.5-pro"
    with pytest.raises(StaleDataError):
        first.commit()
    first.close()
    with db.session() as session:
        config = session.scalars(select(ProviderConfig)).one()
    assert (config.daily_token_limit, config.model_name, config.version) == (
        5,
        "gemini-2.5-flash",
        2,
    )
    second.close()


def test_updated_at_moves_on_update(db: MigratedDatabase) -> None:
    with db.session() as session:
        config = a_config()
        session.add(config)
        session.commit()
        created = config.updated_at
        config.priority = 1
        session.commit()
    assert config.updated_at >= created and config.updated_at - created < timedelta(minutes=1)


def test_audit_rows_cannot_be_changed_or_deleted(db: MigratedDatabase) -> None:
    with db.session() as session:
        session.add(AdminActionLog(actor_label="cli:root", action="keys.rotate"))
        session.commit()
    statements = [
        update(AdminActionLog).values(action="nothing.happened"),
        text("DELETE FROM admin_action_logs"),
    ]
    if db.backend == "postgresql":  # row triggers do not fire for TRUNCATE: a statement one does
        statements.append(text("TRUNCATE admin_action_logs"))
    for statement in statements:
        with db.session() as session, pytest.raises(DBAPIError, match="append-only"):
            session.execute(statement)
    with db.session() as session:
        assert session.scalars(select(AdminActionLog.action)).all() == ["keys.rotate"]


def test_foreign_keys_are_enforced(db: MigratedDatabase) -> None:
    with db.session() as session:
        session.add(a_usage(None, provider_config_id=4242))
        with pytest.raises(IntegrityError):
            session.commit()


def test_sqlite_runs_in_wal_mode(db: MigratedDatabase) -> None:
    if db.backend != "sqlite":
        assert db.engine.pool.size() == db.settings.db_pool_size  # a bounded pool instead
        return
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_a_write_transaction_takes_the_sqlite_write_lock_at_begin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """So a transaction that reads before it writes waits for other writers instead of
    failing when it upgrades (SQLITE_BUSY_SNAPSHOT)."""
    import sqlite3

    from core.config import Settings
    from core.db import make_engine, write_transaction

    path = tmp_path / "lock.db"
    engine = make_engine(Settings(database_url=f"sqlite:///{path}"))
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    with engine.begin() as conn:  # a plain transaction holds no write lock yet
        conn.exec_driver_sql("SELECT 1")
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
    with write_transaction(engine) as conn:
        conn.exec_driver_sql("SELECT 1")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("BEGIN IMMEDIATE")
    other.close()
    engine.dispose()
