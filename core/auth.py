"""Signing in to the console: passwords, throttling, TOTP codes, sessions and the first-run setup.

Why not streamlit-authenticator's login widget. Its `login()` checks passwords against an
in-memory credentials dict, counts failures in that dict (per process, so no lockout across
sessions or replicas, and nothing after a restart), cannot tell us which username failed, signs a
locked user in when the password is right, and restores a session from its cookie without any
second factor. So the checks live here, in the database, and the console draws its own forms.
What fits is kept: the console's sign-in cookie is streamlit-authenticator's (its CookieController
signs a JWT with AI_CONSOLE_COOKIE_KEY, see ui.py), and password hashes are the bcrypt strings its
`Hasher` writes and checks. The cookie stands in for the password only: an enrolled user still
types a TOTP code in every new browser session.

Throttling, not locking. A hard per-account lock (five wrong passwords lock the account) is a
denial-of-service switch anyone can pull: knowing a username is enough to keep its owner, even
the only super-admin, out for as long as one keeps typing wrong passwords. So failures are
counted in `sign_in_throttles` (in the database: it holds across replicas and restarts) per
username *and client address*, and per client address alone, and they only delay:
- per username + address: ACCOUNT_FREE_FAILURES (4) wrong passwords are free; each further one
  makes that pair wait FIRST_DELAY (1 minute), doubling (2, 4, 8…) up to MAX_DELAY (15 minutes).
  The right password from another address is never kept out by these failures, and the right
  password from this address clears them.
- per address: ADDRESS_FREE_FAILURES (20) wrong passwords for any usernames, then the same
  doubling delays, so one address cannot spray many accounts. A success does not clear it (an
  attacker with one account of their own would otherwise reset their budget at will).
- per account: CODE_FREE_FAILURES (4) wrong TOTP codes (at sign-in or step-up), then the same
  delays, from every address at once: whoever guesses codes already has the password, so
  changing address must not buy more guesses. A right code clears it.
Counts start afresh FAILURE_WINDOW (24 hours) after a window's first failure. The key is the
normalised username as typed (its SHA-256, so a password typed into the name field is not stored
in clear), never the user id: unknown and existing names are counted, delayed and answered
alike, and a throttled attempt runs no bcrypt for either. What bounds a distributed attack (many
addresses on one account): each address's own budget (four free guesses at it, then at most
four an hour: about 100 a day), the bcrypt cost of every guess, passwords that zxcvbn scores 3
or more (at least 10^8 guesses), and for super-admins (and enrolled analysts) a TOTP code on
top, itself throttled per account.

What is stored where:
- users.password_hash: bcrypt (users.failed_logins / locked_until are no longer used).
- sign_in_throttles: failures, window start and delay per scope and key (see above).
- resumed_sign_ins: each sign-in cookie (user, issue time) that has restored a session, so the
  cookie's first use is audited as a sign-in and the page loads after it are not.
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
import math
import re
import secrets
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import bcrypt
import pyotp
import segno
import zxcvbn
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from core import audit
from core.audit import Actor
from core.config import ConfigError, Settings
from core.crypto import SecretBox, load_cipher
from core.models import (
    ResumedSignIn,
    SetupToken,
    SignInThrottle,
    ThrottleScope,
    User,
    UserRole,
    utcnow,
)

# Sign-in throttling (the module docstring says why these shapes and numbers).
ACCOUNT_FREE_FAILURES = 4
ADDRESS_FREE_FAILURES = 20
CODE_FREE_FAILURES = 4
FIRST_DELAY = timedelta(minutes=1)
MAX_DELAY = timedelta(minutes=15)
FAILURE_WINDOW = timedelta(hours=24)
# The first-run setup token keeps its own lock: `python -m core migrate` replaces the token and
# with it the lock, so whoever can run it is never kept out.
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
MIN_PASSWORD_SCORE = 3  # zxcvbn: 3 is "safely unguessable" online (about 10^8 guesses or more)
MAX_DISPLAY_NAME = 200
MAX_EMAIL = 254
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,149}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s.][^@\s]*\.[^@\s]*[^@\s.]")
# C0 and C1 control characters (NUL, tab, line breaks, DEL…) and lone surrogates: nothing a
# person types into these fields, and PostgreSQL refuses NUL in text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
# Words of this product an attacker tries first, fed to zxcvbn with the user's own.
_SERVICE_WORDS = ("ai provider console", "provider", "console")

PASSWORD_HELP = (
    f"At least {MIN_PASSWORD_LENGTH} characters and hard to guess: several uncommon words work "
    "well; not your name or username."
)
WRONG_CREDENTIALS = "Wrong username or password."
WRONG_CODE = "That code is not right. Enter the code your authenticator app shows now."
REPLAYED_CODE = "That code was already used. Wait for the next code in your authenticator app."
NO_CONTROL_CHARACTERS = (
    "must not contain control characters (such as NUL, a tab or a line break): remove them "
    "and try again."
)


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


def check_text(value: str, what: str) -> None:
    """Refuse control characters in an account field; `what` names it ("The username").

    Pass what will be kept: a field that is trimmed may arrive with a pasted line break."""
    if _CONTROL.search(value):
        raise AuthError(f"{what} {NO_CONTROL_CHARACTERS}")


def normalize_username(raw: str) -> str:
    """The stored form of a username (trimmed, lower case), or AuthError saying what to fix."""
    name = raw.strip().lower()
    check_text(name, "The username")
    if not _USERNAME.fullmatch(name):
        raise AuthError(
            "Usernames are 1–150 characters: letters, digits and . _ @ -, starting with a "
            "letter or digit."
        )
    return name


def normalize_display_name(raw: str) -> str:
    """A display name as stored (trimmed, at most MAX_DISPLAY_NAME characters), or AuthError."""
    name = raw.strip()
    check_text(name, "The display name")
    if len(name) > MAX_DISPLAY_NAME:
        raise AuthError(f"Display names can be at most {MAX_DISPLAY_NAME} characters long.")
    return name


def normalize_email(raw: str | None) -> str | None:
    """An email address as stored (trimmed; None when empty), or AuthError saying what to fix."""
    email = (raw or "").strip()
    check_text(email, "The email address")
    if not email:
        return None
    if len(email) > MAX_EMAIL or not _EMAIL.fullmatch(email):
        raise AuthError(
            f"Enter an email address like name@example.com (one @, a dot in the domain, no "
            f"spaces, at most {MAX_EMAIL} characters), or leave it empty."
        )
    return email


def check_new_password(
    password: str, username: str, display_name: str = "", email: str | None = None
) -> None:
    """Refuse a password that is too short, too long for bcrypt, or guessable: zxcvbn scores it
    below MIN_PASSWORD_SCORE, or it contains the username, display name or email address (the
    first words an attacker tries). The AuthError says why and what to do instead."""
    check_text(password, "The password")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AuthError(f"Choose a password of at least {MIN_PASSWORD_LENGTH} characters.")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise AuthError(f"Passwords can be at most {MAX_PASSWORD_BYTES} bytes long.")
    if password.strip().lower() == username.strip().lower():
        raise AuthError("The password must not be the username.")
    personal = _personal_words(username, display_name, email)
    result = _zxcvbn(password, [*personal, *_SERVICE_WORDS])
    lowered = password.lower()
    if any(  # a name as a word of its own ("ann-2026"), or as zxcvbn found it (l33t, reversed)
        re.search(rf"(?<![a-z]){re.escape(word)}(?![a-z])", lowered) for word in personal
    ) or any(
        match.get("dictionary_name") == "user_inputs" and match.get("matched_word") in personal
        for match in result["sequence"]
    ):
        raise AuthError(
            "The password contains your username, name or email address, which is the first "
            "thing an attacker tries. Choose one without them."
        )
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result["feedback"]
        why = feedback["warning"] or "It would be guessed too quickly."
        what = (feedback["suggestions"] or ["Add another word or two."])[0]
        raise AuthError(f"That password is too easy to guess. {why.rstrip('.')}. {what}")


def _personal_words(username: str, display_name: str, email: str | None) -> set[str]:
    """The user's own words in lower case (whole and in parts), three characters or longer."""
    local = (email or "").partition("@")[0]
    words: set[str] = set()
    for text in (username, display_name, local):
        text = text.strip().lower()
        words.add(text)
        words.update(re.split(r"[\W_]+", text))
    return {word for word in words if len(word) >= 3}


_ZXCVBN_LOCK = threading.Lock()


def _zxcvbn(password: str, user_inputs: Sequence[str]) -> dict[str, Any]:
    # zxcvbn keeps the user inputs in a module-global dictionary for the length of a call, so
    # two concurrent calls (Streamlit serves sessions in threads) would see each other's.
    with _ZXCVBN_LOCK:
        return zxcvbn.zxcvbn(password, user_inputs=list(user_inputs))


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
    """Save `secret` (encrypted) as the actor's TOTP secret once `code` proves the app has it.

    A wrong code is audited (auth.mfa_enrolment_failed): commit whatever the outcome."""
    now = now or utcnow()
    user = _active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again to set up your authenticator app.")
    if user.totp_secret_encrypted is not None:
        return Outcome(error="An authenticator app is already set up for this account.")
    garbled = _CONTROL.search(code.strip()) is not None
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


# --- signing in ------------------------------------------------------------------------------


def check_password(
    session: Session, username: str, password: str, origin: Actor, now: datetime | None = None
) -> Outcome:
    """First factor. Signs in a user without TOTP; for one with TOTP, says a code must follow.

    Unknown and existing usernames get the same answers after the same work: the throttles are
    read first (a throttled attempt runs no bcrypt), then one bcrypt check (against a decoy hash
    for an unknown name), then one failure counted."""
    now = now or utcnow()
    name = username.strip().lower()
    keys = _password_keys(name, origin)
    user = (
        session.scalars(select(User).where(User.username == name).with_for_update()).first()
        if name and not _CONTROL.search(name)
        else None
    )
    who = origin if user is None else _as(origin, user)
    target = {} if user is None else {"target_type": "user", "target_id": user.id}
    blocked = _blocked(session, keys, now)
    if blocked is not None:
        scope, wait = blocked
        details = {"reason": scope.value, "retry_after_seconds": _seconds(wait)}
        audit.record(session, who, "auth.login_throttled", **target, details=details)
        return Outcome(error=throttled_message(wait))
    for text, what in ((name, "The username"), (password, "The password")):
        if _CONTROL.search(text):
            details = {"reason": "control characters"}
            audit.record(session, who, "auth.login_failed", **target, details=details)
            return Outcome(error=f"{what} {NO_CONTROL_CHARACTERS}")
    if user is None:
        verify_password(password, _decoy_hash())
        return _refuse(
            session, keys, who, now, "auth.login_failed", WRONG_CREDENTIALS, "unknown user"
        )
    if not verify_password(password, user.password_hash):
        return _refuse(
            session, keys, who, now, "auth.login_failed", WRONG_CREDENTIALS, "password", target
        )
    if not user.is_active:
        audit.record(session, who, "auth.login_refused", **target, details={"reason": "disabled"})
        return Outcome(error="This account is disabled. Ask a super-admin to enable it.")
    _clear(session, keys[:1])  # the right password from this address: its pair starts afresh
    if user.totp_secret_encrypted is not None:
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
    refused = _check_code(session, user, who, code, box, now, "auth.login")
    if refused is not None:
        return refused
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
    keys = (_code_key(user.username),)
    target = {"target_type": "user", "target_id": user.id}
    blocked = _blocked(session, keys, now)
    if blocked is not None:
        details = {"reason": "code", "retry_after_seconds": _seconds(blocked[1])}
        audit.record(session, who, f"{kind}_throttled", **target, details=details)
        return Outcome(error=throttled_message(blocked[1], "wrong codes"))
    if _CONTROL.search(code.strip()):
        details = {"reason": "control characters"}
        audit.record(session, who, f"{kind}_failed", **target, details=details)
        return Outcome(error=f"The code {NO_CONTROL_CHARACTERS}")
    verdict = _accept_code(session, user, box, code, now)
    if verdict == "replay":
        # Not counted: a replayed code is a right one, seen before (not a guess); audited.
        details = {"reason": "replayed code"}
        audit.record(session, who, f"{kind}_failed", **target, details=details)
        return Outcome(error=REPLAYED_CODE)
    if verdict == "wrong":
        action = f"{kind}_failed"
        return _refuse(session, keys, who, now, action, WRONG_CODE, "code", target, "wrong codes")
    _clear(session, keys)
    return None


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
        if _CONTROL.search(name)
        else session.scalars(select(User).where(User.username == name).with_for_update()).first()
    )
    if user is None or not user.is_active or _revoked(user, issued_at):
        return Outcome(error="Sign in again.")
    if user.totp_secret_encrypted is not None:
        return Outcome(user_id=user.id, at=now, needs_code=True)
    if _first_resume(session, user, issued_at, now):
        _signed_in(session, user, _as(origin, user), now, via="cookie")
    return Outcome(user_id=user.id, at=now)


def _first_resume(session: Session, user: User, issued_at: datetime, now: datetime) -> bool:
    """Claim the cookie (user, issue time) atomically; True for its first use only."""
    session.execute(
        delete(ResumedSignIn).where(
            ResumedSignIn.user_id == user.id, ResumedSignIn.issued_at < now - REMEMBER_SIGN_IN
        )
    )
    claimed = session.execute(
        _insert(session, ResumedSignIn.__table__)
        .values(user_id=user.id, issued_at=issued_at, first_resumed_at=now)
        .on_conflict_do_nothing()
        .returning(ResumedSignIn.user_id)  # rowcount is not reliable here on psycopg
    )
    return claimed.first() is not None


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
    """Replace the actor's password after checking the current one; other sessions end.

    A wrong current password counts like a wrong sign-in for this account and address."""
    now = now or utcnow()
    user = _active_user(session, actor.user_id)
    if user is None:
        return Outcome(error="Sign in again.")
    keys = _password_keys(user.username, actor)[:1]
    target = {"target_type": "user", "target_id": user.id}
    blocked = _blocked(session, keys, now)
    if blocked is not None:
        details = {"reason": blocked[0].value, "retry_after_seconds": _seconds(blocked[1])}
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
        return _refuse(session, keys, actor, now, action, wrong, "password", target, what)
    try:
        check_new_password(new, user.username, user.display_name, user.email)
    except AuthError as exc:
        return Outcome(error=str(exc))
    _clear(session, keys)
    user.password_hash = hash_password(new)
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


def _revoked(user: User, began_at: datetime) -> bool:
    return user.sessions_revoked_at is not None and began_at < user.sessions_revoked_at


def _refuse(
    session: Session,
    keys: Sequence[_Key],
    who: Actor,
    now: datetime,
    action: str,
    message: str,
    reason: str,
    target: dict[str, Any] | None = None,
    what: str = "failed sign-ins",
) -> Outcome:
    """Count one failure on each of `keys` and audit it; say how long to wait once throttled."""
    failures, wait = _count_failure(session, keys, now)
    details: dict[str, Any] = {"reason": reason, "failed_attempts": failures}
    if wait is not None:
        details["delay_seconds"] = _seconds(wait)
    audit.record(session, who, action, **(target or {}), details=details)
    if wait is None:
        return Outcome(error=message)
    return Outcome(error=f"{message} {throttled_message(wait, what)}")


def _signed_in(session: Session, user: User, who: Actor, now: datetime, via: str) -> None:
    user.last_login_at = now
    audit.record(
        session, who, "auth.login", target_type="user", target_id=user.id, details={"via": via}
    )


# --- throttles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Key:
    scope: ThrottleScope
    account_key: str
    address: str

    def matches(self) -> Any:
        return and_(
            SignInThrottle.scope == self.scope.value,
            SignInThrottle.account_key == self.account_key,
            SignInThrottle.address == self.address,
        )


_FREE_FAILURES = {
    ThrottleScope.ACCOUNT_ADDRESS: ACCOUNT_FREE_FAILURES,
    ThrottleScope.ADDRESS: ADDRESS_FREE_FAILURES,
    ThrottleScope.CODE: CODE_FREE_FAILURES,
}


def account_key(username: str) -> str:
    """How the throttles name a username (normalised, then SHA-256), whether it exists or not."""
    return hashlib.sha256(username.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()


def _address(origin: Actor) -> str:
    return (origin.ip_address or "")[:45]


def _password_keys(name: str, origin: Actor) -> tuple[_Key, _Key]:
    """The username + address pair first, then the address alone."""
    address = _address(origin)
    return (
        _Key(ThrottleScope.ACCOUNT_ADDRESS, account_key(name), address),
        _Key(ThrottleScope.ADDRESS, "", address),
    )


def _code_key(username: str) -> _Key:
    return _Key(ThrottleScope.CODE, account_key(username), "")


def throttle_delay(scope: ThrottleScope, failures: int) -> timedelta | None:
    """The wait after the `failures`-th failure in a window: none for the free ones, then
    FIRST_DELAY doubling with each further failure, at most MAX_DELAY."""
    beyond = failures - _FREE_FAILURES[scope]
    if beyond <= 0:
        return None
    return min(FIRST_DELAY * 2 ** min(beyond - 1, 16), MAX_DELAY)


def throttled_message(wait: timedelta, what: str = "failed sign-ins") -> str:
    """How long to wait, in whole minutes rounded up: "Too many failed sign-ins: try again in
    2 minutes." (`what` says what there were too many of)."""
    minutes = max(1, math.ceil(wait.total_seconds() / 60))
    return f"Too many {what}: try again in {minutes} minute{'' if minutes == 1 else 's'}."


def _blocked(
    session: Session, keys: Sequence[_Key], now: datetime
) -> tuple[ThrottleScope, timedelta] | None:
    """The scope that makes the caller wait longest right now, and how long; None if none."""
    rows = session.scalars(
        select(SignInThrottle).where(
            or_(*(key.matches() for key in keys)), SignInThrottle.blocked_until > now
        )
    ).all()
    if not rows:
        return None
    row = max(rows, key=lambda r: r.blocked_until or now)
    assert row.blocked_until is not None
    return ThrottleScope(row.scope), row.blocked_until - now


def _count_failure(
    session: Session, keys: Sequence[_Key], now: datetime
) -> tuple[int, timedelta | None]:
    """Count one failure on each key, atomically (row locks on PostgreSQL; SQLite writes one at
    a time). Returns the first key's failures in its window and the longest wait now imposed."""
    session.execute(
        delete(SignInThrottle).where(SignInThrottle.last_failure_at < now - FAILURE_WINDOW)
    )
    counted: list[int] = []
    longest: timedelta | None = None
    for key in keys:
        session.execute(
            _insert(session, SignInThrottle.__table__)
            .values(
                scope=key.scope.value,
                account_key=key.account_key,
                address=key.address,
                failures=0,
                window_started_at=now,
                last_failure_at=now,
            )
            .on_conflict_do_nothing()
        )
        row = session.scalars(
            select(SignInThrottle)
            .where(key.matches())
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        if row.window_started_at <= now - FAILURE_WINDOW:
            row.failures, row.window_started_at = 0, now
        row.failures += 1
        row.last_failure_at = now
        wait = throttle_delay(key.scope, row.failures)
        row.blocked_until = None if wait is None else now + wait
        counted.append(row.failures)
        if wait is not None and (longest is None or wait > longest):
            longest = wait
    session.flush()
    return counted[0], longest


def _clear(session: Session, keys: Iterable[_Key]) -> None:
    session.execute(delete(SignInThrottle).where(or_(*(key.matches() for key in keys))))


@dataclass(frozen=True)
class AccountThrottle:
    """What an account's throttles say now (for the Users page)."""

    failures: int = 0  # wrong passwords (per address, added up) and codes in the current windows
    until: datetime | None = None  # the latest moment some address or its codes must wait for


def account_throttles(
    session: Session, usernames: Iterable[str], now: datetime | None = None
) -> dict[str, AccountThrottle]:
    """The throttles of these accounts (password ones from every address, and codes)."""
    now = now or utcnow()
    by_key = {account_key(name): name for name in usernames}
    if not by_key:
        return {}
    rows = session.scalars(
        select(SignInThrottle).where(
            SignInThrottle.scope.in_(
                [ThrottleScope.ACCOUNT_ADDRESS.value, ThrottleScope.CODE.value]
            ),
            SignInThrottle.account_key.in_(list(by_key)),
            SignInThrottle.window_started_at > now - FAILURE_WINDOW,
        )
    ).all()
    found: dict[str, AccountThrottle] = {}
    for row in rows:
        name = by_key[row.account_key]
        seen = found.get(name, AccountThrottle())
        until = row.blocked_until if row.blocked_until and row.blocked_until > now else None
        latest = max((t for t in (seen.until, until) if t is not None), default=None)
        found[name] = AccountThrottle(failures=seen.failures + row.failures, until=latest)
    return found


def clear_account_throttles(session: Session, username: str) -> int:
    """Forget the account's failures (from every address, and its codes); how many rows went.
    Address-wide throttles stay: they belong to the addresses, not to this account."""
    gone = session.execute(
        delete(SignInThrottle).where(
            SignInThrottle.scope.in_(
                [ThrottleScope.ACCOUNT_ADDRESS.value, ThrottleScope.CODE.value]
            ),
            SignInThrottle.account_key == account_key(username),
        )
    )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]


def _insert(session: Session, table: Any) -> Any:
    """INSERT into `table` with the dialect's ON CONFLICT (PostgreSQL and SQLite both have it)."""
    dialect = session.get_bind().dialect.name
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(table)


def _seconds(wait: timedelta) -> int:
    return math.ceil(wait.total_seconds())


# --- first run -------------------------------------------------------------------------------


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
        (token.strip(), "The setup token"),
        (username.strip(), "The username"),
        (display_name.strip(), "The display name"),
        (password, "The password"),
    )
    try:
        for text, what in fields:
            check_text(text, what)
    except AuthError as exc:  # before the database, which may refuse such text outright
        return Outcome(error=str(exc))
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
        shown = normalize_display_name(display_name)
        check_new_password(password, name, shown)
    except AuthError as exc:
        return Outcome(error=str(exc))
    claimed = session.execute(delete(SetupToken).where(SetupToken.id == row.id))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return Outcome(error="The console is already set up: sign in instead.")
    user = User(
        username=name,
        display_name=shown,
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
