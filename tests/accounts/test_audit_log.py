"""Reading the audit trail: SQL filters by actor, action and dates, pages, a CSV export that is
itself recorded, and only for super-admins."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from core import audit_trail
from core.access import Actor, PermissionDenied
from core.audit_trail import AuditFilter
from core.models import AdminActionLog, User
from tests.support.database import MigratedDatabase

DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture
def admin(db: MigratedDatabase) -> Actor:
    with db.session() as session:
        users = [
            User(username=n, password_hash="h", role=r)
            for n, r in (("root", "super_admin"), ("ann", "analyst"))
        ]
        session.add_all(users)
        session.flush()
        for i in range(30):
            who = users[i % 2]
            session.add(
                AdminActionLog(
                    actor_id=who.id,
                    actor_label=who.username,
                    action="auth.login" if i % 3 else "user.created",
                    details={"n": i},
                    created_at=DAY + timedelta(hours=i),
                    user_agent='=HYPERLINK("http://evil")' if i == 29 else "Firefox",
                )
            )
        session.commit()
        return Actor(label="root", user_id=users[0].id)


def search(db: MigratedDatabase, actor: Actor, **kw) -> audit_trail.AuditPage:  # type: ignore[no-untyped-def]
    limit, offset = kw.pop("limit", 100), kw.pop("offset", 0)
    with db.session() as session:
        return audit_trail.search(session, actor, AuditFilter(**kw), limit=limit, offset=offset)


def test_filters_are_combined_and_rows_come_newest_first(
    db: MigratedDatabase, admin: Actor
) -> None:
    everything = search(db, admin)
    assert everything.total == 30 and everything.entries[0].details == {"n": 29}
    assert search(db, admin, actor_label="ann").total == 15
    assert search(db, admin, action="user.created").total == 10
    assert search(db, admin, actor_label="root", action="user.created").total == 5
    one_day = search(db, admin, since=DAY + timedelta(days=1), until=DAY + timedelta(days=2))
    assert one_day.total == 6  # hours 24..29
    assert [e.details["n"] for e in one_day.entries] == [29, 28, 27, 26, 25, 24]


def test_pages_split_the_matches(db: MigratedDatabase, admin: Actor) -> None:
    second = search(db, admin, limit=12, offset=12)
    assert second.total == 30 and [e.details["n"] for e in second.entries] == list(range(17, 5, -1))
    assert search(db, admin, limit=12, offset=36).entries == []


def test_filter_choices_list_what_occurs(db: MigratedDatabase, admin: Actor) -> None:
    with db.session() as session:
        assert audit_trail.filter_choices(session, admin) == (
            ["ann", "root"],
            ["auth.login", "user.created"],
        )


def test_the_csv_export_is_filtered_safe_for_spreadsheets_and_recorded(
    db: MigratedDatabase, admin: Actor
) -> None:
    with db.session() as session, session.begin():
        exported = audit_trail.export_csv(
            session, admin, AuditFilter(actor_label="ann"), max_rows=10
        )
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert len(rows) == 10 and {r["actor"] for r in rows} == {"ann"}
    assert rows[0]["user_agent"] == '\'=HYPERLINK("http://evil")'  # not a formula
    assert rows[0]["details"] == '{"n": 29}'
    [record] = search(db, admin, action="audit.exported").entries
    assert record.actor_label == "root" and record.details == {"rows": 10, "actor_label": "ann"}


def test_analysts_cannot_read_the_trail(db: MigratedDatabase, admin: Actor) -> None:
    with db.session() as session:
        ann = session.query(User).filter_by(username="ann").one()
        analyst = Actor(label="ann", user_id=ann.id)
        for call in (
            lambda: audit_trail.search(session, analyst, AuditFilter()),
            lambda: audit_trail.filter_choices(session, analyst),
            lambda: audit_trail.export_csv(session, analyst, AuditFilter()),
        ):
            with pytest.raises(PermissionDenied):
                call()
