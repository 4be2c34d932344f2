"""`python -m core seed-from-env`: the seed's production-rollout step, without duplicates."""

from __future__ import annotations

import asyncio

import pytest

from core.cli import main
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase
from tests.support.routing import KEYS, allow_planted_keys, make_router, usage_rows


@pytest.fixture
def legacy_env(monkeypatch: pytest.MonkeyPatch, fake_providers: FakeProviderServer) -> None:
    allow_planted_keys(fake_providers)
    for name in ("GEMINI_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEYS["gemini"])
    monkeypatch.setenv("GEMINI_MODEL_FAST", "models/gemini-2.5-flash")
    monkeypatch.setenv("OPENAI_API_KEY", KEYS["openai"])
    # The SDKs read their base URL from the environment, as in production without overrides.
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", fake_providers.gemini_base_url)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_providers.openai_base_url)


def test_seed_stores_encrypted_configs_that_route_like_the_legacy_fallback(
    db: MigratedDatabase, legacy_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed-from-env"], settings=db.settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "GEMINI_API_KEY: stored as provider config 1 (gemini-2.5-flash (from GEMINI_API_KEY), "
        "key …89ab, default).",
        "OPENAI_API_KEY: stored as provider config 2 (gpt-4o-mini (from OPENAI_API_KEY), "
        "key …6789).",
    ]
    router = make_router(db)
    plan = router.explain("cover_letter")
    assert [c.config_id for c in plan.candidates] == [1, 2] and not plan.legacy
    result = router.generate_sync("cover_letter", "Write a cover letter")
    asyncio.run(router.aclose())
    assert result.config_id == 1
    assert usage_rows(db)[0].source == "router"


def test_seed_refuses_duplicates(
    db: MigratedDatabase, legacy_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["seed-from-env"], settings=db.settings) == 0
    capsys.readouterr()
    assert main(["seed-from-env"], settings=db.settings) == 1
    captured = capsys.readouterr()
    assert "GEMINI_API_KEY: already stored as provider config 1 (skipped)." in captured.out
    assert captured.err.startswith("error: nothing to seed")


def test_seed_without_variables_explains(
    db: MigratedDatabase, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("GEMINI_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert main(["seed-from-env"], settings=db.settings) == 1
    assert "set GEMINI_API_KEY (with GEMINI_MODEL_FAST)" in capsys.readouterr().err
