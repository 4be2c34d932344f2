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
with st.form("setup", clear_on_submit=True):
    token = st.text_input("Setup token", type="password", autocomplete="off")
    username = st.text_input("Username for the first super-admin", autocomplete="username")
    display_name = st.text_input("Display name (optional)")
    password = st.text_input(
        "Password",
        type="password",
        autocomplete="new-password",
        help=accounts.PASSWORD_HELP,
    )
    repeat = st.text_input("Repeat the password", type="password", autocomplete="new-password")
    submitted = st.form_submit_button("Create super-admin", type="primary")
if submitted:
    if password != repeat:
        st.error("The two passwords differ. Type the same password twice.")
        st.stop()
    with ui.transaction() as session:
        outcome = accounts.complete_setup(
            session, token, username, password, ui.origin(), display_name=display_name
        )
    if not outcome.ok:
        st.error(outcome.error)
        st.stop()
    ui.sign_in(outcome)
    ui.flash("success", "Super-admin created. Now set up your authenticator app.")
    st.rerun()
