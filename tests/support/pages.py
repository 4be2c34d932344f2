"""Helpers for the AppTest page tests: a console pointed at the test database, seeded users,
signed-in sessions, and finding what a run drew (dialogs, texts)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlalchemy import select
from streamlit.testing.v1 import AppTest

import ui
from core import accounts
from core.config import PROJECT_ROOT
from core.crypto import SecretBox
from core.models import User, utcnow
from tests.support.database import MigratedDatabase

PASSWORD = "correct horse battery"
TIMEOUT = 30  # seconds per run; the first run of a process imports a lot


@dataclass
class Console:
    """The console's settings point at `db`; `box` is the cipher the console uses too."""

    db: MigratedDatabase
    box: SecretBox

    def app(self) -> AppTest:
        return AppTest.from_file(str(PROJECT_ROOT / "app.py"), default_timeout=TIMEOUT)

    def page(self, path: str, user_id: int | None = None, **state: object) -> AppTest:
        """One page file on its own, as `user_id` signed in just now (or as nobody)."""
        at = AppTest.from_file(str(PROJECT_ROOT / path), default_timeout=TIMEOUT)
        if user_id is not None:
            at.session_state[ui.USER_ID] = user_id
            at.session_state[ui.SIGNED_IN_AT] = utcnow()
            at.session_state[ui.MFA_VERIFIED_AT] = utcnow()
        for key, value in state.items():
            at.session_state[key] = value
        return at

    def add_user(self, name: str, role: str = "super_admin", mfa: bool = True) -> tuple[int, str]:
        """A user with PASSWORD; returns its id and TOTP secret ("" without MFA)."""
        secret = pyotp.random_base32() if mfa else ""
        with self.db.session() as session:
            user = User(
                username=name,
                password_hash=accounts.hash_password(PASSWORD),
                role=role,
                totp_secret_encrypted=self.box.encrypt(secret) if secret else None,
            )
            session.add(user)
            session.commit()
            return user.id, secret

    def user_count(self) -> int:
        with self.db.session() as session:
            return len(session.scalars(select(User.id)).all())

    def user(self, user_id: int) -> User:
        with self.db.session() as session:
            user = session.get(User, user_id)
            assert user is not None
            return user


def code(secret: str, at: datetime | None = None) -> str:
    return pyotp.TOTP(secret).at(at or utcnow())


def next_code(secret: str) -> str:
    """The code of the next 30-second step: accepted now (valid_window=1), never used before."""
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(utcnow()) + 1)


def dialogs(at: AppTest) -> list[object]:
    """The dialogs this run opened."""
    return list(at.get("dialog"))


def texts(at: AppTest) -> str:
    """Everything a run wrote, as one string (to look for what must never be shown)."""
    parts: list[str] = []
    for kind in ("title", "subheader", "markdown", "caption", "success", "info", "warning",
                 "error", "code", "text"):  # fmt: skip
        parts.extend(str(element.value) for element in getattr(at, kind))
    for widget in (*at.text_input, *at.button):
        parts.append(f"{widget.label}={getattr(widget, 'value', '')}")
    return "\n".join(parts)


def state_dump(at: AppTest) -> str:
    return repr({key: at.session_state[key] for key in at.session_state})


def error_under(at: AppTest, label: str) -> str | None:
    """The error a run showed right under the widget labelled `label` (past any caption or
    empty slot, before the next widget), as the user reads it (Markdown escapes removed)."""
    nodes = list(at.main)
    start = next(i for i, node in enumerate(nodes) if getattr(node, "label", None) == label)
    for node in nodes[start + 1 :]:
        kind = getattr(node, "type", None)
        if kind == "error":
            return str(node.value).replace("\\", "")  # type: ignore[union-attr]
        if kind not in ("caption", "empty"):
            return None
    return None
