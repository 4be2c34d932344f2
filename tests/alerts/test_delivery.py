"""Delivering alerts, on SQLite and PostgreSQL: Slack's shape, email through a real SMTP server
(aiosmtpd), retries with backoff against a failing target, each outcome in the audit log, and a
redirect never followed."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Iterator
from dataclasses import replace
from datetime import timedelta
from email import message_from_bytes
from email.message import Message as Email

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from sqlalchemy import select

from core.access import Actor
from core.alerts import MAX_ATTEMPTS, Outbox, backoff, claim_due, courier, deliver_due, send_test
from core.config import SmtpServer
from core.db import make_session_factory
from core.models import AlertDelivery, UsageLog
from tests.alerts.conftest import LOOPBACK, NOW, audit, bodies, rule, spend, watcher
from tests.fakes import FakeProviderServer
from tests.fakes.attacker_server import AttackerServer
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], Email]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # type: ignore[no-untyped-def]
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 OK"


class BoundController(Controller):
    """aiosmtpd on a socket bound before it starts: a free port without a race for it."""

    def __init__(self, handler: Inbox, **smtp: object) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port = self._sock.getsockname()[1]
        super().__init__(handler, hostname="127.0.0.1", port=port, **smtp)

    def _create_server(self) -> Awaitable[object]:  # type: ignore[override]
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    inbox = Inbox()
    controller = BoundController(inbox)
    controller.start()
    yield controller, inbox
    controller.stop()


def test_slack_gets_its_incoming_webhook_shape(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="slack", target=f"{listener.url}/services/T0/B0/secretXYZ")
    spend(db, budgeted, NOW.date(), micro_usd=800_000)
    watcher(db, outbox, [NOW]).run_once()
    (body,) = bodies(listener)
    assert list(body) == ["text"]
    assert body["text"].startswith("Billing GPT has used 80% of its daily budget: $0.80 of $1.00")
    assert listener.requests[0].header("Content-Type") == "application/json"


def test_an_email_alert_reaches_a_real_smtp_server(
    db: MigratedDatabase,
    boss: Actor,
    budgeted: int,
    smtp: tuple[Controller, Inbox],
    outbox: Outbox,
) -> None:
    controller, inbox = smtp
    mailer = Outbox(
        cipher=outbox.cipher,
        allowlist=LOOPBACK,
        smtp=SmtpServer(host="127.0.0.1", port=controller.port),
        sender="ai-console@example.com",
    )
    rule(db, boss, mailer, channel="email", target="ops@example.com", thresholds="50")
    spend(db, budgeted, NOW.date(), micro_usd=510_000)
    watcher(db, mailer, [NOW]).run_once()
    ((sender, to, mail),) = inbox.messages
    assert (sender, to) == ("ai-console@example.com", ["ops@example.com"])
    assert mail["Subject"] == "AI Provider Console: Billing GPT at 50% of its daily budget"
    assert "$0.51 of $1.00 today (UTC)" in mail.get_payload()
    assert [a.action for a in audit(db, "alert.")] == ["alert.sent"]


def test_the_smtp_password_signs_in_and_a_wrong_one_is_said_without_it(
    db: MigratedDatabase, boss: Actor, budgeted: int, outbox: Outbox
) -> None:
    def check(server, session, envelope, mechanism, auth_data) -> AuthResult:  # type: ignore[no-untyped-def]
        ok = (auth_data.login, auth_data.password) == (b"alerts@corp", b"PLANTED-pw")
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself

    inbox = Inbox()
    # Plain AUTH without TLS only because this server is on loopback in a test.
    controller = BoundController(inbox, authenticator=check, auth_require_tls=False)
    controller.start()
    try:
        server = SmtpServer("127.0.0.1", controller.port, username="alerts@corp")
        for password, delivered in (("PLANTED-pw", 1), ("PLANTED-wrong", 1)):
            mailer = Outbox(
                cipher=outbox.cipher,
                allowlist=LOOPBACK,
                smtp=replace(server, password=password),
                sender="ai-console@example.com",
            )
            if not inbox.messages:
                rule_id = rule(db, boss, mailer, channel="email", target="ops@example.com")
            with db.session() as session, session.begin():
                result = send_test(session, boss, mailer, rule_id)
            assert len(inbox.messages) == delivered
        assert not result.ok
        assert result.message.endswith(
            "127.0.0.1 refused the user name and password of AI_CONSOLE_SMTP_URL."
        )
        trail = json.dumps([a.details for a in audit(db, "alert")])
        assert "alert.tested" in [a.action for a in audit(db, "alert")] and "ops@example" in trail
        assert "PLANTED" not in result.message and "PLANTED" not in trail
    finally:
        controller.stop()


def test_an_email_rule_needs_smtp_and_a_permitted_smtp_host(
    db: MigratedDatabase, boss: Actor, outbox: Outbox
) -> None:
    from core.admin import ValidationFailed

    with pytest.raises(ValidationFailed, match="AI_CONSOLE_SMTP_URL"):
        rule(db, boss, outbox, channel="email", target="ops@example.com")
    closed = Outbox(cipher=outbox.cipher, smtp=SmtpServer("127.0.0.1", 25), sender="a@b.co")
    with pytest.raises(ValidationFailed, match=r"SMTP server host 127\.0\.0\.1 is a loopback"):
        rule(db, boss, closed, channel="email", target="ops@example.com")


def test_a_failing_target_is_retried_with_backoff_and_every_try_is_audited(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="webhook", target=listener.url, thresholds="80")
    spend(db, budgeted, NOW.date(), micro_usd=900_000)
    listener.answer(503)
    clock = [NOW]
    watch = watcher(db, outbox, clock)
    watch.run_once()
    assert len(listener.requests) == 1
    (failed,) = audit(db, "alert.delivery_failed")
    assert failed.details["error"] == "127.0.0.1 answered HTTP 503"
    assert failed.details["retry_at"] == (NOW + backoff(1)).isoformat()

    clock[0] = NOW + backoff(1) - timedelta(seconds=1)  # not due yet
    watch.run_once()
    assert len(listener.requests) == 1
    clock[0] = NOW + backoff(1)
    listener.answer(200)
    watch.run_once()
    assert len(listener.requests) == 2
    assert [a.action for a in audit(db, "alert.")] == ["alert.delivery_failed", "alert.sent"]
    with db.session() as session:
        (delivery,) = session.scalars(select(AlertDelivery))
        assert (delivery.status, delivery.attempts, delivery.last_error) == ("sent", 2, None)
    assert bodies(listener)[0] == bodies(listener)[1]  # the same alert, again


def test_after_the_last_attempt_the_alert_is_failed_and_audited(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="webhook", target=listener.url, thresholds="80")
    spend(db, budgeted, NOW.date(), micro_usd=900_000)
    listener.answer(500)
    clock = [NOW]
    watch = watcher(db, outbox, clock)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        watch.run_once()
        clock[0] += backoff(attempt)
    watch.run_once()
    clock[0] += timedelta(days=0, hours=1)
    watch.run_once()
    assert len(listener.requests) == MAX_ATTEMPTS
    actions = [a.action for a in audit(db, "alert.")]
    assert actions == ["alert.delivery_failed"] * (MAX_ATTEMPTS - 1) + ["alert.failed"]
    with db.session() as session:
        (delivery,) = session.scalars(select(AlertDelivery))
        assert (delivery.status, delivery.last_error) == ("failed", "127.0.0.1 answered HTTP 500")


def test_a_redirect_is_not_followed(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    with AttackerServer() as elsewhere:
        listener.answer(307, {"Location": f"{elsewhere.url}/steal"})
        rule(db, boss, outbox, channel="webhook", target=listener.url, thresholds="80")
        spend(db, budgeted, NOW.date(), micro_usd=900_000)
        watcher(db, outbox, [NOW]).run_once()
        assert elsewhere.requests == []
    (failed,) = audit(db, "alert.delivery_failed")
    assert "redirects are not followed" in failed.details["error"]


def test_an_error_rate_above_its_level_alerts_once_per_quarter_hour(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(
        db,
        boss,
        outbox,
        channel="webhook",
        target=listener.url,
        limit_kinds=[],
        error_rate_percent="20",
        error_min_calls="20",
    )

    def calls(n: int, status: str, minutes_ago: float) -> None:
        with db.session() as session, session.begin():
            for _ in range(n):
                session.add(
                    UsageLog(
                        provider_config_id=budgeted,
                        provider_type="openai",
                        model_name="m",
                        task_type="extraction",
                        status=status,
                        created_at=NOW - timedelta(minutes=minutes_ago),
                    )
                )

    calls(10, "error", minutes_ago=20)  # outside the 15 minutes
    calls(5, "error", 5)
    calls(3, "rejected", 5)  # refused by a limit: not an answer
    calls(14, "success", 5)
    clock = [NOW]
    watch = watcher(db, outbox, clock)
    watch.run_once()  # 5 of 19 answered calls: below the minimum of 20
    assert listener.requests == []
    calls(1, "timeout", 1)  # 6 of 20 (30%)
    watch.run_once()
    clock[0] = NOW + timedelta(minutes=5)
    watch.run_once()  # the same quarter hour: not again
    (body,) = bodies(listener)
    assert (body["kind"], body["calls"], body["failed"], body["threshold_percent"]) == (
        "error_rate",
        20,
        6,
        20,
    )
    assert body["period_start"] == "2026-12-07T10:00"
    assert "6 of 20 calls (30.0%) failed in the last 15 minutes" in body["text"]
    assert json.loads(listener.requests[0].body)["config"]["id"] == budgeted


def test_a_watcher_whose_claim_lapsed_cannot_overwrite_the_one_that_sent(
    db: MigratedDatabase, boss: Actor, outbox: Outbox, listener: AttackerServer, budgeted: int
) -> None:
    rule(db, boss, outbox, channel="webhook", target=listener.url, thresholds="80")
    spend(db, budgeted, NOW.date(), micro_usd=900_000)
    sessions = make_session_factory(db.engine)
    with db.session() as session, session.begin():
        assert claim_due(session, NOW) == 1
        (delivery_id,) = session.scalars(select(AlertDelivery.id))
    slow = courier._take(sessions, delivery_id, NOW)  # watcher A takes it, then hangs
    assert slow is not None
    later = NOW + courier.CLAIM_FOR + timedelta(seconds=1)
    # Watcher B finds A's claim lapsed and sends it.
    assert [o.status for o in deliver_due(sessions, outbox, lambda: later)] == ["sent"]
    # A's send finally fails: that is no longer A's to record, so the alert stays sent.
    listener.answer(500)
    assert courier._send(sessions, outbox, slow, lambda: later) is None
    with db.session() as session:
        delivery = session.get(AlertDelivery, delivery_id)
        assert delivery is not None and (delivery.status, delivery.last_error) == ("sent", None)
    assert [a.action for a in audit(db, "alert.")] == ["alert.sent"]


def test_a_slow_round_leaves_the_rest_for_the_next_instead_of_claiming_them_late(
    db: MigratedDatabase,
    boss: Actor,
    outbox: Outbox,
    listener: AttackerServer,
    budgeted: int,
    fake_providers: FakeProviderServer,
) -> None:
    other = add_config(db, fake_providers, daily_budget_micro_usd=1_000_000)
    rule(db, boss, outbox, channel="webhook", target=listener.url, thresholds="80")
    spend(db, budgeted, NOW.date(), micro_usd=900_000)
    spend(db, other, NOW.date(), micro_usd=900_000)
    sessions = make_session_factory(db.engine)
    with db.session() as session, session.begin():
        assert claim_due(session, NOW) == 2
    ticks = iter([NOW, NOW, NOW, NOW + courier.CLAIM_FOR])  # the first send took a while
    outcomes = deliver_due(sessions, outbox, lambda: next(ticks, NOW + courier.CLAIM_FOR))
    assert [o.status for o in outcomes] == ["sent"] and len(listener.requests) == 1
    with db.session() as session:
        waiting = session.scalars(select(AlertDelivery).where(AlertDelivery.status == "pending"))
        assert [(d.attempts, d.claimed_by) for d in waiting] == [(0, None)]
    later = NOW + courier.CLAIM_FOR
    assert [o.status for o in deliver_due(sessions, outbox, lambda: later)] == ["sent"]
