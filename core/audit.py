"""Append-only audit trail of administrative actions (who, what, on what, from where).

Rows are only ever inserted; the database refuses UPDATE and DELETE on the table (triggers
installed by the initial migration). `record` refuses details that look like secrets, so a
careless caller fails loudly in tests instead of leaking a key into the trail.

Who acts is a core.access.Actor; reading the trail is core/audit_trail.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from core.models import AdminActionLog

if TYPE_CHECKING:
    from core.access import Actor


# Detail field names that name a secret: any word of these, or a last word of the others
# (`setup_token`, `password_hash`, `api_key` are refused; `daily_token_limit`, `key_last4` pass).
_SECRET_WORDS = frozenset({"password", "passwd", "secret", "apikey", "totp", "otp", "cookie"})


_SECRET_LAST_WORDS = frozenset({"key", "token", "hash", "code", "credential", "credentials"})


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
