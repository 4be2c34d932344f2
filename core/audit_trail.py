"""Reading the audit trail (the Audit log page and its CSV export): super-admins only."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from core.access import Actor, require_role
from core.audit import record
from core.models import AdminActionLog, UserRole

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
    require_role(session, actor, UserRole.SUPER_ADMIN)
