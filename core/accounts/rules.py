"""What a username, display name, email and password must be, and how passwords are hashed.

Passwords are the bcrypt strings streamlit-authenticator's `Hasher` writes and checks; a new
one must score at least MIN_PASSWORD_SCORE with zxcvbn, fed the user's own names and this
product's words. `AuthError` is input the user must correct; `Outcome` is what a check that
counts failures decided (the failure it records must be committed: callers commit either way).
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import bcrypt
import zxcvbn

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
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


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
    """Input the user must correct (a weak password, a taken username); the message says how.

    `field` names the input it is about ("username", "password", "token"…) so a form can show
    the message beside it; None when it is about no single field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Outcome:
    """What a check decided. Refusals are recorded in the caller's session: commit either way."""

    user_id: int | None = None
    at: datetime | None = None  # when it was decided: the session's sign-in time
    needs_code: bool = False  # the password (or cookie) passed; a TOTP code must follow
    verified_at: datetime | None = None  # a TOTP code was accepted (feeds Actor.mfa_verified_at)
    error: str | None = None
    field: str | None = None  # the input `error` is about, as AuthError.field

    @property
    def ok(self) -> bool:
        return self.error is None


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
def decoy_hash() -> str:
    # Checked against when the username is unknown, so a wrong name costs as long as a wrong
    # password and response times do not reveal which accounts exist.
    return hash_password(secrets.token_urlsafe(16))


def check_text(value: str, what: str) -> None:
    """Refuse control characters in an account field; `what` names it ("The username").

    Pass what will be kept: a field that is trimmed may arrive with a pasted line break."""
    if CONTROL_CHARACTERS.search(value):
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


def account_field_errors(
    username: str, password: str, display_name: str = "", email: str | None = None
) -> dict[str, str]:
    """What is wrong with a new account's fields, by field ("username", "display_name",
    "email", "password"), all at once so a form can show each beside its input; {} when fine.

    The same rules create_user and complete_setup enforce; nothing here touches a database."""
    errors: dict[str, str] = {}
    checked: dict[str, str | None] = {}
    for field, check, raw in (
        ("username", normalize_username, username),
        ("display_name", normalize_display_name, display_name),
        ("email", normalize_email, email),
    ):
        try:
            checked[field] = check(raw)  # type: ignore[operator]
        except AuthError as exc:
            errors[field] = str(exc)
    try:
        check_new_password(
            password,
            checked.get("username") or username,
            checked.get("display_name") or display_name,
            checked.get("email") or email,
        )
    except AuthError as exc:
        errors["password"] = str(exc)
    return errors


def check_account_fields(
    username: str, password: str, display_name: str = "", email: str | None = None
) -> tuple[str, str, str | None]:
    """The stored username, display name and email of a new account, or AuthError (with its
    field) for the first thing wrong, in the order of account_field_errors."""
    errors = account_field_errors(username, password, display_name, email)
    if errors:
        field, message = next(iter(errors.items()))
        raise AuthError(message, field=field)
    return (
        normalize_username(username),
        normalize_display_name(display_name),
        normalize_email(email),
    )
