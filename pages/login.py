"""Sign in: username and password, then a code from the authenticator app when one is set up."""

from __future__ import annotations

import streamlit as st

import ui
from core import accounts

ui.through_the_app()

st.title("AI Provider Console")
ui.show_flash()

pending = ui.pending_code_user()
if pending is None:
    st.subheader("Sign in")
    with st.form("sign_in", clear_on_submit=True):
        username = st.text_input("Username", autocomplete="username")
        password = st.text_input("Password", type="password", autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        with ui.transaction() as session:
            outcome = accounts.check_password(session, username, password, ui.origin())
        if outcome.needs_code:
            ui.begin_code_entry(outcome)
            st.rerun()
        if outcome.ok:
            ui.sign_in(outcome)
            st.rerun()
        st.error(outcome.error)
else:
    st.subheader("Two-step verification")
    st.write("Enter the 6-digit code your authenticator app shows for AI Provider Console.")
    with st.form("sign_in_code", clear_on_submit=True):
        code = st.text_input("Code", max_chars=6, autocomplete="one-time-code")
        submitted = st.form_submit_button("Verify", type="primary")
    if st.button("Use another account"):
        ui.cancel_code_entry()
        st.rerun()
    if submitted:
        with ui.transaction() as session:
            outcome = accounts.check_sign_in_code(session, pending, code, ui.origin(), ui.cipher())
        if outcome.ok:
            ui.sign_in(outcome)
            st.rerun()
        st.error(outcome.error)
