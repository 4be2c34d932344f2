"""Alerts (super-admins): where to hear that a limit or budget is nearly used up, or that a
provider keeps failing, before calls start being refused. Adding and removing a rule needs a
fresh authenticator code; a test button sends a sample alert at once."""

from __future__ import annotations

from typing import Any

import streamlit as st
from sqlalchemy.orm import Session

import ui
from core import alerts
from core.access import Actor
from core.admin import ValidationFailed
from core.models import LIMIT_KINDS, UserRole

ui.through_the_app()

me = ui.require_user(UserRole.SUPER_ADMIN)
st.title("Alerts")
outbox = ui.outbox()
interval = ui.settings().alert_interval_s
st.caption(
    "Hear about a token limit or dollar budget before calls start failing: each threshold is "
    "sent once per UTC day or month. An error-rate alert says when a provider keeps failing. "
    f"The console checks every {interval:g} s and retries a failed delivery with backoff; "
    "every alert sent or failed is in the audit log."
)

with ui.transaction() as session:
    rules = alerts.list_rules(session, ui.actor(me))
    configs = alerts.config_names(session, ui.actor(me))
    recent = alerts.recent_deliveries(session, ui.actor(me))


TARGET = "alert_target"  # a Slack URL is a credential: kept sealed, never in clear
FIELDS = ("alert_scope", "alert_kinds", "alert_thresholds", "alert_level", "alert_min_calls")
LABELS = {
    "channel": "Send to",
    "target": "Webhook URL",
    "config_id": "About",
    "limit_kinds": "Limits to watch",
    "thresholds": "At (% of the limit)",
    "error_rate_percent": "Error-rate alert above (%)",
    "error_min_calls": "Calls in 15 minutes",
}


def _add(session: Session, actor: Actor, target: str, fields: dict[str, Any]) -> str:
    view = alerts.add_rule(session, actor, outbox, alerts.AlertInput(target=target, **fields))
    return f"Added an alert rule: {view.watches}, to {view.target_hint}."


with st.expander("Add an alert rule", icon=":material/add_alert:", expanded=not rules):
    channel = st.radio(
        "Send to",
        list(alerts.CHANNEL_NAMES),
        format_func=alerts.CHANNEL_NAMES.get,
        horizontal=True,
        key="alert_channel",
    )
    if channel == "email" and outbox.smtp is None:
        st.info(
            "Email alerts need AI_CONSOLE_SMTP_URL (e.g. smtp://user:pass@host:587?starttls=1) "
            "and AI_CONSOLE_ALERT_FROM set where the console runs."
        )
    errors = ui.FieldErrors()
    with st.form("add_alert", clear_on_submit=False):
        if channel == "email":
            st.session_state[TARGET] = ""  # drawn empty: what was typed waits sealed
            st.text_input("Email address", placeholder="ops@example.com", key=TARGET)
        else:
            ui.secret_box(
                "Slack incoming-webhook URL" if channel == "slack" else "Webhook URL",
                TARGET,
                placeholder="https://hooks.slack.com/services/…"
                if channel == "slack"
                else "https://alerts.example.com/ai-console",
                help="Kept encrypted like an API key; only its host and last 4 characters are "
                "shown. The host must be public unless AI_CONSOLE_BASE_URL_ALLOWLIST lists it.",
            )
        if ui.typed(TARGET) is not None:
            st.caption("The address you entered is kept; enter another to replace it.")
        errors.under("target")
        st.selectbox(
            "About",
            [None, *configs],
            format_func=lambda c: "Every provider config" if c is None else configs[c],
            key="alert_scope",
        )
        errors.under("config_id")
        left, right = st.columns(2)
        left.multiselect(
            "Limits to watch",
            list(LIMIT_KINDS),
            default=list(LIMIT_KINDS),
            format_func=lambda k: alerts.KIND_NAMES[k].capitalize(),
            help="Only configs that have the limit set are watched.",
            key="alert_kinds",
        )
        errors.under("limit_kinds", left)
        right.text_input(
            "At (% of the limit)",
            value=",".join(map(str, alerts.DEFAULT_THRESHOLDS)),
            help="Comma-separated percentages; 100 means the limit is used up.",
            key="alert_thresholds",
        )
        errors.under("thresholds", right)
        left.text_input(
            "Error-rate alert above (%)",
            placeholder="off",
            help="Failed calls (errors and timeouts) of all answered calls in the last 15 minutes.",
            key="alert_level",
        )
        errors.under("error_rate_percent", left)
        right.text_input(
            "…once there were at least (calls in 15 minutes)", value="20", key="alert_min_calls"
        )
        errors.under("error_min_calls", right)
        add = st.form_submit_button(
            "Add alert rule", type="primary", on_click=ui.seal_typed, args=(TARGET,)
        )
    if add:
        state = st.session_state
        fields = {
            "channel": channel,
            "config_id": state["alert_scope"],
            "limit_kinds": state["alert_kinds"],
            "thresholds": state["alert_thresholds"],
            "error_rate_percent": state["alert_level"],
            "error_min_calls": state["alert_min_calls"],
        }
        sealed = ui.typed(TARGET)
        try:  # beside the fields, before a code is asked for
            with ui.transaction() as session:
                alerts.check_rule(
                    session,
                    ui.actor(me),
                    outbox,
                    alerts.AlertInput(target=ui.unseal(sealed) if sealed else "", **fields),
                )
        except ValidationFailed as exc:
            labels = LABELS | {"target": "Email address" if channel == "email" else "Webhook URL"}
            errors.show({f: f"{labels.get(f, f)}: {text}." for f, text in exc.errors.items()})
        else:
            ui.run_sensitive(
                "Adding an alert rule",
                _add,
                sealed,
                fields,
                done="Added an alert rule.",
                forget=(TARGET, *FIELDS),
            )

st.subheader("Rules")
if not rules:
    st.caption("No alert rules yet: add one above.")
for rule in rules:
    with st.container(border=True):
        text, test_col, remove_col = st.columns([4, 1, 1], vertical_alignment="center")
        text.markdown(
            f"**{alerts.CHANNEL_NAMES[rule.channel]}** to {ui.plain(rule.target_hint)} · "
            f"{ui.plain(rule.config_name)}  \n{rule.watches}"
        )
        if test_col.button("Send test", key=f"test_{rule.id}", icon=":material/send:"):
            with st.spinner("Sending a test alert…"), ui.transaction() as session:
                result = alerts.send_test(session, ui.actor(me), outbox, rule.id)
            (st.success if result.ok else st.error)(ui.plain(result.message))
        if remove_col.button("Remove", key=f"remove_{rule.id}", icon=":material/delete:"):
            ui.run_sensitive(
                f"Removing alert rule {rule.id}",
                alerts.remove_rule,
                rule.id,
                done=f"Removed alert rule {rule.id}.",
            )

st.subheader("Recent alerts")
targets = {rule.id: rule.target_hint for rule in rules}
if not recent:
    st.caption("None sent yet.")
else:
    st.dataframe(
        [
            {
                "Created": d.created_at,
                "Status": d.status,
                "Alert": d.subject,
                "To": targets.get(d.rule_id, ""),
                "Period": d.period,
                "Attempts": d.attempts,
                "Sent": d.sent_at,
                "Next try": d.next_attempt_at if d.status == "pending" else None,
                "Last error": d.last_error,
            }
            for d in recent
        ],
        hide_index=True,
        width="stretch",
        column_config={
            "Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm [UTC]"),
            "Sent": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm [UTC]"),
            "Next try": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss [UTC]"),
        },
        placeholder="—",
    )
