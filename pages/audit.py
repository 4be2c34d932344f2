"""Audit log (super-admins): who did what, to what, from where; filter and export as CSV."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import streamlit as st

import ui
from core import audit_trail
from core.models import UserRole, utcnow

ui.through_the_app()

PAGE_SIZE = 100

me = ui.require_user(UserRole.SUPER_ADMIN)
st.title("Audit log")
st.caption("Every sign-in, change and export, newest first. Times are UTC.")

with ui.transaction() as session:
    actors, actions = audit_trail.filter_choices(session, ui.actor(me))

ANY = "(any)"
left, middle, right = st.columns([1, 1, 1])
who = left.selectbox("Actor", [ANY, *actors])
what = middle.selectbox("Action", [ANY, *actions])
today = utcnow().date()
days = right.date_input("Dates", value=(today - timedelta(days=30), today), max_value=today)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


start, end = (days[0], days[-1]) if isinstance(days, tuple) and days else (None, None)
filters = audit_trail.AuditFilter(
    actor_label=None if who == ANY else who,
    action=None if what == ANY else what,
    since=_day_start(start) if start else None,
    until=_day_start(end) + timedelta(days=1) if end else None,
)

with ui.transaction() as session:
    total = audit_trail.search(session, ui.actor(me), filters, limit=1).total
pages = max(1, -(-total // PAGE_SIZE))
page = 1
if pages > 1:
    if st.session_state.get("audit_page", 1) > pages:  # the filter narrowed: start over
        st.session_state["audit_page"] = 1
    page = int(st.number_input(f"Page (of {pages})", 1, pages, 1, key="audit_page"))
with ui.transaction() as session:
    found = audit_trail.search(
        session, ui.actor(me), filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
    )

st.write(f"{found.total} matching entr{'y' if found.total == 1 else 'ies'}.")
st.dataframe(
    [
        {
            "When (UTC)": e.created_at,
            "Actor": e.actor_label,
            "Action": e.action,
            "Target": " ".join(str(part) for part in (e.target_type, e.target_id) if part),
            "IP address": e.ip_address,
            "User agent": e.user_agent,
            # Last: it is the long one, and before the address and browser it pushed them
            # off-screen at 1400 px.
            "Details": ", ".join(f"{k}: {v}" for k, v in e.details.items()),
        }
        for e in found.entries
    ],
    hide_index=True,
    width="stretch",
    placeholder="—",
    column_config={
        "When (UTC)": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
        "User agent": st.column_config.TextColumn(width="medium"),
        "Details": st.column_config.TextColumn(width="large"),
    },
)

factory, exporter = ui.session_factory(), ui.actor(me)


def _csv() -> str:
    # Built when the button is clicked (on another thread), so the export is recorded then.
    with factory() as session, session.begin():
        return audit_trail.export_csv(session, exporter, filters)


st.download_button(
    f"Export CSV (up to {audit_trail.MAX_EXPORT_ROWS:,} rows)",
    data=_csv,
    file_name=f"audit-log-{today.isoformat()}.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
)
