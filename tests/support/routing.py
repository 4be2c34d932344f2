"""Helpers for routing tests: stored configs and routers pointed at the fake provider server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import select

from core.crypto import SecretBox
from core.models import ProviderConfig, UsageLog
from core.routing import Router
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase

T = TypeVar("T")

KEYS = {
    "openai": "sk-proj-PLANTEDroute0123456789",
    "claude": "sk-ant-api03-PLANTEDroute0123",
    "gemini": "AIzaSyPLANTEDroute0123456789ab",
}
FAKE_NAME = {"openai": "openai", "claude": "anthropic", "gemini": "gemini"}
MODELS = {
    "openai": "gpt-4o-mini",
    "claude": "claude-3-5-haiku-latest",
    "gemini": "gemini-2.5-flash",
}


def allow_planted_keys(server: FakeProviderServer) -> None:
    for provider_type, key in KEYS.items():
        server.api_keys[FAKE_NAME[provider_type]] = {key}


def add_config(
    db: MigratedDatabase, server: FakeProviderServer, provider_type: str = "openai", **fields: Any
) -> int:
    """Store a config whose key is valid on the fake server; returns its id."""
    key = fields.pop("api_key", KEYS[provider_type])
    values: dict[str, Any] = {
        "provider_type": provider_type,
        "model_name": MODELS[provider_type],
        "display_name": f"{provider_type} config",
        "base_url": getattr(server, f"{FAKE_NAME[provider_type]}_base_url"),
        "api_key_encrypted": SecretBox(db.settings.fernet_keys).encrypt(key),
        "key_last4": key[-4:],
    }
    tasks = fields.pop("tasks", ())
    for task in tasks:
        values[f"default_for_{task}"] = True
    with db.session() as session:
        row = ProviderConfig(**(values | fields))
        session.add(row)
        session.commit()
        return row.id


def make_router(db: MigratedDatabase, **options: Any) -> Router:
    defaults: dict[str, Any] = {
        "settings": db.settings,
        "engine": db.engine,
        "max_retries": 0,
        "timeout_s": 5,
        "config_refresh_s": 0,
        "environ": {},
    }
    return Router(**(defaults | options))


def run(router: Router, scenario: Callable[[Router], Awaitable[T]]) -> T:
    """Run a scenario on one event loop, then close the router (flushing usage rows)."""

    async def main() -> T:
        try:
            return await scenario(router)
        finally:
            await router.aclose()

    return asyncio.run(main())


def close(router: Router) -> None:
    asyncio.run(router.aclose())


def usage_rows(db: MigratedDatabase) -> list[UsageLog]:
    with db.session() as session:
        return list(session.scalars(select(UsageLog).order_by(UsageLog.id)))
