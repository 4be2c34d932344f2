"""Fixtures and helpers for the provider-config service tests (tests/test_admin.py and the
key-binding tests): the service on the test database, a super-admin with a fresh code, a form."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text

from core.access import Actor
from core.admin import ProviderAdmin, ProviderInput
from core.crypto import SecretBox
from core.db import make_session_factory
from core.models import AdminActionLog, User, utcnow
from tests.conftest import MigratedDatabase
from tests.fakes import FakeProviderServer

KEY = "sk-proj-PLANTEDadminKEY0123456789"
NEW_KEY = "sk-proj-PLANTEDrotated987654321"


@pytest.fixture
def admin(db: MigratedDatabase, fake_providers: FakeProviderServer) -> ProviderAdmin:
    fake_providers.api_keys["openai"] = {KEY, NEW_KEY}
    return ProviderAdmin(make_session_factory(db.engine), SecretBox(db.settings.fernet_keys))


def make_actor(db: MigratedDatabase, role: str = "super_admin", fresh: bool = True) -> Actor:
    with db.session() as session:
        user = User(username=f"{role}-{fresh}", password_hash="h", role=role)
        session.add(user)
        session.commit()
        verified = utcnow() - (timedelta(minutes=1) if fresh else timedelta(hours=1))
        return Actor(
            label=user.username, user_id=user.id, ip_address="203.0.113.9", mfa_verified_at=verified
        )


@pytest.fixture
def boss(db: MigratedDatabase) -> Actor:
    return make_actor(db)


def form(server: FakeProviderServer, **overrides: Any) -> ProviderInput:
    values: dict[str, Any] = {
        "provider_type": "openai",
        "model_name": "gpt-4o-mini",
        "display_name": "OpenAI Mini",
        "api_key": KEY,
        "base_url": server.openai_base_url,
        "tasks": ["extraction", "validation"],
        "daily_token_limit": 1_000_000,
    }
    return ProviderInput(**(values | overrides))


def raw_rows(db: MigratedDatabase, table: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]


def audit_rows(db: MigratedDatabase) -> list[AdminActionLog]:
    with db.session() as session:
        return list(session.scalars(select(AdminActionLog).order_by(AdminActionLog.id)))
