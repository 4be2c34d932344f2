"""The first run: a one-time setup token, printed by `python -m core migrate`, creates the
first super-admin. setup_tokens holds its SHA-256, its expiry and its own lock: migrate replaces
the token and with it the lock, so whoever can run it is never kept out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.accounts.rules import (
    AuthError,
    Outcome,
    check_account_fields,
    check_text,
    hash_password,
)
from core.accounts.sessions import acting_as, signed_in
from core.models import (
    SetupToken,
    User,
    UserRole,
    utcnow,
)

# The first-run setup token keeps its own lock: `python -m core migrate` replaces the token and
# with it the lock, so whoever can run it is never kept out.
MAX_FAILED_ATTEMPTS = 5


LOCKOUT_PERIOD = timedelta(minutes=15)


SETUP_TOKEN_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class IssuedSetupToken:
    token: str = field(repr=False)
    expires_at: datetime


def needs_setup(session: Session) -> bool:
    """True while no user exists: the console then offers only the setup page."""
    return session.scalar(select(User.id).limit(1)) is None


def issue_setup_token(
    session: Session, now: datetime | None = None, actor: Actor | None = None
) -> IssuedSetupToken | None:
    """A new one-time setup token while no user exists (replacing any earlier one), else None.

    Its issuance is audited (setup.token_issued, with the expiry, never the token) as `actor`,
    by default the operator running `python -m core migrate`."""
    now = now or utcnow()
    session.execute(delete(SetupToken))
    if not needs_setup(session):
        return None
    token = secrets.token_urlsafe(18)
    expires_at = now + SETUP_TOKEN_LIFETIME
    session.add(SetupToken(token_sha256=_sha256(token), expires_at=expires_at))
    audit.record(
        session,
        actor or Actor.cli(),
        "setup.token_issued",
        details={"expires_at": expires_at.isoformat()},
    )
    return IssuedSetupToken(token=token, expires_at=expires_at)


def complete_setup(
    session: Session,
    token: str,
    username: str,
    password: str,
    origin: Actor,
    display_name: str = "",
    now: datetime | None = None,
) -> Outcome:
    """Create the first super-admin, once, with the token `python -m core migrate` printed."""
    now = now or utcnow()
    fields = (
        (token.strip(), "The setup token", "token"),
        (username.strip(), "The username", "username"),
        (display_name.strip(), "The display name", "display_name"),
        (password, "The password", "password"),
    )
    for text, what, name in fields:
        try:
            check_text(text, what)
        except AuthError as exc:  # before the database, which may refuse such text outright
            return Outcome(error=str(exc), field=name)
    row = session.scalars(select(SetupToken).with_for_update()).first()
    if not needs_setup(session):
        return Outcome(error=_ALREADY_SET_UP)
    refused = _token_refusal(session, row, token, origin, now)
    if refused is not None:
        return Outcome(error=refused, field="token")
    assert row is not None
    try:
        name, shown, _ = check_account_fields(username, password, display_name)
    except AuthError as exc:
        return Outcome(error=str(exc), field=exc.field)
    claimed = session.execute(delete(SetupToken).where(SetupToken.id == row.id))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return Outcome(error=_ALREADY_SET_UP)
    user = User(
        username=name,
        display_name=shown,
        password_hash=hash_password(password),
        role=UserRole.SUPER_ADMIN.value,
    )
    session.add(user)
    session.flush()
    who = acting_as(origin, user)
    audit.record(
        session,
        who,
        "setup.completed",
        target_type="user",
        target_id=user.id,
        details={"role": user.role},
    )
    signed_in(session, user, who, now, via="setup")
    return Outcome(user_id=user.id, at=now)


def _token_refusal(
    session: Session, row: SetupToken | None, token: str, origin: Actor, now: datetime
) -> str | None:
    """Why `token` cannot set up the console now (a wrong one is counted), or None."""
    if row is None:
        return "No setup token is waiting. " + _RUN_MIGRATE
    if row.locked_until is not None and row.locked_until > now:
        return (
            f"Too many wrong setup tokens. Try again after {row.locked_until:%H:%M} UTC, "
            "or run 'python -m core migrate' to print a new token."
        )
    if row.expires_at <= now:
        return "This setup token has expired. " + _RUN_MIGRATE
    if hmac.compare_digest(row.token_sha256, _sha256(token.strip())):
        return None
    if row.locked_until is not None:
        row.locked_until, row.failed_attempts = None, 0
    row.failed_attempts += 1
    audit.record(session, origin, "setup.failed", details={"failed_attempts": row.failed_attempts})
    if row.failed_attempts >= MAX_FAILED_ATTEMPTS:
        row.locked_until = now + LOCKOUT_PERIOD
        audit.record(
            session, origin, "setup.locked", details={"until": row.locked_until.isoformat()}
        )
    return (
        "That is not the setup token. Copy it from the output of "
        "'python -m core migrate' (or 'make run'); only the newest one works."
    )


_ALREADY_SET_UP = "The console is already set up: sign in instead."


_RUN_MIGRATE = "Run 'python -m core migrate' (or 'make run') and enter the token it prints."


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
