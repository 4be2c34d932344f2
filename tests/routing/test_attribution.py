"""Attribution: the service and tags a call names are on its usage rows and in the rollups, on
SQLite and PostgreSQL, through generate, stream and generate_with_image; the router's and
AI_CONSOLE_SERVICE's service is the default. (The queries that split and filter by them:
tests/usage/test_queries.py.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.config import ConfigError, Settings
from core.models import usage_daily, usage_hourly
from core.routing import Router
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config, make_router, run, usage_rows

PROMPT = "Extract the job title from: Senior Data Engineer, Berlin."
PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


async def three_calls(router: Router) -> None:
    await router.generate("extraction", PROMPT, service="billing-api", tags={"feature": "cv"})
    async with router.stream(
        "extraction", PROMPT, tags={"team": "growth", "feature": "cover_letter"}
    ) as stream:
        async for _ in stream:
            pass
    await router.generate_with_image(
        "extraction", "Is this clear?", PNG, service="photo-check", tags={"plan": "pro"}
    )


def test_each_call_stores_its_service_and_tags_and_the_router_default(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    run(make_router(db, service="cv-builder"), three_calls)
    rows = [(r.service, r.tags, r.status) for r in usage_rows(db)]
    assert rows == [
        ("billing-api", "feature=cv", "success"),
        # No service named: the router's. Tags are stored sorted by name.
        ("cv-builder", "feature=cover_letter,team=growth", "success"),
        ("photo-check", "plan=pro", "success"),
    ]
    with db.engine.connect() as conn:
        for table in (usage_hourly, usage_daily):
            rolled = conn.execute(select(table.c.service, table.c.tags, table.c.calls)).all()
            assert sorted(rolled) == sorted((s, t, 1) for s, t, _ in rows)


def test_a_router_from_the_environment_names_its_service(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    env = {
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_FERNET_KEYS": db.settings.fernet_keys[0],
        "AI_CONSOLE_BASE_URL_ALLOWLIST": "127.0.0.1",
    }
    settings = Settings.from_env(env | {"AI_CONSOLE_SERVICE": "jobs-ingest"})
    router = make_router(db, settings=settings)
    run(router, lambda r: r.generate("extraction", PROMPT))
    assert [(r.service, r.tags) for r in usage_rows(db)] == [("jobs-ingest", "")]
    with pytest.raises(ConfigError, match="AI_CONSOLE_SERVICE must be 1 to 64 letters"):
        Settings.from_env(env | {"AI_CONSOLE_SERVICE": "a b"})
    with pytest.raises(ValueError, match="service must be 1 to 64 letters"):
        make_router(db, service="no spaces please")


def test_refused_and_failed_attempts_are_attributed_too(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    """Every attempt is for the caller that made it: a refusal by a limit and a provider error
    carry the service and tags as a success does."""
    add_config(db, fake, "openai", tasks=["extraction"], daily_token_limit=1)
    add_config(db, fake, "claude", tasks=["extraction"], priority=200)
    fake.fail_next("anthropic", 500)

    async def scenario(router: Router) -> None:
        with pytest.raises(Exception):  # noqa: B017 (which error is test_router's business)
            await router.generate("extraction", PROMPT, service="billing-api", tags={"f": "x"})

    run(make_router(db), scenario)
    rows = [(r.status, r.service, r.tags) for r in usage_rows(db)]
    assert rows == [("rejected", "billing-api", "f=x"), ("error", "billing-api", "f=x")]
