"""Append-only audit trail of administrative actions (who, what, on what, from where).

Rows are only ever inserted; the database refuses UPDATE and DELETE on the table (triggers
installed by the initial migration). `record` refuses details that look like secrets, so a
careless caller fails loudly in tests instead of leaking a key into the trail.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.models import AdminActionLog

# Detail field names that name a secret: any word of these, or a last word of the others
# (`setup_token`, `password_hash`, `api_key` are refused; `daily_token_limit`, `key_last4` pass).
_SECRET_WORDS = frozenset({"password", "passwd", "secret", "apikey", "totp", "otp", "cookie"})
_SECRET_LAST_WORDS = frozenset({"key", "token", "hash", "code", "credential", "credentials"})


@dataclass(frozen=True)
class Actor:
    """Who performs an action: a console user (with IP and browser) or an operator's shell.

    `mfa_verified_at` is when this user last proved a TOTP code in this console session; the
    step-up check in core.access reads it. An operator (shell access to the deployment) is
    trusted for every action and has no console user.
    """

    label: str
    user_id: int | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    mfa_verified_at: datetime | None = None
    is_operator: bool = False

    @classmethod
    def cli(cls) -> Actor:
        """The operator running `python -m core` (actor_label `cli:<os user>`)."""
        try:
            user = getpass.getuser()
        except OSError:  # no user name in this environment (some containers)
            user = "unknown"
        return cls(label=f"cli:{user}", is_operator=True)


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: object = None,
    details: Mapping[str, Any] | None = None,
) -> AdminActionLog:
    """Add one audit row to the caller's transaction (it lands only if that commits)."""
    clean = dict(details or {})
    _refuse_secrets(clean)
    row = AdminActionLog(
        actor_id=actor.user_id,
        actor_label=actor.label,
        action=action,
        target_type=target_type,
        target_id=None if target_id is None else str(target_id),
        details=clean,
        ip_address=actor.ip_address,
        user_agent=(actor.user_agent or "")[:500] or None,
    )
    session.add(row)
    return row


def _refuse_secrets(details: Mapping[str, Any], path: str = "") -> None:
    for key, value in details.items():
        words = re.split(r"[^a-z0-9]+", str(key).lower())
        if _SECRET_WORDS.intersection(words) or words[-1] in _SECRET_LAST_WORDS:
            raise ValueError(f"audit details must not carry secrets (field {path}{key!r})")
        if isinstance(value, Mapping):
            _refuse_secrets(value, f"{path}{key}.")
