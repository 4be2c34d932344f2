"""`python -m core providers ...` against the fake provider server, on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from core.cli import main
from core.config import PROJECT_ROOT
from core.models import AdminActionLog, ProviderConfig
from tests.fakes import FakeProviderServer
from tests.support.database import MigratedDatabase

KEY = "sk-proj-PLANTEDcli000111222333"


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, fake_providers: FakeProviderServer) -> str:
    fake_providers.api_keys["openai"] = {KEY}
    monkeypatch.setenv("OPENAI_KEY_FOR_TEST", KEY)
    return fake_providers.openai_base_url


def add_args(base_url: str, *extra: str) -> list[str]:
    return [
        "providers",
        "add",
        "--type",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--name",
        "Fake",
        "--api-key-env",
        "OPENAI_KEY_FOR_TEST",
        "--base-url",
        base_url,
        *extra,
    ]


def test_add_list_test_remove(
    db: MigratedDatabase, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = add_args(cli_env, "--tasks", "extraction,validation", "--daily-limit", "1000000")
    assert main(args, settings=db.settings) == 0
    out = capsys.readouterr().out
    assert (
        out
        == "Saved provider config 1: Fake (openai gpt-4o-mini, key …2333, credentials verified).\n"
    )

    assert main(["providers", "list"], settings=db.settings) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["ID", "TYPE", "MODEL", "NAME"]
    assert "extraction,validation" in table[1] and "1,000,000" in table[1] and "…2333" in table[1]

    with db.session() as session, session.begin():  # a name longer than the table shows
        session.get(ProviderConfig, 1).display_name = "Extraction for the billing team, EU"  # type: ignore[union-attr]
    assert main(["providers", "list"], settings=db.settings) == 0
    table = capsys.readouterr().out.splitlines()
    assert "Extraction for the billing…" in table[1] and len(table[1]) < 140
    assert main(["providers", "list", "--wide"], settings=db.settings) == 0
    assert "Extraction for the billing team, EU" in capsys.readouterr().out

    assert main(["providers", "list", "--json"], settings=db.settings) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert listed["key_last4"] == "2333" and listed["tasks"] == ["extraction", "validation"]
    assert KEY not in json.dumps(listed) and "api_key_encrypted" not in listed

    assert main(["providers", "test", "1"], settings=db.settings) == 0
    assert capsys.readouterr().out.startswith("Provider config 1 works: Key accepted")

    assert main(["providers", "remove", "1"], settings=db.settings) == 0
    out = capsys.readouterr().out
    assert "Removed provider config 1 (Extraction for the billing team, EU)." in out
    assert "no active provider serves extraction, validation any more" in out

    with db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []
        logs = session.scalars(select(AdminActionLog).order_by(AdminActionLog.id)).all()
    assert [(log.action, log.details.get("context")) for log in logs] == [
        ("provider.test", "create"),  # every credential test is audited, saved or not
        ("provider.create", None),
        ("provider.test", "saved"),
        ("provider.delete", None),
    ]
    assert all(log.actor_label.startswith("cli:") for log in logs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--daily-limit", "-5"], "error: not saved: --daily-limit: must not be negative"),
        (["--tasks", "poems"], "error: not saved: --tasks: unknown task poems"),
        (
            ["--daily-budget-usd", "ten"],
            "error: not saved: --daily-budget-usd: must be an amount in dollars, such as 25",
        ),
        (["--monthly-budget-usd", "-1"], "error: not saved: --monthly-budget-usd: must not be"),
        (
            ["--daily-budget-usd", "0.0000001"],
            "error: not saved: --daily-budget-usd: must be in whole micro-dollars",
        ),
        (
            ["--model", "acme-unpriced-1", "--daily-budget-usd", "5"],
            "error: not saved: --daily-budget-usd: cannot be set: genai-prices has no price "
            "for acme-unpriced-1",
        ),
    ],
)
def test_bad_input_is_one_line_and_saves_nothing(
    db: MigratedDatabase,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    assert main(add_args(cli_env, *args), settings=db.settings) == 1
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    with db.session() as session:
        assert session.scalars(select(ProviderConfig)).all() == []


def test_budgets_are_set_listed_edited_and_cleared(
    db: MigratedDatabase, cli_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = add_args(cli_env, "--daily-limit", "50000", "--daily-budget-usd", "$2.50")
    assert main([*args, "--monthly-budget-usd", "40"], settings=db.settings) == 0
    capsys.readouterr()
    assert main(["providers", "list"], settings=db.settings) == 0
    row = capsys.readouterr().out.splitlines()[1]
    assert "50,000, $2.50" in row and "$40.00" in row

    edit = ["providers", "edit", "1", "--daily-budget-usd", "none", "--monthly-budget-usd", "60"]
    assert main(edit, settings=db.settings) == 0
    capsys.readouterr()
    assert main(["providers", "list", "--json"], settings=db.settings) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["daily_budget_usd"], listed["monthly_budget_usd"]) == (None, "60")
    assert listed["daily_token_limit"] == 50000  # a flag not given keeps its value

    with db.session() as session:
        row = session.get(ProviderConfig, 1)
        assert row is not None and row.monthly_budget_micro_usd == 60_000_000
        edited = session.scalars(
            select(AdminActionLog).where(AdminActionLog.action == "provider.update")
        ).one()
    assert "60" in json.dumps(edited.details)  # the audit row says what changed


def test_a_missing_key_variable_is_explained(
    db: MigratedDatabase,
    cli_env: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_KEY_FOR_TEST")
    assert main(add_args(cli_env), settings=db.settings) == 1
    assert "environment variable OPENAI_KEY_FOR_TEST is empty or not set" in capsys.readouterr().err


def test_unknown_ids_are_one_line(db: MigratedDatabase, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["providers", "test", "42"], settings=db.settings) == 1
    assert capsys.readouterr().err == "error: No provider config 42 (was it deleted?)\n"


@pytest.mark.slow
def test_an_operator_adds_a_provider_from_the_shell(
    db: MigratedDatabase, fake_providers: FakeProviderServer
) -> None:
    """The issue's "done when": a tested, encrypted config; a 401 saves nothing, one line."""
    fake_providers.api_keys["openai"] = {KEY}
    env = {
        "PATH": os.environ["PATH"],
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_FERNET_KEYS": ",".join(db.settings.fernet_keys),
        "K": KEY,
        "AI_CONSOLE_BASE_URL_ALLOWLIST": "127.0.0.1",  # the fake server is on loopback
    }
    command = [
        sys.executable,
        "-m",
        "core",
        "providers",
        "add",
        "--type",
        "openai",
        "--model",
        "gpt-4o-mini",
        "--name",
        "Fake",
        "--api-key-env",
        "K",
        "--base-url",
        fake_providers.openai_base_url,
    ]
    ok = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "credentials verified" in ok.stdout and KEY not in ok.stdout + ok.stderr

    fake_providers.fail_next("openai", 401, times=2)
    refused = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1
    assert refused.stderr.startswith("error: Not saved: The key was refused")
    with db.session() as session:
        assert len(session.scalars(select(ProviderConfig)).all()) == 1
