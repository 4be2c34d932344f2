"""Console sessions: who is signed in, restoring one from the sign-in cookie, signing out.

users.sessions_revoked_at ends every session and cookie that began earlier (logout, password
change, MFA reset, disabling the account). resumed_sign_ins records each cookie (user, issue
time) that has restored a session, so a cookie's first use is audited as a sign-in and the page
loads after it are not. The cookie stands in for the password only: an enrolled user still
types a TOTP code in every new browser session.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.accounts.rules import CONTROL_CHARACTERS, Outcome
from core.accounts.throttle import insert_new
from core.models import (
    ResumedSignIn,
    User,
    utcnow,
)

# How long the sign-in cookie spares the password (an enrolled user still types a code).
REMEMBER_SIGN_IN = timedelta(hours=12)


def resume_session(
    session: Session, username: str, issued_at: datetime, origin: Actor, now: datetime | None = None
) -> Outcome:
    """Sign-in cookie: it replaces the password only, never the TOTP code.

    `issued_at` identifies the cookie: its first use is audited as a sign-in (auth.login via
    cookie), later page loads with the same cookie are not, on whichever replica they land."""
    now = now or utcnow()
    name = username.strip().lower()
    user = (
        None
        if CONTROL_CHARACTERS.search(name)
        else session.scalars(select(User).where(User.username == name).with_for_update()).first()
    )
    if user is None or not user.is_active or revoked(user, issued_at):
        return Outcome(error="Sign in again.")
    if user.totp_secret_encrypted is not None:
        return Outcome(user_id=user.id, at=now, needs_code=True)
    if _first_resume(session, user, issued_at, now):
        signed_in(session, user, acting_as(origin, user), now, via="cookie")
    return Outcome(user_id=user.id, at=now)


def _first_resume(session: Session, user: User, issued_at: datetime, now: datetime) -> bool:
    """Claim the cookie (user, issue time) atomically; True for its first use only."""
    session.execute(
        delete(ResumedSignIn).where(
            ResumedSignIn.user_id == user.id, ResumedSignIn.issued_at < now - REMEMBER_SIGN_IN
        )
    )
    claimed = session.execute(
        insert_new(session, ResumedSignIn.__table__)
        .values(user_id=user.id, issued_at=issued_at, first_resumed_at=now)
        .on_conflict_do_nothing()
        .returning(ResumedSignIn.user_id)  # rowcount is not reliable here on psycopg
    )
    return claimed.first() is not None


def session_user(session: Session, user_id: int, signed_in_at: datetime) -> User | None:
    """The user of a console session; None once the account or that session is no longer valid."""
    user = active_user(session, user_id, lock=False)
    return None if user is None or revoked(user, signed_in_at) else user


def sign_out(session: Session, actor: Actor, now: datetime | None = None) -> None:
    """End every session and sign-in cookie of the actor's account, and audit it."""
    user = active_user(session, actor.user_id)
    if user is not None:
        user.sessions_revoked_at = now or utcnow()
    audit.record(session, actor, "auth.logout", target_type="user", target_id=actor.user_id)


def active_user(session: Session, user_id: int | None, lock: bool = True) -> User | None:
    """The active user `user_id`, locked FOR UPDATE (PostgreSQL) unless only read."""
    if user_id is None:
        return None
    user = session.get(User, user_id, with_for_update=lock or None)
    return user if user is not None and user.is_active else None


def acting_as(origin: Actor, user: User) -> Actor:
    return replace(origin, label=user.username, user_id=user.id)


def revoked(user: User, began_at: datetime) -> bool:
    return user.sessions_revoked_at is not None and began_at < user.sessions_revoked_at


def signed_in(session: Session, user: User, who: Actor, now: datetime, via: str) -> None:
    user.last_login_at = now
    audit.record(
        session, who, "auth.login", target_type="user", target_id=user.id, details={"via": via}
    )
