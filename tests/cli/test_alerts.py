"""`python -m core alerts ...` on both databases: add, list, test, check, remove against a local
webhook listener; errors in one line named by the flag; every change audited as the operator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import time_machine
from sqlalchemy import select

from core.cli import main
from core.config import PROJECT_ROOT
from core.models import AdminActionLog, QuotaCounter
from tests.fakes import FakeProviderServer
from tests.fakes.attacker_server import AttackerServer
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config

TOKEN = "PLANTEDhookTOKEN9z"


@pytest.fixture
def listener() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server


def run(db: MigratedDatabase, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["alerts", *args], settings=db.settings)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@time_machine.travel(datetime(2026, 12, 7, 10, 0, tzinfo=UTC), tick=True)
def test_add_list_test_check_remove(
    db: MigratedDatabase,
    listener: AttackerServer,
    fake_providers: FakeProviderServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = add_config(db, fake_providers, display_name="Billing", daily_token_limit=1000)
    monkeypatch.setenv("ALERT_HOOK_FOR_TEST", f"{listener.url}/hook/{TOKEN}")
    args = ["--webhook-env", "ALERT_HOOK_FOR_TEST", "--config", str(config), "--threshold", "50,90"]
    code, out = run(db, capsys, "add", *args)
    assert code == 0, out
    assert out.splitlines() == [
        f"Added alert rule 1: webhook to {listener.url}/…EN9z (Billing)",
        "  watches Daily token limit, monthly token limit, daily budget, monthly budget at 50, 90%",
        "  try it: python -m core alerts test 1",
    ]
    code, out = run(db, capsys, "list", "--json")
    assert json.loads(out)[0]["target"] == f"{listener.url}/…EN9z" and TOKEN not in out

    assert run(db, capsys, "test", "1") == (0, f"Test alert sent to {listener.url}/…EN9z.\n")
    assert json.loads(listener.requests[0].body)["event"] == "test"
    assert listener.requests[0].path == f"/hook/{TOKEN}"

    with db.session() as session, session.begin():
        session.add(QuotaCounter(config_id=config, day=datetime.now(UTC).date(), used_tokens=600))
    code, out = run(db, capsys, "check")
    assert (code, out) == (0, "1 new alert(s) due; 1 of 1 delivery attempt(s) succeeded.\n")
    assert json.loads(listener.requests[1].body)["threshold_percent"] == 50
    assert run(db, capsys, "check")[1].startswith("0 new alert(s) due; 0 of 0")

    listener.answer(500)
    code, out = run(db, capsys, "test", "1")
    assert (code, out) == (
        1,
        f"error: Not delivered to {listener.url}/…EN9z: 127.0.0.1 answered HTTP 500.\n",
    )

    assert run(db, capsys, "remove", "1") == (0, f"Removed alert rule 1 ({listener.url}/…EN9z).\n")
    assert run(db, capsys, "list")[1].startswith("No alert rules yet.")
    with db.session() as session:
        trail = session.scalars(select(AdminActionLog).order_by(AdminActionLog.id)).all()
    assert [(a.action, a.actor_label[:4]) for a in trail] == [
        ("alert_rule.added", "cli:"),
        ("alert.tested", "cli:"),
        ("alert.sent", "aler"),
        ("alert.tested", "cli:"),
        ("alert_rule.removed", "cli:"),
    ]
    assert TOKEN not in repr([a.details for a in trail])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "error: give --webhook URL (with --slack for Slack) or --email ADDRESS"),
        (["--email", "ops@example.com", "--slack"], "error: --slack goes with --webhook URL"),
        (["--webhook-env", "UNSET_HOOK_VAR"], "error: --webhook-env: the environment variable"),
        (["--webhook", "URL", "--threshold", "80,101"], "--threshold: '101' is not a percentage"),
        (["--webhook", "URL", "--limits", "usd_weekly"], "--limits: unknown limit 'usd_weekly'"),
        (["--webhook", "URL", "--limits", "none"], "--limits: choose at least one limit"),
        (["--webhook", "URL", "--error-rate", "x"], "--error-rate: must be a whole number"),
        (["--webhook", "URL", "--config", "77"], "--config: no provider config has id 77"),
        (["--webhook", "http://10.1.2.3/x"], "--webhook/--email: webhook URL host 10.1.2.3 is a"),
        (["--email", "ops@example.com"], "--webhook/--email: email alerts need AI_CONSOLE_SMTP"),
    ],
)
def test_bad_input_is_one_line_named_by_its_flag(
    db: MigratedDatabase,
    listener: AttackerServer,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    args = [listener.url if a == "URL" else a for a in args]
    code, out = run(db, capsys, "add", *args)
    assert code == 1
    assert out.count("\n") == 1 and message in out
    assert run(db, capsys, "list")[1].startswith("No alert rules yet.")


@pytest.mark.real_clock
def test_watch_stops_cleanly_on_sigterm(db: MigratedDatabase, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = os.environ | {
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_FERNET_KEYS": ",".join(db.settings.fernet_keys),
        "AI_CONSOLE_DATA_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "core", "alerts", "watch"],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().startswith("Watching for alerts every 30 s")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
