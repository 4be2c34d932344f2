"""Your account: set up the authenticator app (two-step verification) and change the password."""

from __future__ import annotations

import streamlit as st

import ui
from core import accounts

ui.through_the_app()


def _enrol(user: ui.CurrentUser) -> None:
    """Show a new key as a QR code and as text; save it once a code from it is confirmed."""
    box = ui.cipher()
    if ui.ENROLMENT not in st.session_state:
        st.session_state[ui.ENROLMENT] = box.encrypt(accounts.new_totp_secret())
    secret = box.decrypt(st.session_state[ui.ENROLMENT])
    uri = accounts.provisioning_uri(secret, user.username)
    left, right = st.columns([1, 2])
    with left:
        st.image(accounts.qr_code_png(uri), caption="Scan with your authenticator app", width=220)
    with right:
        st.markdown(
            "1. Open an authenticator app (Google Authenticator, Microsoft Authenticator, "
            "1Password, Aegis…) and add an account by scanning the QR code.\n"
            "2. Can't scan? Add it by hand with this key (time-based, 6 digits, 30 seconds):"
        )
        st.code(" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)), language=None)
        st.markdown("3. Enter the 6-digit code the app now shows for **AI Provider Console**.")
        with st.form("enrol", clear_on_submit=True):
            code = st.text_input("Code", max_chars=6, autocomplete="one-time-code")
            confirmed = st.form_submit_button("Turn on two-step verification", type="primary")
        if not confirmed:
            return
        with ui.transaction() as session:
            outcome = accounts.confirm_enrolment(session, ui.actor(user), box, secret, code)
        if not outcome.ok:
            st.error(outcome.error)
            return
        st.session_state.pop(ui.ENROLMENT)
        st.session_state[ui.MFA_VERIFIED_AT] = outcome.verified_at
        ui.flash("success", "Two-step verification is on.")
        st.rerun()


user = ui.require_user(during_enrolment=True)
st.title("Account")
st.caption(f"Signed in as **{user.username}**, {user.role_label}.")

st.subheader("Authenticator app")
if user.has_mfa:
    st.success(
        "Two-step verification is on: you enter a code from your authenticator app when you "
        "sign in and before sensitive changes.",
        icon=":material/verified_user:",
    )
    st.caption("Lost your phone? Ask another super-admin to reset it on the Users page.")
else:
    if user.needs_enrolment:
        st.warning(
            "Super-admins must set up an authenticator app before they can use the console.",
            icon=":material/lock:",
        )
    else:
        st.info(
            "Optional for analysts: with an authenticator app, signing in also asks for a "
            "6-digit code, so a stolen password alone is not enough."
        )
    # A key is made (and shown) only for someone enrolling now, never left in a page's HTML.
    enrolling = user.needs_enrolment or ui.ENROLMENT in st.session_state
    if enrolling or st.button("Set up an authenticator app", icon=":material/qr_code_2:"):
        _enrol(user)

if user.needs_enrolment:
    st.stop()  # nothing else until the authenticator app is set up

st.subheader("Password")
with st.form("change_password", clear_on_submit=True):
    current = st.text_input("Current password", type="password", autocomplete="current-password")
    new = st.text_input(
        "New password",
        type="password",
        autocomplete="new-password",
        help=accounts.PASSWORD_HELP,
    )
    repeat = st.text_input("Repeat the new password", type="password", autocomplete="new-password")
    changed = st.form_submit_button("Change password")
if changed:
    if new != repeat:
        st.error("The two new passwords differ. Type the same password twice.")
    else:
        with ui.transaction() as session:
            outcome = accounts.change_password(session, ui.actor(user), current, new)
        if outcome.ok:
            ui.renew_session(outcome)
            ui.flash("success", "Password changed. Other browsers signed in as you are signed out.")
            st.rerun()
        st.error(outcome.error)
