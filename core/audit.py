"""Append-only audit trail of administrative actions (who, what, on what, from where).

Rows are only ever inserted; the database refuses UPDATE and DELETE on the table (triggers
installed by the initial migration). `record` refuses details that look like secrets, so a
careless caller fails loudly in tests instead of leaking a key into the trail.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.models import AdminActionLog, UserRole

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


# --- reading the trail (the Audit page) ------------------------------------------------------

PAGE_LIMIT = 1000
MAX_EXPORT_ROWS = 10_000
_CSV_COLUMNS = (
    "id", "created_at", "actor", "actor_id", "action", "target_type", "target_id",
    "ip_address", "user_agent", "details",
)  # fmt: skip


@dataclass(frozen=True)
class AuditFilter:
    """Which rows to read: a field left None matches everything. `until` is exclusive."""

    actor_label: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def as_details(self) -> dict[str, str]:
        """The filter as audit details (for recording an export)."""
        return {
            name: value.isoformat() if isinstance(value, datetime) else value
            for name, value in vars(self).items()
            if value is not None
        }


@dataclass(frozen=True)
class AuditEntry:
    id: int
    created_at: datetime
    actor_label: str
    actor_id: int | None
    action: str
    target_type: str | None
    target_id: str | None
    details: dict[str, Any]
    ip_address: str | None
    user_agent: str | None

    def csv_row(self) -> list[object]:
        values = (
            self.id, self.created_at.isoformat(), self.actor_label, self.actor_id, self.action,
            self.target_type, self.target_id, self.ip_address, self.user_agent,
            json.dumps(self.details, sort_keys=True),
        )  # fmt: skip
        return [_csv_cell(value) for value in values]


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    total: int  # rows matching the filter; `entries` is one page of them


def search(
    session: Session, actor: Actor, filters: AuditFilter, *, limit: int = 100, offset: int = 0
) -> AuditPage:
    """One page of matching rows, newest first, and how many match (super-admins only)."""
    _require_admin(session, actor)
    where = _where(filters)
    total = session.scalar(select(func.count()).select_from(AdminActionLog).where(*where)) or 0
    entries = _entries(session, where, min(max(limit, 1), PAGE_LIMIT), max(offset, 0))
    return AuditPage(entries=entries, total=total)


def filter_choices(session: Session, actor: Actor) -> tuple[list[str], list[str]]:
    """The actor labels and the actions that occur in the trail, sorted (for filter menus)."""
    _require_admin(session, actor)
    labels = session.scalars(select(AdminActionLog.actor_label).distinct().order_by("actor_label"))
    actions = session.scalars(select(AdminActionLog.action).distinct().order_by("action"))
    return list(labels), list(actions)


def export_csv(
    session: Session, actor: Actor, filters: AuditFilter, *, max_rows: int = MAX_EXPORT_ROWS
) -> str:
    """Matching rows as CSV, newest first, at most `max_rows`; the export is itself recorded."""
    _require_admin(session, actor)
    entries = _entries(session, _where(filters), max_rows, 0)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(_CSV_COLUMNS)
    writer.writerows(entry.csv_row() for entry in entries)
    record(session, actor, "audit.exported", details={"rows": len(entries), **filters.as_details()})
    return buffer.getvalue()


def _entries(
    session: Session, where: list[ColumnElement[bool]], limit: int, offset: int
) -> list[AuditEntry]:
    rows = session.scalars(
        select(AdminActionLog)
        .where(*where)
        .order_by(AdminActionLog.created_at.desc(), AdminActionLog.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [
        AuditEntry(
            id=row.id,
            created_at=row.created_at,
            actor_label=row.actor_label,
            actor_id=row.actor_id,
            action=row.action,
            target_type=row.target_type,
            target_id=row.target_id,
            details=dict(row.details or {}),
            ip_address=row.ip_address,
            user_agent=row.user_agent,
        )
        for row in rows
    ]


def _where(filters: AuditFilter) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if filters.actor_label:
        where.append(AdminActionLog.actor_label == filters.actor_label)
    if filters.action:
        where.append(AdminActionLog.action == filters.action)
    if filters.since:
        where.append(AdminActionLog.created_at >= filters.since)
    if filters.until:
        where.append(AdminActionLog.created_at < filters.until)
    return where


def _csv_cell(value: object) -> object:
    # To a spreadsheet a cell starting with = + - @ is a formula, and user agents are whatever
    # the client sent: neutralise them (OWASP "CSV injection").
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _require_admin(session: Session, actor: Actor) -> None:
    # Imported here because core.access imports Actor from this module.
    from core.access import require_role

    require_role(session, actor, UserRole.SUPER_ADMIN)
