"""The alert-rule service: the one way the Alerts page and `python -m core alerts` read and
change rules. Super-admins only (checked in the database on each call); adding and removing a
rule also need a fresh second factor (step-up). Every change and every refusal is audited; the
target (a webhook URL may carry a token) is encrypted before it reaches the database and only
its hint comes back out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor, require_role, require_step_up
from core.admin.validation import AdminError, ValidationFailed
from core.alerts.checks import PRODUCT
from core.alerts.outbox import DeliveryError, Message, Outbox
from core.alerts.targets import KIND_NAMES, AlertInput, TargetCheck, clean
from core.crypto import DecryptionError
from core.models import AlertDelivery, AlertRule, ProviderConfig, UserRole, utcnow

ADMIN = UserRole.SUPER_ADMIN
CHANNEL_NAMES = {"webhook": "Webhook (JSON)", "slack": "Slack", "email": "Email"}


class RuleNotFound(AdminError):
    """No alert rule with that id (removed meanwhile?)."""


@dataclass(frozen=True)
class RuleView:
    id: int
    channel: str
    target_hint: str
    config_id: int | None
    config_name: str  # "every config" when config_id is None
    limit_kinds: tuple[str, ...]
    thresholds: tuple[int, ...]
    error_rate_percent: int | None
    error_min_calls: int
    is_active: bool
    created_at: datetime

    @property
    def watches(self) -> str:
        """E.g. "Daily budget, monthly budget at 80, 95, 100% · error rate above 10%"."""
        parts = []
        if self.limit_kinds:
            names = ", ".join(KIND_NAMES[k] for k in self.limit_kinds)
            parts.append(f"{names} at {', '.join(map(str, self.thresholds))}%")
        if self.error_rate_percent is not None:
            parts.append(
                f"error rate above {self.error_rate_percent}% "
                f"(≥ {self.error_min_calls} calls in 15 min)"
            )
        text = " · ".join(parts)
        return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class DeliveryView:
    id: int
    rule_id: int
    config_id: int
    kind: str
    period: str
    threshold: int
    status: str
    attempts: int
    subject: str
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    next_attempt_at: datetime


@dataclass(frozen=True)
class TestResult:
    ok: bool
    message: str


def list_rules(session: Session, actor: Actor) -> list[RuleView]:
    require_role(session, actor, ADMIN)
    names = _names(session)
    rows = session.scalars(select(AlertRule).order_by(AlertRule.id))
    return [_view(row, names) for row in rows]


def config_names(session: Session, actor: Actor) -> dict[int, str]:
    """Each provider config's name by id, for choosing the one a rule is about."""
    require_role(session, actor, ADMIN)
    return _names(session)


def _names(session: Session) -> dict[int, str]:
    """Config names by id, in the order the Providers page lists them."""
    rows = session.execute(
        select(ProviderConfig.id, ProviderConfig.display_name).order_by(
            ProviderConfig.priority, ProviderConfig.id
        )
    )
    return dict(rows.all())


def recent_deliveries(session: Session, actor: Actor, limit: int = 50) -> list[DeliveryView]:
    """The newest alerts, sent, waiting or failed."""
    require_role(session, actor, ADMIN)
    rows = session.scalars(
        select(AlertDelivery)
        .order_by(AlertDelivery.created_at.desc(), AlertDelivery.id.desc())
        .limit(limit)
    )
    return [
        DeliveryView(
            id=d.id,
            rule_id=d.rule_id,
            config_id=d.config_id,
            kind=d.kind,
            period=d.period,
            threshold=d.threshold,
            status=d.status,
            attempts=d.attempts,
            subject=str(d.body.get("subject", "")),
            last_error=d.last_error,
            created_at=d.created_at,
            sent_at=d.sent_at,
            next_attempt_at=d.next_attempt_at,
        )
        for d in rows
    ]


def check_rule(session: Session, actor: Actor, outbox: Outbox, data: AlertInput) -> None:
    """ValidationFailed naming each field to fix, before a code is asked for or anything saved
    (a form shows each message beside its field); audited like add_rule's refusals, which
    checks the same again."""
    require_role(session, actor, ADMIN)
    try:
        clean(data, TargetCheck(outbox.allowlist, outbox.resolve, outbox.smtp_host))
    except ValidationFailed as exc:
        _refused(session, actor, "alert_rule.add_refused", None, exc)
        raise


def add_rule(session: Session, actor: Actor, outbox: Outbox, data: AlertInput) -> RuleView:
    """Save a rule; ValidationFailed (audited) names each field to fix."""
    require_role(session, actor, ADMIN)
    require_step_up(actor)
    try:
        rule = clean(data, TargetCheck(outbox.allowlist, outbox.resolve, outbox.smtp_host))
        if rule.config_id is not None and session.get(ProviderConfig, rule.config_id) is None:
            raise ValidationFailed({"config_id": f"no provider config has id {rule.config_id}"})
    except ValidationFailed as exc:
        _refused(session, actor, "alert_rule.add_refused", None, exc)
        raise
    row = AlertRule(
        channel=rule.channel,
        target_encrypted=outbox.cipher.encrypt(rule.target),
        target_hint=rule.target_hint,
        config_id=rule.config_id,
        limit_kinds=rule.limit_kinds,
        thresholds=rule.thresholds,
        error_rate_percent=rule.error_rate_percent,
        error_min_calls=rule.error_min_calls,
        created_by_id=actor.user_id,
    )
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor,
        "alert_rule.added",
        target_type="alert_rule",
        target_id=row.id,
        details=_describe(row),
    )
    return _view(row, _names(session))


def remove_rule(session: Session, actor: Actor, rule_id: int) -> str:
    """Delete a rule and its pending alerts; what was removed, for the person who asked."""
    require_role(session, actor, ADMIN)
    require_step_up(actor)
    row = session.get(AlertRule, rule_id)
    if row is None:
        raise RuleNotFound(f"there is no alert rule {rule_id}")
    details = _describe(row)
    session.delete(row)
    audit.record(
        session,
        actor,
        "alert_rule.removed",
        target_type="alert_rule",
        target_id=rule_id,
        details=details,
    )
    return f"Removed alert rule {rule_id} ({row.target_hint})."


def send_test(session: Session, actor: Actor, outbox: Outbox, rule_id: int) -> TestResult:
    """Send a test alert to the rule's target now (not counted as an alert); audited with its
    outcome as `alert.tested`."""
    require_role(session, actor, ADMIN)
    row = session.get(AlertRule, rule_id)
    if row is None:
        raise RuleNotFound(f"there is no alert rule {rule_id}")
    subject = f"{PRODUCT}: test alert"
    text = (
        f"This is a test of alert rule {row.id}, sent by {actor.label} from the {PRODUCT}. "
        "Real alerts look like this and carry the config, the limit, the period, the "
        "threshold and what was used."
    )
    body = {
        "source": PRODUCT,
        "event": "test",
        "rule_id": row.id,
        "subject": subject,
        "text": text,
        "sent_at": utcnow().isoformat(),
    }
    try:
        outbox.send(
            row.channel, outbox.cipher.decrypt(row.target_encrypted), Message(subject, text, body)
        )
        result = TestResult(True, f"Test alert sent to {row.target_hint}.")
    except DeliveryError as exc:
        result = TestResult(False, f"Not delivered to {row.target_hint}: {exc}.")
    except DecryptionError:
        result = TestResult(
            False, "The stored target cannot be decrypted with AI_CONSOLE_FERNET_KEYS."
        )
    audit.record(
        session,
        actor,
        "alert.tested",
        target_type="alert_rule",
        target_id=row.id,
        details={"channel": row.channel, "target": row.target_hint, "ok": result.ok}
        | ({} if result.ok else {"error": result.message}),
    )
    return result


def _view(row: AlertRule, names: dict[int, str]) -> RuleView:
    return RuleView(
        id=row.id,
        channel=row.channel,
        target_hint=row.target_hint,
        config_id=row.config_id,
        config_name="every config"
        if row.config_id is None
        else names.get(row.config_id, f"config {row.config_id}"),
        limit_kinds=tuple(k for k in row.limit_kinds.split(",") if k),
        thresholds=tuple(int(t) for t in row.thresholds.split(",") if t),
        error_rate_percent=row.error_rate_percent,
        error_min_calls=row.error_min_calls,
        is_active=row.is_active,
        created_at=row.created_at,
    )


def _describe(row: AlertRule) -> dict[str, object]:
    return {
        "channel": row.channel,
        "target": row.target_hint,
        "config_id": row.config_id,
        "limit_kinds": row.limit_kinds,
        "thresholds": row.thresholds,
        "error_rate_percent": row.error_rate_percent,
        "error_min_calls": row.error_min_calls,
    }


def _refused(
    session: Session, actor: Actor, action: str, rule_id: int | None, exc: ValidationFailed
) -> None:
    """Audit a refused change in a transaction of its own (the caller's rolls back)."""
    with Session(session.get_bind()) as own, own.begin():
        audit.record(
            own,
            actor,
            action,
            target_type="alert_rule",
            target_id=rule_id,
            details={"fields": sorted(exc.errors), "message": str(exc)[:500]},
        )
