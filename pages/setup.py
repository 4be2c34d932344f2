"""First run: no account exists yet. The setup token printed by `python -m core migrate` creates
the first super-admin, who then sets up an authenticator app."""

from __future__ import annotations

import streamlit as st

import ui
from core import accounts

ui.through_the_app()

st.title("AI Provider Console")
st.subheader("Set up the console")
if not ui.needs_setup():
    st.info("The console is already set up. Reload the page to sign in.")
    st.stop()
st.write(
    "No account exists yet. Create the first super-admin here. You need the **setup token** that "
    "`python -m core migrate` (run by `make run`) printed in the terminal that started the "
    "console. Lost it? Run `python -m core migrate` again for a new one."
)
# Keyed widgets keep what was typed through an error; the token waits sealed (pasted once), the
# passwords are typed again (ui.forms).
TOKEN, USERNAME, DISPLAY_NAME = "setup_token", "setup_username", "setup_display_name"
PASSWORD, REPEAT = "setup_password", "setup_repeat"
errors = ui.FieldErrors()
with st.form("setup", clear_on_submit=False):
    ui.secret_box("Setup token", TOKEN, autocomplete="off")
    if ui.typed(TOKEN) is not None:
        st.caption(
            "The token you pasted is kept (encrypted) for this form; paste another to replace it."
        )
    errors.under("token")
    username = st.text_input(
        "Username for the first super-admin", autocomplete="username", key=USERNAME
    )
    errors.under("username")
    display_name = st.text_input("Display name (optional)", key=DISPLAY_NAME)
    errors.under("display_name")
    ui.secret_box("Password", PASSWORD, autocomplete="new-password", help=accounts.PASSWORD_HELP)
    errors.under("password")
    ui.secret_box("Repeat the password", REPEAT, autocomplete="new-password")
    errors.under("repeat")
    submitted = st.form_submit_button(
        "Create super-admin",
        type="primary",
        on_click=ui.seal_typed,
        args=(TOKEN, PASSWORD, REPEAT),
    )
if submitted:
    password, repeat = ui.take_typed(PASSWORD), ui.take_typed(REPEAT)
    # Every field at once, before the token is tried (a wrong token counts towards its lock).
    found = accounts.account_field_errors(username, password, display_name)
    if password != repeat:
        found["repeat"] = "The two passwords differ. Type the same password twice."
    if found:
        errors.show(found)
        st.stop()
    sealed = ui.typed(TOKEN)
    with ui.transaction() as session:
        outcome = accounts.complete_setup(
            session,
            ui.unseal(sealed) if sealed else "",
            username,
            password,
            ui.origin(),
            display_name=display_name,
        )
    if not outcome.ok:
        errors.show({outcome.field or "": outcome.error or ""})
        st.stop()
    ui.forget(TOKEN, USERNAME, DISPLAY_NAME)
    ui.sign_in(outcome)
    ui.flash("success", "Super-admin created. Now set up your authenticator app.")
    st.rerun()
