"""Sending claimed alerts, with retries and backoff, each outcome in the audit log.

A watcher takes a due delivery by an UPDATE that only one can win (status pending, due, not
claimed or its claim lapsed), with a random id for this take, sends it outside any transaction,
then records the outcome with its audit row, only if its take still holds the claim:
`alert.sent`, or `alert.delivery_failed` with when it is tried again, or, after MAX_ATTEMPTS,
`alert.failed`. Times are read when each step happens, and a round stops taking deliveries
once it is half a claim old, so slow targets cannot make a claim lapse while it is being sent.
A watcher that dies mid-send leaves a claim that lapses after CLAIM_FOR, and another sends it
then: an alert may arrive twice, never not at all.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core import audit
from core.access import Actor
from core.alerts.outbox import DeliveryError, Message, Outbox
from core.crypto import DecryptionError
from core.db import session_scope
from core.models import AlertDelivery, AlertRule, DeliveryStatus

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
FIRST_RETRY = timedelta(seconds=30)  # then doubling: 30 s, 1, 2, 4, 8 min
CLAIM_FOR = timedelta(minutes=2)  # longer than a send can take (timeouts of 10 s)
BATCH = 20
WATCHER = Actor(label="alerts", is_operator=True)


@dataclass(frozen=True)
class Outcome:
    delivery_id: int
    status: str  # sent, pending (to be retried) or failed
    error: str | None = None


def backoff(attempt: int) -> timedelta:
    """How long after failed attempt number `attempt` (1, 2, ...) the next one is due."""
    return FIRST_RETRY * 2 ** (attempt - 1)


def deliver_due(
    sessions: sessionmaker[Session], outbox: Outbox, clock: Callable[[], datetime]
) -> list[Outcome]:
    """Send the deliveries due now that no other watcher holds; what became of each."""
    now = clock()
    with session_scope(sessions) as session:
        due = session.scalars(
            select(AlertDelivery.id)
            .where(
                AlertDelivery.status == DeliveryStatus.PENDING.value,
                AlertDelivery.next_attempt_at <= now,
                or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until <= now),
            )
            .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
            .limit(BATCH)
        ).all()
    outcomes = []
    for delivery_id in due:
        if clock() - now > CLAIM_FOR / 2:
            break  # the rest wait for the next round, rather than be claimed too late
        taken = _take(sessions, delivery_id, clock())
        if taken is not None:
            outcome = _send(sessions, outbox, taken, clock)
            if outcome is not None:
                outcomes.append(outcome)
    return outcomes


@dataclass(frozen=True)
class _Taken:
    delivery: AlertDelivery
    channel: str
    target_hint: str
    target_token: str
    claim: str


def _take(sessions: sessionmaker[Session], delivery_id: int, now: datetime) -> _Taken | None:
    claim = uuid.uuid4().hex
    with session_scope(sessions) as session:
        won = session.execute(
            update(AlertDelivery)
            .where(
                AlertDelivery.id == delivery_id,
                AlertDelivery.status == DeliveryStatus.PENDING.value,
                or_(AlertDelivery.claimed_until.is_(None), AlertDelivery.claimed_until <= now),
            )
            .values(
                claimed_until=now + CLAIM_FOR,
                claimed_by=claim,
                attempts=AlertDelivery.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if won != 1:
            return None  # another watcher took it
        delivery = session.get(AlertDelivery, delivery_id)
        rule = session.get(AlertRule, delivery.rule_id) if delivery is not None else None
        if delivery is None or rule is None:
            return None  # the rule was removed meanwhile (its deliveries with it)
        return _Taken(delivery, rule.channel, rule.target_hint, rule.target_encrypted, claim)


def _send(
    sessions: sessionmaker[Session],
    outbox: Outbox,
    taken: _Taken,
    clock: Callable[[], datetime],
) -> Outcome | None:
    """Send a taken delivery and record what happened; None when the claim was no longer
    this take's (the rule removed meanwhile, or the claim lapsed and another took it)."""
    delivery = taken.delivery
    body = delivery.body
    message = Message(str(body.get("subject", "")), str(body.get("text", "")), body)
    error: str | None = None
    try:
        outbox.send(taken.channel, outbox.cipher.decrypt(taken.target_token), message)
    except DeliveryError as exc:
        error = str(exc)
    except DecryptionError:
        error = "the stored target cannot be decrypted with AI_CONSOLE_FERNET_KEYS"
    except Exception as exc:  # a bug must not leave the claim to lapse silently
        log.exception("alerts: sending delivery %s failed unexpectedly", delivery.id)
        error = f"unexpected {type(exc).__name__}"
    attempt, now = delivery.attempts, clock()
    details = {
        "delivery_id": delivery.id,
        "rule_id": delivery.rule_id,
        "channel": taken.channel,
        "target": taken.target_hint,
        "config_id": delivery.config_id,
        "kind": delivery.kind,
        "period": delivery.period,
        "threshold_percent": delivery.threshold,
        "attempt": attempt,
    }
    if error is None:
        status, action, values = DeliveryStatus.SENT, "alert.sent", {"sent_at": now}
    elif attempt >= MAX_ATTEMPTS:
        status, action, values = DeliveryStatus.FAILED, "alert.failed", {}
        details["error"] = error
    else:
        retry_at = now + backoff(attempt)
        status, action, values = (
            DeliveryStatus.PENDING,
            "alert.delivery_failed",
            {"next_attempt_at": retry_at},
        )
        details |= {"error": error, "retry_at": retry_at.isoformat()}
    with session_scope(sessions) as session:
        recorded = session.execute(
            update(AlertDelivery)
            .where(
                AlertDelivery.id == delivery.id,
                AlertDelivery.status == DeliveryStatus.PENDING.value,
                AlertDelivery.claimed_by == taken.claim,
            )
            .values(
                status=status.value, claimed_until=None, claimed_by=None, last_error=error, **values
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if recorded != 1:
            log.warning("alerts: delivery %s was no longer this watcher's to record", delivery.id)
            return None
        audit.record(
            session,
            WATCHER,
            action,
            target_type="alert_delivery",
            target_id=delivery.id,
            details=details,
        )
    if error is not None:
        log.warning("alerts: delivery %s attempt %s failed: %s", delivery.id, attempt, error)
    return Outcome(delivery.id, status.value, error)
