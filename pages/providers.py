"""Providers (super-admins): every config at a glance, who serves each task now, and the quick
actions Test, Activate/Deactivate and Delete. Changes need a fresh authenticator code."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import streamlit as st
from sqlalchemy.orm import Session

import ui
from core import routing
from core.access import Actor
from core.admin import (
    AdminError,
    ProviderAdmin,
    ProviderInput,
    ProviderView,
    ValidationFailed,
    amount_text,
    check_fields,
)
from core.models import TaskType, UserRole, utcnow
from core.pricing import format_usd, to_micro_usd
from core.providers import adapter_class
from core.quota.forecast import Forecast
from core.quota.ledger import QuotaLedger, Standing

ui.through_the_app()

PROVIDERS = {  # label and badge colour per provider type
    "gemini": ("Gemini", "blue"),
    "openai": ("OpenAI", "green"),
    "claude": ("Claude", "orange"),
}
TASK_LABELS = {
    "extraction": "Job extraction",
    "cv_draft": "CV draft",
    "cover_letter": "Cover letter",
    "validation": "Image validation",
}


FORM = "providers_form"  # None, "new" or the id of the config being edited
FORM_VERSION = "providers_form_version"  # the version the edit started from
KEY_FIELD = "pf_api_key"  # the password box; emptied as soon as the form is submitted
SEALED_KEY = "pf_api_key_sealed"  # what was pasted, Fernet-sealed, until saved or cancelled
FIELD_LABELS = {
    "provider_type": "Provider",
    "api_key": "API key",
    "model_name": "Model",
    "display_name": "Display name",
    "description": "Description",
    "base_url": "Base URL",
    "tasks": "Tasks",
    "priority": "Priority",
    "daily_token_limit": "Daily token limit",
    "monthly_token_limit": "Monthly token limit",
    "daily_budget_usd": "Daily budget (USD)",
    "monthly_budget_usd": "Monthly budget (USD)",
}


def admin() -> ProviderAdmin:
    return ProviderAdmin(ui.session_factory(), ui.cipher())


# Sensitive actions run through ui.run_sensitive, which calls them as f(session, actor, ...).
def set_active(_session: Session, actor: Actor, config_id: int, active: bool) -> None:
    admin().set_active(actor, config_id, active)


def delete(_session: Session, actor: Actor, config_id: int) -> None:
    admin().delete(actor, config_id)


def save(
    _session: Session,
    actor: Actor,
    config_id: int | None,
    version: int | None,
    fields: dict[str, object],
    key: str | None,
    tested_before: datetime | None = None,
) -> str:
    """Create or update; the provider checks a new key or model before anything is saved.
    Says what happened: whether a test ran (`tested_before`: the config's last test before)."""
    data = ProviderInput(**fields, api_key=key)  # type: ignore[arg-type]
    try:
        if config_id is None:
            view = admin().create(actor, data)
        else:
            view = admin().update(actor, config_id, data, expected_version=version or 0)
    except ValidationFailed as exc:  # named by the form's labels, not the column names
        raise AdminError(
            "; ".join(f"{FIELD_LABELS.get(f, f)}: {text}" for f, text in exc.errors.items())
        ) from None
    close_form()
    if config_id is None or view.last_tested_at != tested_before:
        return f"Saved {view.display_name}: {PROVIDERS[view.provider_type][0]} accepted the key."
    return f"Saved {view.display_name}."


def close_form() -> None:
    for name in (FORM, KEY_FIELD, SEALED_KEY):
        st.session_state.pop(name, None)


def seal_pasted_key() -> None:
    """On submit, before the page runs: move a pasted key out of the widget's state into a
    sealed copy, so no plaintext key stays in session state after a failed save or while the
    step-up dialog waits."""
    pasted = (st.session_state.get(KEY_FIELD) or "").strip()
    if pasted:
        st.session_state[SEALED_KEY] = (ui.seal(pasted), pasted[-4:])
    st.session_state[KEY_FIELD] = ""


def provider_form(editing: ProviderView | None) -> None:
    """Add or edit a config. An empty key on edit keeps the stored one."""
    st.subheader(f"Edit {editing.display_name}" if editing else "Add a provider")
    kinds = list(PROVIDERS)
    kind = st.selectbox(
        "Provider",
        kinds,
        format_func=lambda k: PROVIDERS[k][0],
        index=kinds.index(editing.provider_type) if editing else 0,
        key="pf_type",
    )
    errors = ui.FieldErrors()  # each field's error right under it
    errors.under("provider_type")
    known = list(adapter_class(kind).known_models)
    if editing and editing.model_name not in known:
        known.insert(0, editing.model_name)
    with st.form("provider_form", border=True):
        fields = _form_fields(editing, known, errors)
        submitted = st.form_submit_button(
            "Save changes" if editing else "Create provider",
            type="primary",
            on_click=seal_pasted_key,
        )
    if st.button("Cancel", key="pf_cancel"):
        close_form()
        st.rerun()
    if submitted:
        _submit(editing, {"provider_type": kind, **fields}, errors)


def _form_fields(
    editing: ProviderView | None, known: list[str], errors: ui.FieldErrors
) -> dict[str, object]:
    """The form's widgets (inside st.form); what they hold, by ProviderInput field."""
    _key_field(editing)
    errors.under("api_key")
    left, right = st.columns(2)
    model = left.selectbox(
        "Model",
        known,
        accept_new_options=True,
        index=known.index(editing.model_name) if editing else 0,
        help="Pick a known model or type any model name the provider offers.",
    )
    errors.under("model_name", left)
    name = right.text_input("Display name", value=editing.display_name if editing else "")
    errors.under("display_name", right)
    description = st.text_input("Description", value=editing.description if editing else "")
    errors.under("description")
    st.markdown("**Tasks it serves**")
    task_columns = st.columns(len(TASK_LABELS))
    tasks = [
        task
        for column, (task, label) in zip(task_columns, TASK_LABELS.items(), strict=True)
        if column.checkbox(
            label, value=bool(editing and task in editing.tasks), key=f"pf_task_{task}"
        )
    ]
    errors.under("tasks")
    fields: dict[str, object] = {
        "model_name": model or "",
        "display_name": name,
        "description": description,
        "tasks": tasks,
    }
    fields |= _limit_fields(editing, errors)
    with st.expander("Advanced"):
        fields["base_url"] = st.text_input(
            "Base URL",
            value=(editing.base_url or "") if editing else "",
            help="Only for proxies, gateways or compatible servers. OpenAI-style URLs end "
            "in /v1; Anthropic and Gemini ones are the bare host.",
        )
        errors.under("base_url")
    return fields


def _key_field(editing: ProviderView | None) -> None:
    sealed: tuple[ui.Sealed, str] | None = st.session_state.get(SEALED_KEY)
    st.text_input(
        "API key",
        type="password",
        key=KEY_FIELD,
        autocomplete="off",
        help=f"Leave empty to keep the current key ({editing.masked_key}); changing the "
        "provider or the base URL needs the key again."
        if editing
        else "Pasted keys are checked with the provider, then stored encrypted.",
    )
    if sealed is not None:
        st.caption(
            f"The key ending …{ui.plain(sealed[1])} you pasted is kept (encrypted) for "
            "this form; paste another to replace it."
        )


def _limit_fields(editing: ProviderView | None, errors: ui.FieldErrors) -> dict[str, object]:
    """Priority, token limits, dollar budgets, active and default."""
    one, two, three = st.columns(3)
    # No min_value: the browser would only draw a red border round a negative number; the
    # field rules say in words what is wrong, like every other field.
    priority = one.number_input(
        "Priority",
        step=1,
        value=editing.priority if editing else 100,
        help="Lower numbers are tried first for a task.",
    )
    errors.under("priority", one)
    daily = two.text_input(
        "Daily token limit",
        help="Empty means unlimited.",
        value="" if not editing or editing.daily_token_limit is None
        else str(editing.daily_token_limit),
    )  # fmt: skip
    errors.under("daily_token_limit", two)
    monthly = three.text_input(
        "Monthly token limit",
        help="Empty means unlimited.",
        value="" if not editing or editing.monthly_token_limit is None
        else str(editing.monthly_token_limit),
    )  # fmt: skip
    errors.under("monthly_token_limit", three)
    _, daily_usd, monthly_usd = st.columns(3)
    budget_help = (
        "Dollars, e.g. 25 or 2.50; empty means no budget. Calls hold their worst-case cost "
        "before they run, so the period's cost never exceeds it. Needs a model with a known price."
    )
    daily_budget = daily_usd.text_input(
        "Daily budget (USD)",
        help=budget_help,
        value=amount_text(editing.daily_budget_usd) or "" if editing else "",
    )
    errors.under("daily_budget_usd", daily_usd)
    monthly_budget = monthly_usd.text_input(
        "Monthly budget (USD)",
        help=budget_help,
        value=amount_text(editing.monthly_budget_usd) or "" if editing else "",
    )
    errors.under("monthly_budget_usd", monthly_usd)
    active, default = st.columns(2)
    is_active = active.toggle("Active", value=editing.is_active if editing else True)
    is_default = default.toggle(
        "Default for every task",
        value=editing.is_default if editing else False,
        help="Serves any task no active provider is ticked for; only one can be default.",
    )
    return {
        "priority": priority,
        "daily_token_limit": daily,
        "monthly_token_limit": monthly,
        "daily_budget_usd": daily_budget,
        "monthly_budget_usd": monthly_budget,
        "is_active": is_active,
        "is_default": is_default,
    }


def _submit(
    editing: ProviderView | None, fields: dict[str, object], errors: ui.FieldErrors
) -> None:
    """Check the fields here (clear messages beside the fields, no code asked for bad input),
    then save."""
    sealed = st.session_state.get(SEALED_KEY)
    key = ui.unseal(sealed[0]) if sealed else None
    try:
        check_fields(ProviderInput(**fields, api_key=key), creating=editing is None)  # type: ignore[arg-type]
    except ValidationFailed as exc:
        errors.show({f: f"{FIELD_LABELS.get(f, f)}: {text}." for f, text in exc.errors.items()})
        return
    name = fields["display_name"]
    with st.spinner(f"Saving {name}…"):
        ui.run_sensitive(
            f"Saving {name}",
            save,
            editing.id if editing else None,
            st.session_state.get(FORM_VERSION) if editing else None,
            fields,
            sealed[0] if sealed else None,
            editing.last_tested_at if editing else None,
            done=f"Saved {name}.",
        )


CONFIRM = "providers_confirm"  # (action, config id) awaiting confirmation


def _cancel_confirm() -> None:
    st.session_state.pop(CONFIRM, None)


def _confirm(view: ProviderView, orphaned: list[str], action: str) -> None:
    """Delete or deactivate `view` once confirmed, saying first which tasks would be left with
    no provider (the same warning for both)."""
    what = f"**{view.display_name}** ({PROVIDERS[view.provider_type][0]} {view.model_name})"
    st.write(
        f"Delete {what}? Its usage history stays."
        if action == "delete"
        else f"Deactivate {what}? Calls stop going to it until it is activated again."
    )
    if orphaned:
        names = ", ".join(TASK_LABELS[task] for task in orphaned)
        st.warning(f"No other active provider serves {names}: calls for it will fail.")
    confirm, cancel = st.columns(2)
    if cancel.button("Cancel", key=f"{action}-cancel"):
        _cancel_confirm()
        st.rerun()
    label = action.capitalize()
    icon = ":material/delete:" if action == "delete" else ":material/pause_circle:"
    if confirm.button(label, type="primary", icon=icon, key=f"{action}-confirm"):
        _cancel_confirm()
        if action == "delete":
            name = view.display_name
            ui.run_sensitive(f"Deleting {name}", delete, view.id, done=f"Deleted {name}.")
        else:
            ui.run_sensitive(
                f"Deactivate {view.display_name}",
                set_active,
                view.id,
                False,
                done=f"{view.display_name} is now inactive.",
            )


@st.dialog("Delete provider", on_dismiss=_cancel_confirm)
def confirm_delete(view: ProviderView, orphaned: list[str]) -> None:
    _confirm(view, orphaned, "delete")


@st.dialog("Deactivate provider", on_dismiss=_cancel_confirm)
def confirm_deactivate(view: ProviderView, orphaned: list[str]) -> None:
    _confirm(view, orphaned, "deactivate")


def limit_line(label: str, used: int, reserved: int, limit: int | None) -> None:
    """Used tokens against the limit. Reserved ones (held by calls in progress and by routers'
    leases) count against it too, so the bar includes them and the text says how many."""
    held = f"; {reserved:,} reserved by running calls" if reserved else ""
    if limit is None:
        st.caption(f"{label}: {used:,} tokens, no limit{held}")
        return
    share = min((used + reserved) / limit, 1.0) if limit else 1.0
    st.progress(share, text=f"{label}: {used:,} of {limit:,} tokens ({share:.0%}){held}")


def budget_line(label: str, spent: int, held: int, budget: Decimal | None) -> None:
    """Dollars spent against a budget (micro-dollars); drawn only where a budget is set. Held
    ones are the worst cases of calls in progress, so the bar includes them like tokens."""
    if budget is None:
        return
    limit = to_micro_usd(budget) or 0
    holding = f"; {format_usd(held)} held by running calls" if held else ""
    share = min((spent + held) / limit, 1.0) if limit else 1.0
    st.progress(
        share,
        text=f"{label}: {format_usd(spent)} of {format_usd(limit)} budget ({share:.0%}){holding}",
    )


def tested(view: ProviderView, now: datetime) -> str:
    if view.last_tested_at is None:
        return "Never tested"
    minutes = int((now - view.last_tested_at).total_seconds() // 60)
    when = (
        "just now"
        if minutes < 1
        else f"{minutes} min ago"
        if minutes < 120
        else (f"{view.last_tested_at:%Y-%m-%d %H:%M} UTC")
    )
    return f"{'Test passed' if view.last_test_success else 'Test FAILED'} {when}"


def card(view: ProviderView, standing: Standing, outlook: list[Forecast], now: datetime) -> None:
    name, colour = PROVIDERS[view.provider_type]
    with st.container(border=True):
        head, actions = st.columns([1, 1])
        with head:
            st.markdown(f"#### {view.display_name}")
            badges = [f":{colour}-badge[{name}]", f":gray-badge[{view.model_name}]"]
            badges.append(":green-badge[Active]" if view.is_active else ":red-badge[Inactive]")
            if view.is_default:
                badges.append(":violet-badge[Default]")
            st.markdown(" ".join(badges))
            tasks = ", ".join(TASK_LABELS[t] for t in view.tasks) or "no task (default only)"
            st.caption(f"Serves: {tasks} · priority {view.priority} · key {view.masked_key}")
            if view.description:
                st.caption(view.description)
        with actions:
            edit_col, test_col, toggle_col, delete_col = st.columns(4)
            check = None
            if edit_col.button("Edit", key=f"edit-{view.id}", icon=":material/edit:"):
                st.session_state[FORM] = view.id
                st.session_state[FORM_VERSION] = view.version
                st.rerun()  # the form opens in this card, where the user is
            if test_col.button("Test", key=f"test-{view.id}", icon=":material/network_check:"):
                with st.spinner(f"Testing {view.display_name} with {name}…"):
                    check = admin().test(ui.actor(ui.current_user()), view.id)  # type: ignore[arg-type]
                # The provider's words: shown as plain text, never as Markdown.
                (st.success if check.ok else st.error)(
                    ui.plain(f"{check.message} ({check.latency_ms} ms)")
                )
            if not view.is_active:
                if toggle_col.button("Activate", key=f"toggle-{view.id}"):
                    ui.run_sensitive(
                        f"Activate {view.display_name}",
                        set_active,
                        view.id,
                        True,
                        done=f"{view.display_name} is now active.",
                    )
            elif toggle_col.button("Deactivate", key=f"toggle-{view.id}"):
                st.session_state[CONFIRM] = ("deactivate", view.id)
            if delete_col.button("Delete", key=f"delete-{view.id}", icon=":material/delete:"):
                st.session_state[CONFIRM] = ("delete", view.id)
            if check is not None:  # `view` was read before this test ran
                st.caption(f"{'Test passed' if check.ok else 'Test FAILED'} just now")
            else:
                st.caption(tested(view, now))
                if view.last_test_success is False and view.last_test_message:
                    st.caption(ui.plain(view.last_test_message))
        limit_line("Today", standing.day_used, standing.day_reserved, view.daily_token_limit)
        limit_line(
            "This month", standing.month_used, standing.month_reserved, view.monthly_token_limit
        )
        budget_line(
            "Today",
            standing.day_used_micro_usd,
            standing.day_reserved_micro_usd,
            view.daily_budget_usd,
        )
        budget_line(
            "This month",
            standing.month_used_micro_usd,
            standing.month_reserved_micro_usd,
            view.monthly_budget_usd,
        )
        if outlook:  # "monthly budget reached about Dec 23", at the last 7 days' rate
            st.caption(" · ".join(f.sentence for f in outlook))
        if st.session_state.get(FORM) == view.id:  # edited in place, not out of sight above
            provider_form(view)


me = ui.require_user(UserRole.SUPER_ADMIN)
st.title("Providers")
st.caption(
    "Which provider and model serves each task, their keys (shown as …last4), limits "
    "and health. Backend services follow a change here within seconds."
)

views = admin().list(ui.actor(me))
now = utcnow()

st.subheader("Routing now")
columns = st.columns(len(TaskType))
for column, task in zip(columns, TaskType, strict=True):
    plan = routing.explain(task, ui.engine(), ui.cipher())
    with column, st.container(border=True):
        st.markdown(f"**{TASK_LABELS[task.value]}**")
        serving = plan.serving
        if serving is None:
            st.error("Nobody: calls fail", icon=":material/error:")
        else:
            st.markdown(f"{serving.display_name}")
            if plan.legacy:
                st.caption("from the legacy environment variables")
        fallbacks = [c.display_name for c in plan.candidates if c.eligible][1:]
        skipped = [f"{c.display_name} ({c.reason})" for c in plan.candidates if not c.eligible]
        if fallbacks:
            st.caption("then " + ", then ".join(fallbacks))
        if skipped:
            st.caption("skipped: " + "; ".join(skipped))

editing_id = st.session_state.get(FORM)
if editing_id == "new":
    provider_form(None)
elif editing_id is not None and all(v.id != editing_id for v in views):
    close_form()  # the config being edited was deleted meanwhile
elif editing_id is None and st.button("Add provider", type="primary", icon=":material/add:"):
    st.session_state[FORM] = "new"
    st.rerun()

st.subheader("Configured providers")
if not views:
    st.info(
        "No provider is configured yet. Click **Add provider** and paste a key, or store the "
        "keys your services already use with `python -m core seed-from-env`.",
        icon=":material/add_circle:",
    )
ledger = QuotaLedger(ui.engine())
outlook = admin().outlook(ui.actor(me), now)
for view in views:
    card(view, ledger.standing(view.id, now), outlook.get(view.id, []), now)

# A dialog opens again on every run until it is answered (a rerun would otherwise drop it).
action, pending_id = st.session_state.get(CONFIRM) or (None, None)
pending = next((v for v in views if v.id == pending_id), None)
if pending is not None:
    dialog = confirm_delete if action == "delete" else confirm_deactivate
    dialog(pending, admin().tasks_only_served_by(ui.actor(me), pending.id))
