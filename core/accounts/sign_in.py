"""Signing in: the password, then (for enrolled users) a TOTP code; step-up codes for
sensitive changes; password changes.

Why not streamlit-authenticator's login widget. Its `login()` checks passwords against an
in-memory credentials dict, counts failures in that dict (per process, so no lockout across
sessions or replicas, and nothing after a restart), cannot tell us which username failed, signs a
locked user in when the password is right, and restores a session from its cookie without any
second factor. So the checks live here, in the database, and the console draws its own forms.
What fits is kept: the console's sign-in cookie is streamlit-authenticator's (its
CookieController signs a JWT with AI_CONSOLE_COOKIE_KEY, see ui/cookie.py), and password hashes
are the bcrypt strings its `Hasher` writes and checks. The cookie stands in for the password
only: an enrolled user still types a TOTP code in every new browser session.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import audit
from core.access import Actor
from core.accounts.rules import (
    CONTROL_CHARACTERS,
    NO_CONTROL_CHARACTERS,
    REPLAYED_CODE,
    WRONG_CODE,
    WRONG_CREDENTIALS,
    AuthError,
    Outcome,
    check_new_password,
    check_text,
    decoy_hash,
    hash_password,
    verify_password,
)
from core.accounts.sessions import acting_as, active_user, signed_in
from core.accounts.throttle import (
    clear,
    code_key,
    find_block,
    password_keys,
    refuse,
    throttled_message,
    whole_seconds,
)
from core.accounts.totp import accept_code
from core.crypto import SecretBox
from core.models import (
    User,
    utcnow,
)


def check_password(
    session: Session, username: str, password: str, origin: Actor, now: datetime | None = None
) -> Outcome:
    """First factor. Signs in a user without TOTP; for one with TOTP, says a code must follow.

    Unknown and existing usernames get the same answers after the same work: the throttles are
    read first (a throttled attempt runs no bcrypt), then one bcrypt check (against a decoy hash
    for an unknown name), then one failure counted."""
    now = now or utcnow()
    name = username.strip().lower()
    keys = password_keys(name, origin)
    user = (
        session.scalars(select(User).where(User.username == name).with_for_update()).first()
        if name and not CONTROL_CHARACTERS.search(name)
        else None
    )
    who = origin if user is None else acting_as(origin, user)
    target = {} if user is None else {"target_type": "user", "target_id": user.id}
    blocked = find_block(session, keys, now)
    if blocked is not None:
        scope, wait = blocked
        details = {"reason": scope.value, "retry_after_seconds": whole_seconds(wait)}
        audit.record(session, who, "auth.login_throttled", **target, details=details)
        return Outcome(error=throttled_message(wait))
    for text, what in ((name, "The username"), (password, "The password")):
        if CONTROL_CHARACTERS.search(text):
            details = {"reason": "control characters"}
            audit.record(session, who, "auth.login_failed", **target, details=details)
            return Outcome(error=f"{what} {NO_CONTROL_CHARACTERS}")
    if user is None:
        verify_password(password, decoy_hash())
        return refuse(
            session, keys, who, now, "auth.login_failed", WRONG_CREDENTIALS, "unknown user"
        )
    if not verify_password(password, user.password_hash):
        return refuse(
            session, keys, who, now, "auth.login_failed", WRONG_CREDENTIALS, "password", target
        )
    if not user.is_active:
        audit.record(session, who, "auth.login_refused", **target, details={"reason": "disabled"})
        return Outcome(error="This account is disabled. Ask a super-admin to enable it.")
    clear(session, keys[:1])  # the right password from this address: its pair starts afresh
    if user.totp_secret_encrypted is not None:
        return Outcome(user_id=user.id, at=now, needs_code=True)
    signed_in(session, user, who, now, via="password")
    return Outcome(user_id=user.id, at=now)


def check_sign_in_code(
    session: Session,
    user_id: int,
    code: str,
    origin: Actor,
    box: SecretBox,
    now: datetime | None = None,
) -> Outcome:
    """Second factor at sign-in, after `check_password` (or a cookie) said a code must follow."""
    now = now or utcnow()
    user = active_user(session, user_id)
    if user is None or user.totp_secret_encrypted is None:
        return Outcome(error="Sign in again.")
    who = acting_as(origin, user)
    refused = _check_code(session, user, who, code, box, now, "auth.login")
    if refused is not None:
        return refused
    signed_in(session, user, who, now, via="password and code")
    return Outcome(user_id=user.id, at=now, verified_at=now)


def check_step_up_code(
    session: Session, actor: Actor, code: str, box: SecretBox, now: datetime | None = None
) -> Outcome:
    """A fresh TOTP code for a sensitive action (core.access.require_step_up then passes)."""
    now = now or utcnow()
    user = active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again.")
    if user.totp_secret_encrypted is None:
        return Outcome(error="Set up an authenticator app on the Account page first.")
    refused = _check_code(session, user, actor, code, box, now, "auth.step_up")
    if refused is not None:
        return refused
    audit.record(session, actor, "auth.step_up", target_type="user", target_id=user.id)
    return Outcome(user_id=user.id, at=now, verified_at=now)


def _check_code(
    session: Session, user: User, who: Actor, code: str, box: SecretBox, now: datetime, kind: str
) -> Outcome | None:
    """None when `code` is accepted (its throttle cleared); else the audited refusal.

    `kind` prefixes the audit actions: auth.login_failed / auth.login_throttled at sign-in,
    auth.step_up_failed / auth.step_up_throttled for step-up."""
    keys = (code_key(user.username),)
    target = {"target_type": "user", "target_id": user.id}
    blocked = find_block(session, keys, now)
    if blocked is not None:
        details = {"reason": "code", "retry_after_seconds": whole_seconds(blocked[1])}
        audit.record(session, who, f"{kind}_throttled", **target, details=details)
        return Outcome(error=throttled_message(blocked[1], "wrong codes"))
    if CONTROL_CHARACTERS.search(code.strip()):
        details = {"reason": "control characters"}
        audit.record(session, who, f"{kind}_failed", **target, details=details)
        return Outcome(error=f"The code {NO_CONTROL_CHARACTERS}")
    verdict = accept_code(session, user, box, code, now)
    if verdict == "replay":
        # Not counted: a replayed code is a right one, seen before (not a guess); audited.
        details = {"reason": "replayed code"}
        audit.record(session, who, f"{kind}_failed", **target, details=details)
        return Outcome(error=REPLAYED_CODE)
    if verdict == "wrong":
        action = f"{kind}_failed"
        return refuse(session, keys, who, now, action, WRONG_CODE, "code", target, "wrong codes")
    clear(session, keys)
    return None


def change_password(
    session: Session, actor: Actor, current: str, new: str, now: datetime | None = None
) -> Outcome:
    """Replace the actor's password after checking the current one; other sessions end.

    A wrong current password counts like a wrong sign-in for this account and address."""
    now = now or utcnow()
    user = active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again.")
    keys = password_keys(user.username, actor)[:1]
    target = {"target_type": "user", "target_id": user.id}
    blocked = find_block(session, keys, now)
    if blocked is not None:
        details = {"reason": blocked[0].value, "retry_after_seconds": whole_seconds(blocked[1])}
        audit.record(session, actor, "auth.password_change_throttled", **target, details=details)
        return Outcome(error=throttled_message(blocked[1], "wrong passwords"))
    try:
        check_text(current, "The current password")
    except AuthError as exc:
        return Outcome(error=str(exc))
    if not verify_password(current, user.password_hash):
        wrong = "The current password is not right."
        action = "auth.password_change_failed"
        what = "wrong passwords"
        return refuse(session, keys, actor, now, action, wrong, "password", target, what)
    try:
        check_new_password(new, user.username, user.display_name, user.email)
    except AuthError as exc:
        return Outcome(error=str(exc))
    clear(session, keys)
    user.password_hash = hash_password(new)
    user.sessions_revoked_at = now
    audit.record(session, actor, "auth.password_changed", target_type="user", target_id=user.id)
    return Outcome(user_id=user.id, at=now)
