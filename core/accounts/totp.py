"""TOTP: secrets, the authenticator app's QR code, and codes that cannot be replayed.

users.totp_secret_encrypted holds the secret, Fernet-encrypted (core.crypto), written only once
a code from it has been confirmed. users.totp_last_step is the newest 30-second step accepted; a
code from that step or an earlier one is a replay and is refused.
"""

from __future__ import annotations

import hmac
import io
from datetime import datetime

import pyotp
import segno
from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.accounts.rules import CONTROL_CHARACTERS, NO_CONTROL_CHARACTERS, Outcome
from core.accounts.sessions import active_user
from core.crypto import SecretBox
from core.models import (
    User,
    utcnow,
)

TOTP_ISSUER = "AI Provider Console"


TOTP_VALID_WINDOW = 1  # also accept the code of the step before and after (clock drift)


def new_totp_secret() -> str:
    """A fresh random TOTP secret (base32, 160 bits) for an enrolment."""
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str) -> str:
    """The otpauth:// URI an authenticator app reads from the QR code."""
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)


def qr_code_png(uri: str) -> bytes:
    """A PNG QR code of `uri`."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="png", scale=6, border=2)
    return buffer.getvalue()


def code_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30-second step whose code `code` is, within TOTP_VALID_WINDOW of `now`; else None."""
    code = code.strip().replace(" ", "")
    if len(code) != 6 or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(now)
    for step in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def accept_code(session: Session, user: User, box: SecretBox, code: str, now: datetime) -> str:
    """'ok', 'replay' or 'wrong'. An accepted step is claimed atomically, on every replica."""
    assert user.totp_secret_encrypted is not None
    step = code_step(box.decrypt(user.totp_secret_encrypted), code, now)
    if step is None:
        return "wrong"
    claimed = session.execute(
        update(User)
        .where(User.id == user.id)
        .where(or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
    )
    return "ok" if claimed.rowcount == 1 else "replay"  # type: ignore[attr-defined]


def confirm_enrolment(
    session: Session,
    actor: Actor,
    box: SecretBox,
    secret: str,
    code: str,
    now: datetime | None = None,
) -> Outcome:
    """Save `secret` (encrypted) as the actor's TOTP secret once `code` proves the app has it.

    A wrong code is audited (auth.mfa_enrolment_failed): commit whatever the outcome."""
    now = now or utcnow()
    user = active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again to set up your authenticator app.")
    if user.totp_secret_encrypted is not None:
        return Outcome(error="An authenticator app is already set up for this account.")
    garbled = CONTROL_CHARACTERS.search(code.strip()) is not None
    step = None if garbled else code_step(secret, code, now)
    if step is None:
        audit.record(
            session,
            actor,
            "auth.mfa_enrolment_failed",
            target_type="user",
            target_id=user.id,
            details={"reason": "control characters" if garbled else "wrong code"},
        )
        if garbled:
            return Outcome(error=f"The code {NO_CONTROL_CHARACTERS}")
        return Outcome(
            error="That code does not match. Check that your phone's clock is right and enter "
            "the code the app shows now."
        )
    user.totp_secret_encrypted = box.encrypt(secret)
    user.totp_last_step = step
    audit.record(session, actor, "auth.mfa_enrolled", target_type="user", target_id=user.id)
    return Outcome(user_id=user.id, at=now, verified_at=now)
