"""Signing in to the console: passwords, lockout, TOTP codes, sessions and the first-run setup.

Why not streamlit-authenticator's login widget. Its `login()` checks passwords against an
in-memory credentials dict, counts failures in that dict (per process, so no lockout across
sessions or replicas, and nothing after a restart), cannot tell us which username failed, signs a
locked user in when the password is right, and restores a session from its cookie without any
second factor. So the checks live here, in the database, and the console draws its own forms.
What fits is kept: the console's sign-in cookie is streamlit-authenticator's (its CookieController
signs a JWT with AI_CONSOLE_COOKIE_KEY, see ui.py), and password hashes are the bcrypt strings its
`Hasher` writes and checks. The cookie stands in for the password only: an enrolled user still
types a TOTP code in every new browser session.

What is stored where:
- users.password_hash: bcrypt. users.failed_logins / locked_until: MAX_FAILED_ATTEMPTS wrong
  passwords or codes lock the account for LOCKOUT_PERIOD, on every replica at once.
- users.totp_secret_encrypted: the TOTP secret, Fernet-encrypted (core.crypto), written only once
  a code from it has been confirmed. users.totp_last_step: the newest 30-second step accepted; a
  code from that step or an earlier one is a replay and is refused.
- users.sessions_revoked_at: sessions and cookies that began earlier are dead (logout, password
  change, MFA reset, disabling the account).
- setup_tokens: a SHA-256 of the one-time first-run token, its expiry and its own lockout.
Nothing here ever writes a password, code, token or secret to the audit log or an error message.

Checks that count failures return an `Outcome` instead of raising, because the failure they
record must be committed: callers commit whatever the outcome.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache

import bcrypt
import pyotp
import segno
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from core import audit
from core.audit import Actor
from core.config import ConfigError, Settings
from core.crypto import SecretBox, load_cipher
from core.models import SetupToken, User, UserRole, utcnow

MAX_FAILED_ATTEMPTS = 5
LOCKOUT_PERIOD = timedelta(minutes=15)
SETUP_TOKEN_LIFETIME = timedelta(hours=24)
# How long the sign-in cookie spares the password (an enrolled user still types a code).
REMEMBER_SIGN_IN = timedelta(hours=12)
TOTP_ISSUER = "AI Provider Console"
TOTP_VALID_WINDOW = 1  # also accept the code of the step before and after (clock drift)
BCRYPT_ROUNDS = 12
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_BYTES = 72  # bcrypt reads no further
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,149}")

WRONG_CREDENTIALS = "Wrong username or password."
WRONG_CODE = "That code is not right. Enter the code your authenticator app shows now."
REPLAYED_CODE = "That code was already used. Wait for the next code in your authenticator app."


class AuthError(Exception):
    """Input the user must correct (a weak password, a taken username); the message says how."""


@dataclass(frozen=True)
class Outcome:
    """What a check decided. Refusals are recorded in the caller's session: commit either way."""

    user_id: int | None = None
    at: datetime | None = None  # when it was decided: the session's sign-in time
    needs_code: bool = False  # the password (or cookie) passed; a TOTP code must follow
    verified_at: datetime | None = None  # a TOTP code was accepted (feeds Actor.mfa_verified_at)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


# --- passwords and usernames -----------------------------------------------------------------


def hash_password(password: str, rounds: int | None = None) -> str:
    """A bcrypt hash of `password` (the format streamlit-authenticator's Hasher also reads)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds or BCRYPT_ROUNDS)).decode()


def verify_password(password: str, password_hash: str) -> bool:
    """True when `password` matches; False for anything else, including malformed input."""
    try:
        return bcrypt.checkpw(password.encode(), password_hash.encode())
    except ValueError:  # over 72 bytes, or not a bcrypt hash
        return False


@cache
def _decoy_hash() -> str:
    # Checked against when the username is unknown, so a wrong name costs as long as a wrong
    # password and response times do not reveal which accounts exist.
    return hash_password(secrets.token_urlsafe(16))


def normalize_username(raw: str) -> str:
    """The stored form of a username (trimmed, lower case), or AuthError saying what to fix."""
    name = raw.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise AuthError(
            "Usernames are 1–150 characters: letters, digits and . _ @ -, starting with a "
            "letter or digit."
        )
    return name


def check_new_password(password: str, username: str) -> None:
    """Refuse a password too short, too long for bcrypt, or equal to the username."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise AuthError(f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes long.")
    if password.strip().lower() == username.strip().lower():
        raise AuthError("The password must not be the username.")


# --- TOTP ------------------------------------------------------------------------------------


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


def _accept_code(session: Session, user: User, box: SecretBox, code: str, now: datetime) -> str:
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
    """Save `secret` (encrypted) as the actor's TOTP secret once `code` proves the app has it."""
    now = now or utcnow()
    user = _active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again to set up your authenticator app.")
    if user.totp_secret_encrypted is not None:
        return Outcome(error="An authenticator app is already set up for this account.")
    step = code_step(secret, code, now)
    if step is None:
        return Outcome(
            error="That code does not match. Check that your phone's clock is right and enter "
            "the code the app shows now."
        )
    user.totp_secret_encrypted = box.encrypt(secret)
    user.totp_last_step = step
    audit.record(session, actor, "auth.mfa_enrolled", target_type="user", target_id=user.id)
    return Outcome(user_id=user.id, at=now, verified_at=now)


# --- signing in ------------------------------------------------------------------------------


def check_password(
    session: Session, username: str, password: str, origin: Actor, now: datetime | None = None
) -> Outcome:
    """First factor. Signs in a user without TOTP; for one with TOTP, says a code must follow."""
    now = now or utcnow()
    name = username.strip().lower()
    user = (
        session.scalars(select(User).where(User.username == name).with_for_update()).first()
        if name
        else None
    )
    if user is None:
        verify_password(password, _decoy_hash())
        audit.record(session, origin, "auth.login_failed", details={"reason": "unknown user"})
        return Outcome(error=WRONG_CREDENTIALS)
    who = _as(origin, user)
    if _locked(user, now):
        audit.record(
            session,
            who,
            "auth.login_refused",
            target_type="user",
            target_id=user.id,
            details={"reason": "locked"},
        )
        return Outcome(error=_locked_message(user))
    if not verify_password(password, user.password_hash):
        return _refuse(session, user, who, now, "auth.login_failed", WRONG_CREDENTIALS)
    if not user.is_active:
        audit.record(
            session,
            who,
            "auth.login_refused",
            target_type="user",
            target_id=user.id,
            details={"reason": "disabled"},
        )
        return Outcome(error="This account is disabled. Ask a super-admin to enable it.")
    if user.totp_secret_encrypted is not None:
        # Failures are not reset yet: otherwise re-entering the password would reset the
        # counter for guessing codes.
        return Outcome(user_id=user.id, at=now, needs_code=True)
    _signed_in(session, user, who, now, via="password")
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
    user = _active_user(session, user_id)
    if user is None or user.totp_secret_encrypted is None:
        return Outcome(error="Sign in again.")
    who = _as(origin, user)
    if _locked(user, now):
        return Outcome(error=_locked_message(user))
    verdict = _accept_code(session, user, box, code, now)
    if verdict == "replay":
        audit.record(
            session,
            who,
            "auth.login_failed",
            target_type="user",
            target_id=user.id,
            details={"reason": "replayed code"},
        )
        return Outcome(error=REPLAYED_CODE)
    if verdict == "wrong":
        return _refuse(session, user, who, now, "auth.login_failed", WRONG_CODE, "code")
    _signed_in(session, user, who, now, via="password and code")
    return Outcome(user_id=user.id, at=now, verified_at=now)


def check_step_up_code(
    session: Session, actor: Actor, code: str, box: SecretBox, now: datetime | None = None
) -> Outcome:
    """A fresh TOTP code for a sensitive action (core.access.require_step_up then passes)."""
    now = now or utcnow()
    user = _active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again.")
    if user.totp_secret_encrypted is None:
        return Outcome(error="Set up an authenticator app on the Account page first.")
    if _locked(user, now):
        return Outcome(error=_locked_message(user))
    verdict = _accept_code(session, user, box, code, now)
    if verdict == "replay":
        return Outcome(error=REPLAYED_CODE)
    if verdict == "wrong":
        return _refuse(session, user, actor, now, "auth.step_up_failed", WRONG_CODE, "code")
    user.failed_logins = 0
    audit.record(session, actor, "auth.step_up", target_type="user", target_id=user.id)
    return Outcome(user_id=user.id, at=now, verified_at=now)


def resume_session(
    session: Session, username: str, issued_at: datetime, origin: Actor, now: datetime | None = None
) -> Outcome:
    """Sign-in cookie: it replaces the password only, never the TOTP code."""
    now = now or utcnow()
    user = session.scalars(
        select(User).where(User.username == username.strip().lower()).with_for_update()
    ).first()
    if user is None or not user.is_active or _locked(user, now) or _revoked(user, issued_at):
        return Outcome(error="Sign in again.")
    if user.totp_secret_encrypted is not None:
        return Outcome(user_id=user.id, at=now, needs_code=True)
    _signed_in(session, user, _as(origin, user), now, via="cookie")
    return Outcome(user_id=user.id, at=now)


def session_user(session: Session, user_id: int, signed_in_at: datetime) -> User | None:
    """The user of a console session; None once the account or that session is no longer valid."""
    user = _active_user(session, user_id, lock=False)
    return None if user is None or _revoked(user, signed_in_at) else user


def sign_out(session: Session, actor: Actor, now: datetime | None = None) -> None:
    """End every session and sign-in cookie of the actor's account, and audit it."""
    user = _active_user(session, actor.user_id)
    if user is not None:
        user.sessions_revoked_at = now or utcnow()
    audit.record(session, actor, "auth.logout", target_type="user", target_id=actor.user_id)


def change_password(
    session: Session, actor: Actor, current: str, new: str, now: datetime | None = None
) -> Outcome:
    """Replace the actor's password after checking the current one; other sessions end."""
    now = now or utcnow()
    user = _active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again.")
    if _locked(user, now):
        return Outcome(error=_locked_message(user))
    if not verify_password(current, user.password_hash):
        wrong = "The current password is not right."
        return _refuse(session, user, actor, now, "auth.password_change_failed", wrong)
    try:
        check_new_password(new, user.username)
    except AuthError as exc:
        return Outcome(error=str(exc))
    user.password_hash = hash_password(new)
    user.failed_logins = 0
    user.sessions_revoked_at = now
    audit.record(session, actor, "auth.password_changed", target_type="user", target_id=user.id)
    return Outcome(user_id=user.id, at=now)


def _active_user(session: Session, user_id: int | None, lock: bool = True) -> User | None:
    """The active user `user_id`, locked FOR UPDATE (PostgreSQL) unless only read."""
    if user_id is None:
        return None
    user = session.get(User, user_id, with_for_update=lock or None)
    return user if user is not None and user.is_active else None


def _as(origin: Actor, user: User) -> Actor:
    return replace(origin, label=user.username, user_id=user.id)


def _locked(user: User, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def _revoked(user: User, began_at: datetime) -> bool:
    return user.sessions_revoked_at is not None and began_at < user.sessions_revoked_at


def _locked_message(user: User) -> str:
    assert user.locked_until is not None
    return (
        f"Too many failed attempts: this account is locked until "
        f"{user.locked_until:%H:%M} UTC. Try again then, or ask a super-admin to unlock it."
    )


def _refuse(
    session: Session,
    user: User,
    who: Actor,
    now: datetime,
    action: str,
    message: str,
    reason: str = "password",
) -> Outcome:
    """Count one failed attempt (the row is locked FOR UPDATE); lock the account at the limit."""
    if user.locked_until is not None:  # an earlier lock has run out: count afresh
        user.locked_until = None
        user.failed_logins = 0
    user.failed_logins += 1
    details = {"reason": reason, "failed_attempts": user.failed_logins}
    audit.record(session, who, action, target_type="user", target_id=user.id, details=details)
    if user.failed_logins < MAX_FAILED_ATTEMPTS:
        return Outcome(error=message)
    user.locked_until = now + LOCKOUT_PERIOD
    until = {"until": user.locked_until.isoformat()}
    audit.record(session, who, "auth.locked", target_type="user", target_id=user.id, details=until)
    return Outcome(error=_locked_message(user))


def _signed_in(session: Session, user: User, who: Actor, now: datetime, via: str) -> None:
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    audit.record(
        session, who, "auth.login", target_type="user", target_id=user.id, details={"via": via}
    )


# --- first run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedSetupToken:
    token: str = field(repr=False)
    expires_at: datetime


def needs_setup(session: Session) -> bool:
    """True while no user exists: the console then offers only the setup page."""
    return session.scalar(select(User.id).limit(1)) is None


def issue_setup_token(session: Session, now: datetime | None = None) -> IssuedSetupToken | None:
    """A new one-time setup token while no user exists (replacing any earlier one), else None."""
    now = now or utcnow()
    session.execute(delete(SetupToken))
    if not needs_setup(session):
        return None
    token = secrets.token_urlsafe(18)
    expires_at = now + SETUP_TOKEN_LIFETIME
    session.add(SetupToken(token_sha256=_sha256(token), expires_at=expires_at))
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
    row = session.scalars(select(SetupToken).with_for_update()).first()
    if not needs_setup(session):
        return Outcome(error="The console is already set up: sign in instead.")
    if row is None:
        return Outcome(error="No setup token is waiting. " + _RUN_MIGRATE)
    if row.locked_until is not None and row.locked_until > now:
        return Outcome(
            error=f"Too many wrong setup tokens. Try again after {row.locked_until:%H:%M} UTC, "
            "or run `python -m core migrate` to print a new token."
        )
    if row.expires_at <= now:
        return Outcome(error="This setup token has expired. " + _RUN_MIGRATE)
    if not hmac.compare_digest(row.token_sha256, _sha256(token.strip())):
        if row.locked_until is not None:
            row.locked_until, row.failed_attempts = None, 0
        row.failed_attempts += 1
        audit.record(
            session, origin, "setup.failed", details={"failed_attempts": row.failed_attempts}
        )
        if row.failed_attempts >= MAX_FAILED_ATTEMPTS:
            row.locked_until = now + LOCKOUT_PERIOD
            audit.record(
                session, origin, "setup.locked", details={"until": row.locked_until.isoformat()}
            )
        return Outcome(
            error="That is not the setup token. Copy it from the output of "
            "`python -m core migrate` (or `make run`); only the newest one works."
        )
    try:
        name = normalize_username(username)
        check_new_password(password, name)
    except AuthError as exc:
        return Outcome(error=str(exc))
    claimed = session.execute(delete(SetupToken).where(SetupToken.id == row.id))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return Outcome(error="The console is already set up: sign in instead.")
    user = User(
        username=name,
        display_name=display_name.strip(),
        password_hash=hash_password(password),
        role=UserRole.SUPER_ADMIN.value,
    )
    session.add(user)
    session.flush()
    who = _as(origin, user)
    audit.record(
        session,
        who,
        "setup.completed",
        target_type="user",
        target_id=user.id,
        details={"role": user.role},
    )
    _signed_in(session, user, who, now, via="setup")
    return Outcome(user_id=user.id, at=now)


_RUN_MIGRATE = "Run `python -m core migrate` (or `make run`) and enter the token it prints."


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# --- the sign-in cookie's key ----------------------------------------------------------------


def cookie_key(settings: Settings) -> str:
    """The key that signs the sign-in cookie: AI_CONSOLE_COOKIE_KEY, required in production.

    In development it is derived from the Fernet key (data/fernet.key unless
    AI_CONSOLE_FERNET_KEYS is set), so it is secret and stable without another key file.
    """
    if settings.cookie_key:
        return settings.cookie_key
    if settings.is_production:
        raise ConfigError(
            "AI_CONSOLE_COOKIE_KEY is required when AI_CONSOLE_ENV=production; create one with "
            "`python -m core keys generate` and keep it in your secret store"
        )
    load_cipher(settings)  # creates data/fernet.key on a first run
    material = settings.fernet_keys[0] if settings.fernet_keys else _read(settings)
    return hmac.new(material.encode(), b"ai-console sign-in cookie v1", "sha256").hexdigest()


def _read(settings: Settings) -> str:
    return settings.fernet_key_file.read_text().strip()
