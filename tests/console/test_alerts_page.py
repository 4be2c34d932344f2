"""The Alerts page in AppTest, on SQLite and PostgreSQL: super-admins add a rule with a fresh
code, test it and remove it; the webhook URL (a Slack URL is a credential) never shows in the
page or its session state; bad input says what to fix and saves nothing; analysts are refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import ui
from core.models import AdminActionLog, AlertDelivery, AlertRule, utcnow
from tests.fakes.attacker_server import AttackerServer
from tests.support.pages import (
    Console,
    dialogs,
    error_under,
    next_code,
    state_dump,
    texts,
)

TOKEN = "T0/B0/PLANTEDslackTOKENxyz1"


@pytest.fixture
def listener() -> Iterator[AttackerServer]:
    with AttackerServer() as server:
        yield server


def button(at: AppTest, label: str):  # type: ignore[no-untyped-def]
    return next(b for b in at.button if b.label == label)


def shown(markdown: str) -> str:
    """What a reader sees of text passed through ui.plain (escapes, invisible joiners)."""
    return markdown.replace("\\", "").replace("\u2060", "")


def rules(console: Console) -> list[AlertRule]:
    with console.db.session() as session:
        return list(session.scalars(select(AlertRule)))


def fill(at: AppTest, url: str, thresholds: str = "80,95,100") -> AppTest:
    at.radio(key="alert_channel").set_value("slack").run()
    next(t for t in at.text_input if t.label == "Slack incoming-webhook URL").input(url)
    next(t for t in at.text_input if t.label.startswith("At (%")).input(thresholds)
    return button(at, "Add alert rule").click().run()


def test_an_admin_adds_tests_and_removes_a_slack_rule(
    console: Console, listener: AttackerServer
) -> None:
    admin, _ = console.add_user("root")
    at = console.page("pages/alerts.py", admin).run()
    assert not at.exception
    assert "No alert rules yet" in texts(at)
    at = fill(at, f"{listener.url}/services/{TOKEN}", "50, 90")
    assert not at.exception
    (rule,) = rules(console)
    assert (rule.channel, rule.thresholds) == ("slack", "50,90")
    hint = f"{listener.url}/…xyz1"
    assert at.toast[0].value.startswith("Added an alert rule:") and hint in at.toast[0].value
    assert "PLANTED" not in state_dump(at) and "PLANTED" not in texts(at)

    at = console.page("pages/alerts.py", admin).run()
    assert f"to {hint}" in shown(texts(at)) and "at 50, 90%" in texts(at)
    button(at, "Send test").click().run()
    assert shown(at.success[0].value) == f"Test alert sent to {hint}."
    assert "This is a test of alert rule" in json.loads(listener.requests[0].body)["text"]
    assert listener.requests[0].path == f"/services/{TOKEN}"

    button(at, "Remove").click().run()
    assert not at.exception and rules(console) == []
    assert at.toast[0].value == f"Removed alert rule {rule.id} ({hint})."


def test_bad_input_says_what_to_fix_and_saves_nothing(
    console: Console, listener: AttackerServer
) -> None:
    admin, _ = console.add_user("root")
    at = fill(console.page("pages/alerts.py", admin).run(), f"{listener.url}/x", "80,150")
    assert error_under(at, "At (% of the limit)") == (
        "At (% of the limit): '150' is not a percentage from 1 to 100; use e.g. 80,95,100 "
        "(100 is the limit itself)."
    )
    assert rules(console) == []
    at = fill(console.page("pages/alerts.py", admin).run(), "http://10.0.0.9/hook")
    below = error_under(at, "Slack incoming-webhook URL") or ""
    assert below.startswith("Webhook URL: webhook URL host 10.0.0.9 is a private address")
    assert rules(console) == []
    with console.db.session() as session:  # refusals are audited, as the CLI's are
        refused = session.scalars(
            select(AdminActionLog).where(AdminActionLog.action == "alert_rule.add_refused")
        ).all()
    assert [r.details["fields"] for r in refused] == [["thresholds"], ["target"]]


def test_after_an_error_the_form_keeps_what_was_typed_and_the_url_sealed(
    console: Console, listener: AttackerServer
) -> None:
    admin, _ = console.add_user("root")
    at = fill(console.page("pages/alerts.py", admin).run(), f"{listener.url}/{TOKEN}", "80,150")
    assert rules(console) == [] and "PLANTED" not in state_dump(at)
    assert next(t for t in at.text_input if t.label.startswith("At (%")).value == "80,150"
    assert "The address you entered is kept" in texts(at)
    # Only the thresholds need fixing: the URL is not asked for again.
    next(t for t in at.text_input if t.label.startswith("At (%")).input("80,100")
    button(at, "Add alert rule").click().run()
    (rule,) = rules(console)
    assert rule.thresholds == "80,100" and not at.error
    assert next(t for t in at.text_input if t.label.startswith("At (%")).value == "80,95,100"


def test_a_stale_code_asks_first_and_keeps_the_url_sealed(
    console: Console, listener: AttackerServer
) -> None:
    admin, secret = console.add_user("root")
    stale = {ui.MFA_VERIFIED_AT: utcnow() - timedelta(minutes=11)}
    at = fill(console.page("pages/alerts.py", admin, **stale).run(), f"{listener.url}/{TOKEN}")
    assert len(dialogs(at)) == 1 and rules(console) == []
    assert "PLANTED" not in state_dump(at)
    at.text_input(key="step_up_code").input(next_code(secret))
    button(at, "Confirm and continue").click().run()
    assert not at.exception and len(rules(console)) == 1


def test_recent_alerts_are_listed(console: Console, listener: AttackerServer) -> None:
    admin, _ = console.add_user("root")
    fill(console.page("pages/alerts.py", admin).run(), listener.url)
    (rule,) = rules(console)
    with console.db.session() as session, session.begin():
        session.add(
            AlertDelivery(
                rule_id=rule.id,
                config_id=1,
                kind="usd_day",
                period="2026-12-07",
                threshold=80,
                body={"subject": "AI Provider Console: Billing at 80% of its daily budget"},
                attempts=2,
                status="pending",
                last_error="hooks.example.com answered HTTP 503",
                next_attempt_at=utcnow(),
            )
        )
    at = console.page("pages/alerts.py", admin).run()
    table = at.dataframe[0].value
    assert list(table["Alert"]) == ["AI Provider Console: Billing at 80% of its daily budget"]
    assert list(table["Last error"]) == ["hooks.example.com answered HTTP 503"]


def test_an_analyst_is_refused_even_with_the_url(console: Console) -> None:
    analyst, _ = console.add_user("ann", role="analyst", mfa=False)
    at = console.page("pages/alerts.py", analyst).run()
    assert at.error[0].value == "Not allowed: this needs the super-admin role."
    assert not at.button
