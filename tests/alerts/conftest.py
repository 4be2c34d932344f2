"""Fixtures for the alert tests: a config with a $1 daily budget, a webhook listener (a local
HTTP server that records every request), the outbox and a super-admin with a fresh code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import pytest
from sqlalchemy import select

from core.access import Actor
from core.alerts import AlertInput, AlertWatcher, Outbox, add_rule
from core.crypto import SecretBox
from core.db import make_session_factory
from core.models import AdminActionLog, QuotaCounter
from core.providers.egress import Allowlist
from tests.fakes import FakeProviderServer
from tests.fakes.attacker_server import AttackerServer
from tests.support.admin import make_actor
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config

NOW = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)
LOOPBACK = Allowlist.from_entries(["127.0.0.1"])


@pytest.fixture
def listener() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server


@pytest.fixture
def outbox(db: MigratedDatabase) -> Outbox:
    return Outbox(cipher=SecretBox(db.settings.fernet_keys), allowlist=LOOPBACK)


@pytest.fixture
def boss(db: MigratedDatabase) -> Actor:
    return make_actor(db)


@pytest.fixture
def budgeted(db: MigratedDatabase, fake_providers: FakeProviderServer) -> int:
    """A config with a $1 daily budget and a 1,000,000-token monthly limit."""
    return add_config(
        db,
        fake_providers,
        display_name="Billing GPT",
        daily_budget_micro_usd=1_000_000,
        monthly_token_limit=1_000_000,
        created_at=datetime(2026, 11, 1, tzinfo=UTC),
    )


def spend(db: MigratedDatabase, config_id: int, day: date, micro_usd: int = 0, tokens: int = 0):  # type: ignore[no-untyped-def]
    """Set what the quota counters say `config_id` used on `day` (as settled calls would)."""
    with db.session() as session, session.begin():
        row = session.get(QuotaCounter, (config_id, day))
        if row is None:
            session.add(
                QuotaCounter(
                    config_id=config_id, day=day, used_micro_usd=micro_usd, used_tokens=tokens
                )
            )
        else:
            row.used_micro_usd, row.used_tokens = micro_usd, tokens


def rule(db: MigratedDatabase, boss: Actor, outbox: Outbox, **fields: Any) -> int:
    with db.session() as session, session.begin():
        return add_rule(session, boss, outbox, AlertInput(**fields)).id


def watcher(db: MigratedDatabase, outbox: Outbox, clock: list[datetime]) -> AlertWatcher:
    """A watcher whose clock reads clock[0] (tests move it)."""
    return AlertWatcher(make_session_factory(db.engine), outbox, clock=lambda: clock[0])


def bodies(server: AttackerServer) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in server.requests]


def audit(db: MigratedDatabase, prefix: str = "alert") -> list[AdminActionLog]:
    with db.session() as session:
        return list(
            session.scalars(
                select(AdminActionLog)
                .where(AdminActionLog.action.startswith(prefix))
                .order_by(AdminActionLog.id)
            )
        )
