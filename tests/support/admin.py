"""Helpers for the provider-config service tests (tests/admin/): a super-admin with a fresh code,
a form, the rows and the audit trail."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text

from core.access import Actor
from core.admin import ProviderInput
from core.models import AdminActionLog, User, utcnow
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase

KEY = "sk-proj-PLANTEDadminKEY0123456789"
NEW_KEY = "sk-proj-PLANTEDrotated987654321"


def make_actor(db: MigratedDatabase, role: str = "super_admin", fresh: bool = True) -> Actor:
    with db.session() as session:
        user = User(username=f"{role}-{fresh}", password_hash="h", role=role)
        session.add(user)
        session.commit()
        verified = utcnow() - (timedelta(minutes=1) if fresh else timedelta(hours=1))
        return Actor(
            label=user.username, user_id=user.id, ip_address="203.0.113.9", mfa_verified_at=verified
        )


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
