"""Managing alert rules, on SQLite and PostgreSQL, as an attacker would try it: targets obey the
egress allowlist, a webhook URL (a Slack URL is a credential) is encrypted and never shown,
audited or echoed back, roles and step-up are enforced in core, and refusals are audited."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from core.access import Actor, PermissionDenied, StepUpRequired
from core.admin import ValidationFailed
from core.alerts import (
    AlertInput,
    Outbox,
    list_rules,
    recent_deliveries,
    remove_rule,
    send_test,
)
from core.crypto import SecretBox, generate_key, rotate_all_secrets
from core.providers.egress import Allowlist
from tests.alerts.conftest import NOW, audit, bodies, rule, spend, watcher
from tests.fakes.attacker_server import AttackerServer
from tests.support.admin import make_actor
from tests.support.database import MigratedDatabase

SLACK_TOKEN = "T000/B000/PLANTEDslackSECRET42"


def dump(db: MigratedDatabase) -> str:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM alert_rules")).all()
        trail = conn.execute(text("SELECT details FROM admin_action_logs")).all()
    return repr(rows) + repr(trail)


def test_a_webhook_url_is_stored_encrypted_and_shown_only_as_a_hint(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer
) -> None:
    url = f"{listener.url}/services/{SLACK_TOKEN}"
    rule(db, boss, outbox, channel="slack", target=url)
    assert SLACK_TOKEN not in dump(db) and "PLANTED" not in dump(db)
    with db.session() as session:
        (view,) = list_rules(session, boss)
    assert view.target_hint == f"{listener.url}/…ET42"
    assert "PLANTED" not in repr(view)
    assert "PLANTED" not in repr(AlertInput(channel="slack", target=url))
    assert view.watches == (
        "Daily token limit, monthly token limit, daily budget, monthly budget at 80, 95, 100%"
    )


@pytest.mark.parametrize(
    ("target", "refusal"),
    [
        ("http://169.254.169.254/latest/meta-data", "is a cloud metadata address"),
        ("http://10.0.0.7/hook", "is a private address"),
        ("http://localhost:8080/hook", "is a loopback name"),
        ("ftp://example.com/hook", "must be an http:// or https:// URL"),
        ("", "enter a webhook URL"),
    ],
)
def test_webhooks_to_internal_hosts_are_refused_in_words_and_audited(
    db: MigratedDatabase, boss: Actor, target: str, refusal: str
) -> None:
    strict = Outbox(cipher=SecretBox(db.settings.fernet_keys), allowlist=Allowlist())
    with pytest.raises(ValidationFailed) as caught:
        rule(db, boss, strict, channel="webhook", target=target)
    assert refusal in caught.value.errors["target"]
    assert "webhook URL" in caught.value.errors["target"] or not target or "ftp" in target
    (refused,) = audit(db, "alert_rule.add_refused")
    assert refused.details["fields"] == ["target"]
    with db.session() as session:
        assert list_rules(session, boss) == []


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://hooks.example.com/{SLACK_TOKEN}",
        # repr() escapes these, so a refusal quoting the URL once slipped past the masking:
        f"htps://hooks.slack.com/services/{SLACK_TOKEN}\u200b",
        f"https://hooks.slack.com:abc/services/{SLACK_TOKEN}\xad",
        f"ftp://hooks.example.com/{SLACK_TOKEN}'\"",
        f"https://hooks.slack.com:99999/services/{SLACK_TOKEN}",
    ],
)
def test_a_refusal_does_not_echo_a_token_in_the_path(
    db: MigratedDatabase, boss: Actor, url: str
) -> None:
    strict = Outbox(cipher=SecretBox(db.settings.fernet_keys), allowlist=Allowlist())
    with pytest.raises(ValidationFailed) as caught:
        rule(db, boss, strict, channel="slack", target=url)
    assert "target" in caught.value.errors
    assert "PLANTED" not in str(caught.value) and "PLANTED" not in dump(db)
    assert len(audit(db, "alert_rule.add_refused")) == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"thresholds": "80,150"}, "thresholds", "'150' is not a percentage from 1 to 100"),
        ({"thresholds": "eighty"}, "thresholds", "is not a percentage"),
        ({"limit_kinds": ["usd_week"]}, "limit_kinds", "unknown limit 'usd_week'"),
        ({"limit_kinds": []}, "limit_kinds", "choose at least one limit to watch"),
        ({"error_rate_percent": "0"}, "error_rate_percent", "from 1 to 100"),
        ({"error_min_calls": "-3"}, "error_min_calls", "whole number"),
        ({"channel": "pager"}, "channel", "choose webhook, slack or email"),
        # A group or an encoded word would be rewritten into other recipients by the mailer.
        (
            {"channel": "email", "target": "x:y@example.com"},
            "target",
            "enter one email address like ops@example.com",
        ),
        (
            {"channel": "email", "target": "=?utf-8?q?ops?=@example.com"},
            "target",
            "enter one email address",
        ),
        ({"config_id": 999}, "config_id", "no provider config has id 999"),
    ],
)
def test_bad_fields_are_named_and_nothing_is_saved(
    db: MigratedDatabase,
    boss: Actor,
    outbox: Outbox,
    listener: AttackerServer,
    fields: dict[str, object],
    field: str,
    message: str,
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        rule(db, boss, outbox, **({"channel": "webhook", "target": listener.url} | fields))
    assert message in caught.value.errors[field]
    with db.session() as session:
        assert list_rules(session, boss) == []


def test_analysts_are_refused_in_core_and_the_refusal_is_audited(
    db: MigratedDatabase, outbox: Outbox, listener: AttackerServer
) -> None:
    analyst = make_actor(db, role="analyst")
    with pytest.raises(PermissionDenied):
        rule(db, analyst, outbox, channel="webhook", target=listener.url)
    with db.session() as session, pytest.raises(PermissionDenied):
        list_rules(session, analyst)
    assert len(audit(db, "access.denied")) == 2


def test_changes_need_a_fresh_code(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer
) -> None:
    stale = make_actor(db, fresh=False)
    with pytest.raises(StepUpRequired):
        rule(db, stale, outbox, channel="webhook", target=listener.url)
    rule_id = rule(db, boss, outbox, channel="webhook", target=listener.url)
    with db.session() as session, session.begin(), pytest.raises(StepUpRequired):
        remove_rule(session, stale, rule_id)
    with db.session() as session, session.begin():
        assert "Removed alert rule" in remove_rule(session, boss, rule_id)
    assert [a.action for a in audit(db, "alert_rule.")] == [
        "alert_rule.added",
        "alert_rule.removed",
    ]


def test_a_send_that_fails_unexpectedly_is_a_refusal_in_words_and_audited(
    db: MigratedDatabase,
    boss: Actor,
    outbox: Outbox,
    listener: AttackerServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rule_id = rule(db, boss, outbox, channel="webhook", target=f"{listener.url}/{SLACK_TOKEN}")

    async def broken(self: Outbox, url: str, payload: object) -> None:
        raise OverflowError(f"port out of range in {url}")  # what a client may say, URL and all

    monkeypatch.setattr(Outbox, "_post", broken)
    with db.session() as session, session.begin():
        result = send_test(session, boss, outbox, rule_id)
    assert not result.ok and result.message.endswith("could not send (OverflowError).")
    assert "PLANTED" not in result.message and "PLANTED" not in dump(db)
    assert [a.details["ok"] for a in audit(db, "alert.tested")] == [False]


def test_the_test_button_sends_and_audits_its_outcome(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer
) -> None:
    rule_id = rule(db, boss, outbox, channel="webhook", target=f"{listener.url}/hook")
    with db.session() as session, session.begin():
        ok = send_test(session, boss, outbox, rule_id)
    assert ok.ok and ok.message == f"Test alert sent to {listener.url}/…hook."
    assert bodies(listener)[0]["event"] == "test"
    listener.answer(404)
    with db.session() as session, session.begin():
        failed = send_test(session, boss, outbox, rule_id)
    assert not failed.ok and "127.0.0.1 answered HTTP 404" in failed.message
    assert [a.details["ok"] for a in audit(db, "alert.tested")] == [True, False]


def test_removing_a_rule_drops_its_pending_alerts_and_deliveries_list_recent_ones(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule_id = rule(db, boss, outbox, channel="webhook", target=listener.url, thresholds="80")
    spend(db, budgeted, NOW.date(), micro_usd=900_000)
    listener.answer(500)
    watcher(db, outbox, [NOW]).run_once()
    with db.session() as session:
        (pending,) = recent_deliveries(session, boss)
    assert (pending.status, pending.attempts, pending.last_error) == (
        "pending",
        1,
        "127.0.0.1 answered HTTP 500",
    )
    assert pending.subject == "AI Provider Console: Billing GPT at 80% of its daily budget"
    with db.session() as session, session.begin():
        remove_rule(session, boss, rule_id)
    with db.session() as session:
        assert recent_deliveries(session, boss) == []


def test_keys_rotate_re_encrypts_alert_targets(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer
) -> None:
    rule(db, boss, outbox, channel="webhook", target=listener.url)
    new_key = generate_key()
    both = SecretBox([new_key, *db.settings.fernet_keys])
    with db.session() as session, session.begin():
        report = rotate_all_secrets(session, both)
    assert report.alert_targets == 1
    only_new = Outbox(cipher=SecretBox([new_key]), allowlist=outbox.allowlist)
    with db.session() as session, session.begin():
        (view,) = list_rules(session, boss)
        assert send_test(session, boss, only_new, view.id).ok
