"""Users (super-admins): who can sign in, with which role; add, change role, reset MFA, unlock,
disable and enable. Every change needs a fresh authenticator code and is audited."""

from __future__ import annotations

import streamlit as st

import ui
from core import accounts
from core.models import UserRole, utcnow

ui.through_the_app()

ROLES = {UserRole.SUPER_ADMIN: "super-admin", UserRole.ANALYST: "analyst (read-only)"}

me = ui.require_user(UserRole.SUPER_ADMIN)
st.title("Users")

with ui.transaction() as session:
    people = accounts.list_users(session, ui.actor(me))

now = utcnow()
st.dataframe(
    [
        {
            "Username": a.username,
            "Name": a.display_name,
            "Role": a.role.replace("_", "-"),
            "Status": a.status(now),
            "Authenticator": "set up" if a.mfa_enrolled else "not set up",
            "Last sign-in": a.last_login_at,
            "Created": a.created_at,
        }
        for a in people
    ],
    hide_index=True,
    width="stretch",
    placeholder="—",  # never signed in: "—", not "None"
    column_config={
        "Last sign-in": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm [UTC]"),
        "Created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm [UTC]"),
    },
)

# Keyed widgets keep what was typed through an error; the passwords are typed again (ui.forms).
NEW_NAME, NEW_DISPLAY_NAME, NEW_EMAIL, NEW_ROLE = (
    "au_username",
    "au_display_name",
    "au_email",
    "au_role",
)
NEW_PASSWORD, NEW_REPEAT = "au_password", "au_repeat"
with st.expander("Add a user", icon=":material/person_add:"):
    errors = ui.FieldErrors()
    with st.form("add_user", clear_on_submit=False):
        left, right = st.columns(2)
        username = left.text_input("Username", autocomplete="off", key=NEW_NAME)
        errors.under("username", left)
        display_name = right.text_input("Display name (optional)", key=NEW_DISPLAY_NAME)
        errors.under("display_name", right)
        email = left.text_input("Email (optional)", key=NEW_EMAIL)
        errors.under("email", left)
        role = right.selectbox("Role", list(ROLES), format_func=ROLES.get, index=1, key=NEW_ROLE)
        ui.secret_box(
            "Initial password",
            NEW_PASSWORD,
            left,
            autocomplete="new-password",
            help=f"{accounts.PASSWORD_HELP} Give it to them in person; they can change it on their "
            "Account page.",
        )
        errors.under("password", left)
        ui.secret_box("Repeat it", NEW_REPEAT, right, autocomplete="new-password")
        errors.under("repeat", right)
        add = st.form_submit_button(
            "Add user", type="primary", on_click=ui.seal_typed, args=(NEW_PASSWORD, NEW_REPEAT)
        )
    if add:
        password, repeat = ui.take_typed(NEW_PASSWORD), ui.take_typed(NEW_REPEAT)
        found = accounts.account_field_errors(username, password, display_name, email)
        if password != repeat:
            found["repeat"] = "The two passwords differ. Type the same password twice."
        if found:  # said before any code is asked for
            errors.show(found)
        else:
            name = username.strip().lower()
            ui.run_sensitive(
                f"Adding {name}",
                accounts.create_user,
                username,
                ui.seal(password),
                role,
                display_name,
                email,
                done=f"Added {name} ({role.value.replace('_', '-')}).",
                errors=errors,
                forget=(NEW_NAME, NEW_DISPLAY_NAME, NEW_EMAIL, NEW_ROLE),
            )

st.subheader("Change a user")
others = [a for a in people if a.id != me.id]
if not others:
    st.caption("You are the only user so far: add one above.")
    st.stop()
by_id = {a.id: a for a in others}
picked_id = st.selectbox(
    "User",
    list(by_id),
    format_func=lambda i: f"{by_id[i].username} ({ROLES[UserRole(by_id[i].role)]})",
    key="picked_user",
)
picked = by_id[picked_id]
throttled = (
    f" (someone must wait until {picked.throttled_until:%H:%M} UTC)"
    if picked.throttled_until is not None and picked.is_throttled(now)
    else ""
)
st.caption(
    f"Status: **{picked.status(now)}**{throttled} · authenticator "
    f"{'set up' if picked.mfa_enrolled else 'not set up'} · "
    f"{picked.failed_logins} failed sign-in(s) or code(s) in the last 24 hours"
)
name = picked.username
role_col, mfa_col, lock_col, access_col = st.columns(4)
with role_col:
    current = UserRole(picked.role)
    new_role = st.selectbox(
        "Role", list(ROLES), format_func=ROLES.get, index=list(ROLES).index(current), key="new_role"
    )
    if st.button("Change role", disabled=new_role is current):
        ui.run_sensitive(
            f"Making {name} {ROLES[new_role]}",
            accounts.change_role,
            picked.id,
            new_role,
            done=f"{name} is now {ROLES[new_role]}.",
        )
with mfa_col:
    st.caption("Authenticator app")
    if st.button(
        "Reset authenticator",
        disabled=not picked.mfa_enrolled,
        help="They sign in with their password and set up an authenticator app again.",
    ):
        ui.run_sensitive(
            f"Resetting the authenticator of {name}",
            accounts.reset_mfa,
            picked.id,
            done=f"{name} must set up an authenticator app again at their next sign-in.",
        )
with lock_col:
    st.caption("Failed sign-ins")
    if st.button(
        "Unlock",
        disabled=not picked.is_throttled(now) and picked.failed_logins == 0,
        help="Forgets their failed sign-ins and codes, so nobody waits to try this account.",
    ):
        ui.run_sensitive(
            f"Unlocking {name}", accounts.unlock, picked.id, done=f"{name} can sign in again."
        )
with access_col:
    st.caption("Access")
    if picked.is_active:
        if st.button("Disable", help="Ends their sessions at once; they can no longer sign in."):
            ui.run_sensitive(
                f"Disabling {name}",
                accounts.set_active,
                picked.id,
                False,
                done=f"{name} is disabled.",
            )
    elif st.button("Enable"):
        ui.run_sensitive(
            f"Enabling {name}", accounts.set_active, picked.id, True, done=f"{name} is enabled."
        )
